"""The app's shared UI code, one module per job; pages use it as ``dissect_app.<name>``.

Every page starts with ``frame = page_frame("Title")``. The frame sets the page
config, draws the sidebar (model picker, upload of CSVs) and returns
a ``Frame`` with all loaded runs and the selected ones. Pages then add their own
controls (``pick_layers``, ``persistent``) and draw with ``show_table`` /
``show_chart``.

* ``navigation``: the pages (scripts in ``views/``), their deep links, ``st.navigation``;
* ``frame``: page frame, "no results yet" hints;
* ``sources``: where runs come from (result folders, uploaded CSVs and bundles);
* ``demo_banner``: the built-in demo, shown while nothing else is loaded;
* ``pickers``: persistent widgets, model and layer pickers, Unit explorer deep links;
* ``download_buttons``: tables, charts and results bundles to download;
* ``unit_gallery``: a unit's top images with heatmaps and masks;
* ``unit_notes``: the Unit explorer's words on a unit's margin and its top images' labels;
* ``running``: progress bars and running dissections;
* ``hosted_mode``: the read-only hosted mode and its limits;
* ``quality_panels``: label-quality figures, the stable-units toggle, the output-layer check;
* ``text``: markdown escaping and file names;
* ``charts``: the Altair charts and their PNG/SVG export;
* ``host_folder``: a hosted demo's folder (``dissect host``);
* ``warm_up``: warming the server at start;
* ``local_server``: start the app as a local server process and wait until it answers.

``server/`` holds what a Streamlit server runs (``dissect app``), ``views/`` the pages.

Modules of this package import each other directly, never through this facade; the pages use it.

Security: labels, layer and concept names come from users' files. They are only
shown as text (dataframes, chart data, widget options, ``st.text``) or, in
markdown-rendering elements, through ``md()``; ``unsafe_allow_html`` is never used.
"""
from dissect_app.download_buttons import BUNDLE_KEY, spreadsheet_safe, show_chart, show_table
from dissect_app.frame import APP_NAME, Frame, how_to_get_results, page_frame, require_models
from dissect_app.hosted_mode import HOSTED_ENV, hosted
from dissect_app.navigation import (
    ENTRY_SCRIPT, HOME_PAGE, MODEL_DIFFERENCES_PAGE, PAGES, RUN_PAGE, SHARED_CONCEPTS_PAGE, SWEEP_PAGE,
    UNIT_EXPLORER_PAGE, UNIT_EXPLORER_URL, AppPage,
)
from dissect_app.pickers import (
    LAYERS_KEY, LAYERS_DROPPED_KEY, MODELS_KEY, UnitLink, check_unit_link, default_selection,
    parse_unit_link, persistent, pick_layers, require_layers, unit_link_params, unit_link_url,
)
from dissect_app.running import (
    CACHE_ENV, DEFAULT_CACHE_DIR, TYPED_SOURCE, StreamlitProgress, cache_dir, example_formulas,
    redescribe_blocker, redescribe_config, run_dissection, run_label_names,
)
from dissect_app.sources import (
    BUNDLE_UPLOAD_KEY, DEFAULT_RESULTS_DIR, IMPORTED_BUNDLES_KEY, PENDING_SELECT_KEY, RESULTS_ENV, UPLOAD_KEY,
    UPLOADED_RUNS_KEY, cli_results_dirs, load_folder_runs, results_dir, select_after_rerun,
)
from dissect_app.quality_panels import (
    STABLE_KEY, absent_notes, count_moves, descriptions_for, output_checks, quality_table, stable_toggle,
)
from dissect_app.sweep_view import open_differences, sweep_points
from dissect_app.text import breakable, md, message, safe_filename
from dissect_app.unit_gallery import UnitGallery, image_names, unit_gallery

__all__ = [
    "APP_NAME", "AppPage", "ENTRY_SCRIPT", "MODEL_DIFFERENCES_PAGE", "SHARED_CONCEPTS_PAGE", "SWEEP_PAGE", "BUNDLE_KEY", "BUNDLE_UPLOAD_KEY", "CACHE_ENV", "DEFAULT_CACHE_DIR", "DEFAULT_RESULTS_DIR",
    "Frame", "HOME_PAGE", "HOSTED_ENV", "RUN_PAGE", "hosted", "message", "redescribe_blocker", "IMPORTED_BUNDLES_KEY", "LAYERS_KEY", "LAYERS_DROPPED_KEY", "MODELS_KEY", "PAGES",
    "PENDING_SELECT_KEY", "RESULTS_ENV", "StreamlitProgress", "UNIT_EXPLORER_PAGE", "UNIT_EXPLORER_URL",
    "UPLOADED_RUNS_KEY", "UPLOAD_KEY", "UnitGallery", "UnitLink", "check_unit_link", "cache_dir", "cli_results_dirs", "default_selection",
    "how_to_get_results", "load_folder_runs", "md", "page_frame", "parse_unit_link", "persistent", "pick_layers",
    "require_layers", "require_models", "results_dir", "run_dissection", "safe_filename", "select_after_rerun",
    "show_chart", "show_table", "spreadsheet_safe", "unit_gallery", "unit_link_params", "unit_link_url",
    "STABLE_KEY", "absent_notes", "count_moves", "descriptions_for", "output_checks", "quality_table",
    "stable_toggle", "image_names", "open_differences", "sweep_points", "breakable",
    "TYPED_SOURCE", "example_formulas", "redescribe_config", "run_label_names",
]
