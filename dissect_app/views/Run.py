"""Run CLIP-Dissect from the app: new dissections, or new concepts for a finished run.

Results are written to the result folder and appear on every other page; every
stage is cached, so describing a dissected model with another concept list costs
only the concepts' text encoding and the similarity step.

A hosted (read-only) demo does not route to this page at all (``dissect_app.navigation``),
so its torch imports never run there.
"""
import streamlit as st

import dissect_app

frame = dissect_app.page_frame("Run CLIP-Dissect")

# Imported once the frame is drawn (a hosted server does not route this page at all). The
# first visit imports PyTorch (several seconds), so the page says what it is waiting for.
with st.spinner("Loading PyTorch and the dissection engine (the first visit takes a few seconds)…",
                show_time=True):
    from dissect_core.choices.catalog import (CLIP_ALIASES, DECODERS, NAMED_MODELS, POOL_MODES,  # noqa: E402
                                              PROBE_SETS, SIMILARITY_FUNCTIONS)
    from dissect_core.choices.concept_sets import CONCEPT_SETS, load_concept_set, parse_concepts  # noqa: E402
    from dissect_core.common.errors import DissectError  # noqa: E402
    from dissect_core.engine.pipeline import DescribeConfig  # noqa: E402

FOLDER = "a folder of images"
UPLOAD = "upload a .txt list"
CONCEPT_CHOICES = (*CONCEPT_SETS.names(), UPLOAD, "a file on this machine")
STANDARD_CONCEPT_SET = "english_20k"  # CLIP-Dissect's standard setup: the 20k most common English words
# How this page says each DescribeConfig field that library errors name.
WIDGETS = {
    "target_model": "“Target models”", "target_checkpoint": "“Own weights file”", "target_layers": "“Layers”",
    "d_probe": "“Probe images”", "data_dir": "“Data folder”", "download": "“Download a missing probe set”",
    "concept_set": "“Concept set”", "clip_model": "“CLIP model”", "similarity_fn": "“Similarity function”",
    "pool_mode": "“Spatial pooling”", "device": "“Device”", "batch_size": "“Batch size”",
    "decoder": "“Image decoding”",
}
# Labelled runs: how their lines are given, and what a typed list is called.
TYPED = "type them here"
TYPED_NAME = "formulas"
FORMULAS_WIDGET = "“Labels and formulas”"
MAX_LABELS_SHOWN = 60
# Offered besides the named models; any torchvision classification name can be typed in.
TORCHVISION_EXAMPLES = ["resnet18", "resnet50", "vit_b_16"]


def entries_help(registry) -> str:
    return " · ".join(f"{entry.name}: {entry.description}" for entry in registry)


@st.cache_data(show_spinner="Loading the concept set…", max_entries=4)
def builtin_concept_set(name: str):
    """A built-in concept set, read once per server (the 20k words take about a second)."""
    return load_concept_set(name)


def concept_picker(prefix: str):
    """Built-in set, uploaded list or file path; returns a ConceptSet, or None after showing why not."""
    choice = st.selectbox("Concept set", CONCEPT_CHOICES, key=f"{prefix}_concept_choice",
                          index=CONCEPT_CHOICES.index(STANDARD_CONCEPT_SET), help=entries_help(CONCEPT_SETS))
    try:
        if choice == UPLOAD:
            uploaded = st.file_uploader("Concept list: one concept per line", type=["txt"],
                                        key=f"{prefix}_concepts_file")
            if uploaded is None:
                return None
            concepts = parse_concepts(uploaded.getvalue(), uploaded.name)
        elif choice == "a file on this machine":
            path = st.text_input("Path of the concept list", "data/20k.txt", key=f"{prefix}_concepts_path")
            concepts = load_concept_set(path)
        else:
            concepts = builtin_concept_set(choice)
    except DissectError as exc:
        st.error(dissect_app.md(exc), icon=":material/error:")
        return None
    notes = [f"{len(concepts):,} concepts"]
    if concepts.duplicates_dropped:
        notes.append(f"{concepts.duplicates_dropped} duplicate(s) dropped")
    if concepts.blank_lines_dropped:
        notes.append(f"{concepts.blank_lines_dropped} blank line(s) dropped")
    st.caption(f"{dissect_app.md(concepts.name)}: " + ", ".join(notes))
    return concepts


def formula_picker(run):
    """Labels and formulas over a labelled run's labels, typed or from a .txt file; returns a
    ConceptSet, or None after showing why not."""
    try:
        labels = dissect_app.run_label_names(f"{run.path}@{run.manifest.created}", run)
    except DissectError as exc:
        st.error(dissect_app.message(exc), icon=":material/error:")
        return None
    examples = dissect_app.example_formulas(labels)
    shown = ", ".join(f"**{dissect_app.md(name)}**" for name in labels[:MAX_LABELS_SHOWN])
    if len(labels) > MAX_LABELS_SHOWN:
        shown += f", … and {len(labels) - MAX_LABELS_SHOWN:,} more"
    st.markdown("This run's concepts are its probe images' labels, so it is described with **labels and formulas over "
                "them** (compositional explanations, Mu & Andreas 2020), each true or false for an image by the "
                f"image's labels. Its {len(labels):,} labels: {shown}.")
    st.caption("One per line: a label as written above, or labels joined by the upper-case words AND, OR, NOT "
               "(NOT binds tightest, then AND), with parentheses; a label holding one of those words or a "
               "parenthesis goes in double quotes. For example: "
               + "; ".join(f"“{dissect_app.md(example)}”" for example in examples) + ".")
    source = st.radio("Lines", [TYPED, UPLOAD], horizontal=True, key="formulas_source",
                      label_visibility="collapsed")
    try:
        if source == TYPED:
            text = st.text_area("Labels and formulas, one per line", "\n".join(examples), key="formulas_text",
                                height=120)
            concepts = parse_concepts(text, TYPED_NAME, source=dissect_app.TYPED_SOURCE)
        else:
            uploaded = st.file_uploader("Labels and formulas, one per line", type=["txt"], key="formulas_file")
            if uploaded is None:
                return None
            concepts = parse_concepts(uploaded.getvalue(), uploaded.name)
    except DissectError as exc:
        st.error(dissect_app.md(exc), icon=":material/error:")
        return None
    if not concepts.concepts:
        st.caption("Type at least one line.")
        return None
    notes = [f"{len(concepts):,} line(s)"]
    if concepts.duplicates_dropped:
        notes.append(f"{concepts.duplicates_dropped} duplicate(s) dropped")
    st.caption(f"{dissect_app.md(concepts.name)}: " + ", ".join(notes))
    return concepts


new_tab, concepts_tab = st.tabs(["New dissection", "New concepts for a finished run"])

with new_tab:
    left, right = st.columns(2)
    with left:
        models = st.multiselect(
            "Target models", [*NAMED_MODELS.names(), *TORCHVISION_EXAMPLES],
            default=["resnet18", "resnet18_places"], accept_new_options=True, key="run_models",
            help=f"{', '.join(NAMED_MODELS.names())} or any torchvision classification model; "
                 "type a name to add it.")
        checkpoint = st.text_input("Own weights file (optional, for a single model)", key="run_checkpoint")
        layers = st.text_input("Layers (comma-separated module paths)", "layer2,layer3,layer4", key="run_layers")
        probe_choice = st.selectbox("Probe images", [*PROBE_SETS.names(), FOLDER], key="run_probe",
                                    help=entries_help(PROBE_SETS))
        probe = probe_choice
        if probe_choice == FOLDER:
            probe = st.text_input("Folder of images (searched recursively)", key="run_probe_folder")
        data_dir = st.text_input("Data folder (Broden, CIFAR-100, Places365 weights)", "data", key="run_data_dir")
        download = st.checkbox("Download a missing probe set (Broden is about 1 GB)", key="run_download")
    with right:
        concepts = concept_picker("run")
        clip_model = st.text_input("CLIP model", "ViT-B/16", key="run_clip",
                                   help=f"{', '.join(CLIP_ALIASES.names())} (as in CLIP-Dissect), an open_clip "
                                        "ARCH:PRETRAINED pair, or ARCH:/path/to/checkpoint")
        similarity_fn = st.selectbox("Similarity function", SIMILARITY_FUNCTIONS.names(), key="run_similarity",
                                     help=entries_help(SIMILARITY_FUNCTIONS))
        pool_mode = st.radio("Spatial pooling", POOL_MODES.names(), horizontal=True, key="run_pool",
                             help=entries_help(POOL_MODES))
        device = st.selectbox("Device", ["auto", "cpu", "cuda"], key="run_device",
                              help="auto: the GPU when PyTorch sees one, else the CPU")
        batch_size = st.number_input("Batch size", 1, 4096, 200, key="run_batch")
        decoder = st.selectbox("Image decoding", DECODERS.names(), key="run_decoder", help=entries_help(DECODERS))

    if st.button("Start", type="primary", key="run_start", disabled=not models or concepts is None):
        if len(models) > 1 and checkpoint:
            st.error("An own weights file belongs to one model: pick a single target model.")
        else:
            # One probe pass for all the models: each image is decoded once and CLIP sees it once.
            configs = [DescribeConfig(
                target_model=model, target_checkpoint=checkpoint or None,
                target_layers=tuple(layers.split(",")), clip_model=clip_model, d_probe=probe,
                concept_set=concepts, similarity_fn=similarity_fn, pool_mode=pool_mode,
                batch_size=int(batch_size), device=device, activation_dir=str(dissect_app.cache_dir()),
                result_dir=str(dissect_app.results_dir()), data_dir=data_dir, download=download, decoder=decoder,
            ) for model in models]
            if dissect_app.run_dissection(configs, f"Dissecting {', '.join(models)}", WIDGETS) is not None:
                st.success("Finished. The new runs are added to the model picker on every page.")

with concepts_tab:
    blockers = {run.label: dissect_app.redescribe_blocker(run) for run in frame.runs.values()}
    finished = [run for run in frame.runs.values() if blockers[run.label] is None]
    # Each run that cannot take new concepts says why, in plain sight (an expander hid the reasons).
    blocked = [f"- **{dissect_app.md(label)}**: {dissect_app.message(why)}" for label, why in blockers.items()
               if why is not None]
    if blocked:
        heading = ("No loaded run can be described with new concepts here:" if not finished
                   else "These loaded runs cannot be described with new concepts here:")
        st.info("\n".join([heading, *blocked]), icon=":material/info:")
    if finished:
        labels = [run.label for run in finished]
        label = st.selectbox("Finished run", labels, key="redescribe_run")
        run = frame.runs[label]
        # A labelled run's concepts are its probe images' labels: it takes labels and formulas over
        # them, not CLIP concept sets.
        concepts = formula_picker(run) if run.labelled else concept_picker("redescribe")
        what = "these labels and formulas" if run.labelled else "these concepts"
        if st.button(f"Describe with {what}", type="primary", key="redescribe_start",
                     disabled=concepts is None):
            config = dissect_app.redescribe_config(run, concepts)
            widgets = {**WIDGETS, "concept_set": FORMULAS_WIDGET} if run.labelled else WIDGETS
            if dissect_app.run_dissection([config], f"Describing {run.label} with {concepts.name}", widgets):
                st.success("Finished. The new run is added to the model picker on every page.")
