"""Downloads: tables as CSV, charts as PNG/SVG, and results bundles of the picked models."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import altair as alt
import pandas as pd
import streamlit as st

from dissect_app.running import StreamlitProgress
from dissect_app.text import safe_filename
from dissect_app.charts import chart_to_png, chart_to_svg
from dissect_core.runs.run import Run

BUNDLE_KEY = "bundle_zip"                  # the last bundle built for download


# A spreadsheet runs a cell that starts like this as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot run as spreadsheet formulas.

    A text cell starting with ``= + - @``, a tab or a carriage return gets a leading
    ``'``, which spreadsheets read as "this is text". Numbers are left alone.
    """
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = [f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value
                            for value in safe[column]]
    return safe


def _display_name(column: str) -> str:
    return column.replace("n_units", "units").replace("_", " ").capitalize()


def show_table(
    frame: pd.DataFrame,
    *,
    key: str,
    file_name: str,
    column_config: Optional[Mapping[str, Any]] = None,
    height: Any = "auto",
) -> None:
    """A dataframe with readable headers plus a lazily built CSV download (``key``: the button's key)."""
    config: dict[str, Any] = {column: _display_name(column) for column in frame.columns}
    if "model" in frame.columns:
        # Pinned: in a narrow window (900 px, eight models) the other columns scroll under it.
        config["model"] = st.column_config.Column(_display_name("model"), pinned=True)
    config.update(column_config or {})
    st.dataframe(frame, hide_index=True, column_config=config, height=height)
    st.download_button(
        "CSV", data=lambda: spreadsheet_safe(frame).to_csv(index=False), file_name=f"{safe_filename(file_name)}.csv",
        mime="text/csv", key=key, icon=":material/download:", on_click="ignore",
    )


def show_chart(chart: alt.TopLevelMixin, *, key: str, file_name: str) -> None:
    """An Altair chart plus PNG and SVG downloads, rendered only when clicked."""
    st.altair_chart(chart)
    stem = safe_filename(file_name)
    row = st.container(horizontal=True)
    row.download_button("PNG", data=lambda: chart_to_png(chart), file_name=f"{stem}.png", mime="image/png",
                        key=f"{key}_png", icon=":material/download:", on_click="ignore")
    row.download_button("SVG", data=lambda: chart_to_svg(chart), file_name=f"{stem}.svg", mime="image/svg+xml",
                        key=f"{key}_svg", icon=":material/download:", on_click="ignore")


def share_section(selected: list[Run]) -> None:
    """Build a results bundle of the selected models, to import elsewhere or host as a demo."""
    with st.sidebar.expander("Share these models", icon=":material/share:"):
        st.caption("A zip with the descriptions, run manifests, top-image thumbnails and activation "
                   "maps of the models picked above. Import it under *Add results*, on any machine.")
        if st.button("Build bundle", key="bundle_build", disabled=not selected, width="stretch"):
            from dissect_core.engine.bundle_export import export_bundle

            with st.spinner("Drawing thumbnails and activation maps…"):
                st.session_state[BUNDLE_KEY] = export_bundle(selected, progress=StreamlitProgress(st.container()))
        if st.session_state.get(BUNDLE_KEY):
            st.download_button("Download bundle", st.session_state[BUNDLE_KEY], file_name="dissect_bundle.zip",
                               mime="application/zip", key="bundle_download", icon=":material/download:",
                               on_click="ignore", width="stretch")
