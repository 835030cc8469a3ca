"""Command line: ``dissect describe`` (or ``python -m dissect_core describe``) takes the
reference tool's flags.

The reference's documented commands work after swapping the program name
(``python describe_neurons.py …`` → ``dissect describe …``), with the same flag names
and defaults. Extra flags are added for what the reference hard-coded (data folder, own
checkpoints, ImageNet location, downloads). Choices, defaults and help come from the
registries (``dissect_core.choices.catalog``), so a new probe set or model shows up here by itself.

Each subcommand is a pair of functions (add its arguments, run it) in :data:`SUBCOMMANDS`;
adding one is one more row there.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from dissect_core import __version__
from dissect_core.choices import catalog
from dissect_core.choices.catalog import CLIP_ALIASES, DECODERS, NAMED_MODELS, POOL_MODES, PROBE_SETS, SIMILARITY_FUNCTIONS
from dissect_core.choices.catalog import CONCEPT_SOURCES
from dissect_core.choices.concept_sets import CONCEPT_SETS
from dissect_core.choices.config import DescribeConfig
from dissect_core.common.errors import DissectError, InvalidInputError, in_words, name_settings
from dissect_core.choices.layouts import LAYOUTS, parse_layer_layouts

PROG = "dissect"
# How the CLI says each DescribeConfig field: as its flag (the reference's flag names are
# the field names). Library errors name fields; the CLI shows them with these.
FLAGS: dict[str, str] = {
    field.name: f"--{field.name}" for field in dataclasses.fields(DescribeConfig) if field.name != "similarity_params"
}
FLAGS["similarity_params"] = "--similarity_param"
# The reference tool's default device; the library's is None (CUDA when there is one).
REFERENCE_DEVICE = "cuda"


def _choices(registry) -> str:
    return ", ".join(registry.names())


def _source_default(source: str, setting: str) -> str:
    """A concept source's default for ``setting`` (``choices.catalog.CONCEPT_SOURCES``)."""
    return str(CONCEPT_SOURCES.get(source).defaults[setting])


def _entries_help(registry) -> str:
    """'name: description (defaults)' for each entry: argparse help for a registered choice."""
    parts = []
    for entry in registry:
        defaults = catalog.format_defaults(entry)
        parts.append(f"{entry.name}: {entry.description}" + (f" ({defaults})" if defaults else ""))
    return "; ".join(parts).replace("%", "%%")


# ----------------------------------------------------------------------------- describe


def _add_describe_arguments(parser: argparse.ArgumentParser) -> None:
    default = {field.name: field.default for field in dataclasses.fields(DescribeConfig)
               if field.default is not dataclasses.MISSING}
    reference = parser.add_argument_group("flags of the reference tool (same names and defaults)")
    reference.add_argument("--clip_model", default=default["clip_model"],
                           help=f"CLIP model: a reference name ({_choices(CLIP_ALIASES)}), an open_clip "
                                "ARCH or ARCH:PRETRAINED pair, or ARCH:/path/to/checkpoint")
    reference.add_argument("--target_model", default=default["target_model"],
                           help=f"{_choices(NAMED_MODELS)}, or any torchvision classification model "
                                "(resnet18, resnet50, vit_b_16, ...); several, comma-separated (e.g. "
                                "resnet18,resnet18_places), are described over one pass of the probe images, "
                                "one run folder each")
    reference.add_argument("--target_layers", default=",".join(default["target_layers"]),
                           help="comma-separated module paths, e.g. layer2,layer3,layer4 or layer4.1.conv2")
    reference.add_argument("--d_probe", default=default["d_probe"],
                           help=f"probe images: one of {_choices(PROBE_SETS)}, or a folder of images")
    reference.add_argument("--concept_set", default=None,
                           help="text file with one concept per line, or a built-in set: "
                                f"{_choices(CONCEPT_SETS)} (default: {_source_default('clip', 'concept_set')}). "
                                "With --concept_source labels: default the labels themselves; a file gives "
                                "labels and formulas over them, one per line, e.g. 'Sandal OR Sneaker' or "
                                "'Shirt AND NOT T-shirt or top' (operators AND, OR, NOT in capitals, labels "
                                "exactly as named, parentheses allowed); the cached activations are reused")
    reference.add_argument("--batch_size", type=int, default=default["batch_size"])
    reference.add_argument("--device", default=REFERENCE_DEVICE, help="cuda, cpu or auto")
    reference.add_argument("--activation_dir", default=default["activation_dir"], help="cache folder")
    reference.add_argument("--result_dir", default=default["result_dir"], help="where run folders are written")
    reference.add_argument("--pool_mode", default=default["pool_mode"], choices=POOL_MODES.names(),
                           help=_entries_help(POOL_MODES))
    reference.add_argument("--similarity_fn", default=None, choices=SIMILARITY_FUNCTIONS.names(),
                           help=_entries_help(SIMILARITY_FUNCTIONS)
                           + f" (default: {_source_default('clip', 'similarity_fn')}; with --concept_source "
                             f"labels: {_source_default('labels', 'similarity_fn')})")

    extra = parser.add_argument_group("additional flags")
    extra.add_argument("--similarity_param", action="append", default=[], metavar="KEY=VALUE",
                       help="change a parameter of --similarity_fn from its default (repeatable), "
                            "e.g. --similarity_param top_k=50")
    extra.add_argument("--target_checkpoint", default=None,
                       help="your own weights file for --target_model's architecture; with several models, "
                            "one per model, comma-separated (leave an entry empty for a model's own weights)")
    extra.add_argument("--data_dir", default=default["data_dir"],
                       help="where Broden, CIFAR-100 and named models' weights are kept (default: data)")
    extra.add_argument("--imagenet_val_dir", default=None,
                       help="ImageNet validation folder (class subfolders) for imagenet_val / imagenet_broden")
    extra.add_argument("--download", action="store_true",
                       help="download a missing probe dataset (Broden is about 1 GB)")
    extra.add_argument("--num_workers", type=int, default=None, help="image-loading worker processes")
    extra.add_argument("--top_images", type=int, default=default["top_images"],
                       help=f"top images kept per unit (default {default['top_images']})")
    extra.add_argument("--concept_source", default=default["concept_source"], choices=CONCEPT_SOURCES.names(),
                       help="; ".join(f"{entry.name}: {entry.description}" for entry in CONCEPT_SOURCES)
                       + f" (default: {default['concept_source']})")
    extra.add_argument("--probe_labels", default=None,
                       help="with --concept_source labels: a CSV (image,label) of the probe images' labels; "
                            "without it, each image's class sub-folder is its label")
    extra.add_argument("--top_maps", type=int, default=default["top_maps"],
                       help=f"activation maps stored per unit for the Unit explorer and bundles "
                            f"(default {default['top_maps']}; 0: none)")
    extra.add_argument("--layer_layout", default="",
                       help="LAYER=LAYOUT,... for layers whose output layout cannot be read from the model; "
                            "layouts: " + "; ".join(f"{e.name} {e.value.shape}" for e in LAYOUTS))
    extra.add_argument("--quality_resamples", type=int, default=default["quality_resamples"],
                       help="bootstrap resamples of the probe images for each label's stability "
                            f"(default {default['quality_resamples']})")
    extra.add_argument("--decoder", default=default["decoder"], choices=DECODERS.names(),
                       help=_entries_help(DECODERS) + f" (default: {default['decoder']})")
    extra.add_argument("--quiet", action="store_true", help="no progress bars")


def _similarity_params(pairs: Sequence[str]) -> dict:
    """``["top_k=50", "a=5"]`` → ``{"top_k": 50, "a": 5.0}`` (checked later by the library)."""
    params: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--similarity_param wants KEY=VALUE, e.g. top_k=50, not {pair!r}.")
        try:
            value = int(text) if text.strip().lstrip("-").isdigit() else float(text)
        except ValueError:
            raise InvalidInputError(f"--similarity_param {pair}: {text!r} is not a number.") from None
        params[key.strip()] = value
    return params


# Flags whose text is not the field's value itself; every other describe flag is its
# field's value as argparse read it. target_model and target_checkpoint are per model.
_CONVERTERS: dict[str, Callable] = {
    "target_layers": lambda text: tuple(text.split(",")),
    "similarity_params": _similarity_params,
    "layer_layout": parse_layer_layouts,
}
_PER_MODEL = ("target_model", "target_checkpoint")


def configs_from_args(args: argparse.Namespace) -> list[DescribeConfig]:
    """The library configurations the ``describe`` flags stand for: one per target model.

    Each DescribeConfig field with a flag (:data:`FLAGS`) takes that flag's value, through
    :data:`_CONVERTERS` where it needs one; a field without a flag keeps its default.
    """
    models = [name.strip() for name in args.target_model.split(",")]
    if not all(models):
        raise InvalidInputError(f"--target_model has an empty name: {args.target_model!r}. "
                                "Separate model names with single commas, e.g. resnet18,resnet18_places.")
    if len(set(models)) != len(models):
        raise InvalidInputError(f"--target_model lists a model twice: {args.target_model}. List each model once.")
    checkpoints: list[Optional[str]] = [None] * len(models)
    if args.target_checkpoint:
        checkpoints = [path.strip() or None for path in args.target_checkpoint.split(",")]
        if len(checkpoints) != len(models):
            raise InvalidInputError(
                f"--target_checkpoint names {len(checkpoints)} file(s) for {len(models)} model(s): give one "
                "per model, comma-separated, with an empty entry for a model that keeps its own weights.")
    settings = {}
    for field in dataclasses.fields(DescribeConfig):
        dest = FLAGS[field.name][2:]
        if field.name not in _PER_MODEL and hasattr(args, dest):
            value = getattr(args, dest)
            settings[field.name] = _CONVERTERS[field.name](value) if field.name in _CONVERTERS else value
    shared = DescribeConfig(**settings)
    return [dataclasses.replace(shared, target_model=model, target_checkpoint=checkpoint)
            for model, checkpoint in zip(models, checkpoints)]


@contextlib.contextmanager
def _warnings_to(progress):
    """Print the library's warnings as they happen, between the progress lines (they are
    repeated in the run's summary; with --quiet, only there)."""
    if progress is None:
        yield
        return
    from dissect_core.common.progress import log

    class ToProgress(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            progress.write(f"warning: {record.getMessage()}")

    handler = ToProgress(logging.WARNING)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def _run_describe(args: argparse.Namespace) -> int:
    from dissect_core.engine.prerequisites import require_prerequisites

    configs = configs_from_args(args)
    require_prerequisites(configs)  # before torch is imported: what is missing is said in a second

    from dissect_core.engine.pipeline import describe_together
    from dissect_core.common.progress import TqdmProgress

    progress = None if args.quiet else TqdmProgress(sys.stderr, leave=False)
    try:
        with _warnings_to(progress):
            results = describe_together(configs, progress)
    finally:
        if progress is not None:
            progress.close()
    for result in results:
        if len(results) > 1:
            print(f"{result.run.target_model}:")
        for line in result.summary():
            warning, text = line.kind == "warning", name_settings(line.text, FLAGS)
            print(f"warning: {text}" if warning else text, file=sys.stderr if warning else sys.stdout)
    return 0


# ----------------------------------------------------------------------------- sweep


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC.toml",
                        help="the sweep: a [setup] table and one [[model]] table per model, with describe's "
                             "option names as keys (docs/sweeps.md)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run on a Ray cluster: auto (the running cluster), ray://HOST:PORT, or nothing "
                             "for a local Ray on this machine (needs pip install 'clip-dissect-explorer[ray]')")
    parser.add_argument("--ray_workers", type=int, default=None, metavar="N",
                        help="with --ray: actors recording the probe images (default: one per GPU of the "
                             "cluster; without GPUs, half its CPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_sweep(args: argparse.Namespace) -> int:
    from dissect_core.common.progress import TqdmProgress
    from dissect_core.engine.sweep import run_sweep

    progress = None if args.quiet else TqdmProgress(leave=False, file=sys.stderr)
    engine = None
    try:
        if args.ray is not None:
            from dissect_core.engine.ray_sweep import RayEngine

            engine = RayEngine(None if args.ray == "local" else args.ray, workers=args.ray_workers)
        result = run_sweep(args.spec, progress, engine)
    finally:
        if engine is not None:
            engine.close()
        if progress is not None:
            progress.close()
    for run in result.runs:
        state = ("computed" if run.entry.folder in result.computed else "kept") if run.run else run.missing
        print(f"{run.entry.folder}: {state}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{len(result.computed)} run(s) computed, {len(result.kept)} kept; {result.probe_passes} pass(es) over "
          f"the probe images ({result.images_decoded} images decoded, {result.clip_batches} CLIP image batches)")
    return 0


# ----------------------------------------------------------------------------- doctor


def _run_doctor(args: argparse.Namespace) -> int:
    """``describe``'s prerequisites as a checklist, without running anything (exit 1 if any is missing)."""
    from dissect_core.engine.prerequisites import DOWNLOAD, MISSING, OK, check_prerequisites

    items = check_prerequisites(configs_from_args(args))
    marks = {OK: "✓", DOWNLOAD: "↓", MISSING: "✗"}
    if not _can_print("".join(marks.values())):
        marks = {OK: "ok", DOWNLOAD: "download", MISSING: "MISSING"}
    for item in items:
        print(f"{marks[item.status]} {item.item}: {name_settings(item.detail, FLAGS)}")
        if item.missing and item.fix:
            print(f"    fix: {name_settings(item.fix, FLAGS)}")
    missing = sum(item.missing for item in items)
    downloads = sum(item.status == DOWNLOAD for item in items)
    print(f"{missing} missing" + (f", {downloads} to download when the run starts" if downloads else "")
          + (": describe would stop before any work." if missing else ": describe can start."))
    return 1 if missing else 0


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# ----------------------------------------------------------------------------- evaluate


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run folder written by describe")
    parser.add_argument("--class_names", default=None,
                        help="text file with the model's class names, one per line in class order "
                             "(default: the run's own check, for ImageNet names or a class-name concept list)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dissect_core.engine.label_quality import read_class_names, run_output_checks
    from dissect_core.runs.run_folders import load_run

    run = load_run(args.run_dir)
    print(run.label)
    if run.layer_quality is None:
        print(f"Label quality: none ({run.quality_absent_reason()})")
    else:
        print("Label quality (stable: stability >= 0.8; distinct labels with a 95 % bootstrap interval):")
        for row in run.layer_quality.itertuples():
            print(f"  {row.layer}: {row.units} units, {row.stable_share:.0%} stable, mean held-out correlation "
                  f"{row.mean_correlation:.3f}, {row.distinct} distinct [{row.distinct_low}-{row.distinct_high}]")
    majority = run.manifest.majority_check if run.manifest else []
    if majority:
        print("Agreement with the top images' majority label (labelled probe):")
        for check in majority:
            print(f"  {check.layer}: {check.agreeing} of {check.units} units ({check.share:.0%}) are labelled with "
                  f"the label most of their top {check.top_k} images carry")
    for note in run.notes:  # e.g. a layer's quality figures left out because they do not fit its labels
        print(f"Note: {note}")
    if args.class_names:
        path = Path(args.class_names)
        if not path.is_file():
            raise InvalidInputError(f"Class-name file {path} does not exist.")
        checks = run_output_checks(run.descriptions, run.top_concepts, read_class_names(path.read_bytes(), path.name))
        checks = [vars(check) for check in checks]
    else:
        checks = (run.manifest.output_check if run.manifest else [])
    if not checks:
        print("Output-layer check: not applicable (no layer with one unit per class name); "
              "pass --class_names FILE for a classifier layer dissected with its class names.")
    for check in checks:
        top5 = "n/a" if check["top5"] is None else f"{check['top5']:.1%}"
        print(f"Output-layer check, {check['layer']} ({check['units']} units): "
              f"top-1 {check['top1']:.1%}, top-5 {top5}")
    return 0


# ----------------------------------------------------------------------------- download


def _download_choices() -> list[str]:
    return [entry.name for entry in PROBE_SETS if entry.value.downloadable] + NAMED_MODELS.names()


def _add_download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=_download_choices(),
                        help="a probe set (both CIFAR-100 splits come in one archive) or a named model's weights")
    parser.add_argument("--data_dir", default="data")


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder for the run folders (created if needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_demo(args: argparse.Namespace) -> int:
    from dissect_core.engine.demo_build import write_demo
    from dissect_core.common.progress import TqdmProgress

    progress = None if args.quiet else TqdmProgress(sys.stderr, leave=False)
    try:
        folders = write_demo(args.out, progress)
    finally:
        if progress is not None:
            progress.close()
    for folder in folders:
        print(f"Wrote {folder}")
    print(f"Open them with: {PROG} app --results {args.out} (the app needs {APP_EXTRA})")
    return 0


def _run_download(args: argparse.Namespace) -> int:
    from dissect_core.common.progress import TqdmProgress

    progress = TqdmProgress(sys.stderr, unit="B", unit_scale=True)
    try:
        if args.what in PROBE_SETS:
            from dissect_core.engine.probe_sets import download_dataset

            folder = download_dataset(args.what, args.data_dir, progress)
            print(f"{args.what} ready in {folder}")
        else:
            from dissect_core.engine.models import load_target_model

            model = load_target_model(args.what, weights_dir=args.data_dir, progress=progress)
            print(f"{args.what} weights ready: {model.source}")
    finally:
        progress.close()
    return 0


# ----------------------------------------------------------------------------- bundle


def _add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run folders, result files or folders of result files (e.g. NetDissect layer files)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.zip", help="the bundle to write")
    parser.add_argument("--images_per_unit", type=int, default=10, help="top images kept per unit (default 10)")
    parser.add_argument("--thumbnail_px", type=int, default=160, help="thumbnail size in pixels (default 160)")
    parser.add_argument("--device", default="cpu", help="device for the activation maps (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dissect_core.engine.bundle_export import export_bundle
    from dissect_core.common.files import atomic_write_bytes
    from dissect_core.common.progress import TqdmProgress
    from dissect_core.runs.run_folders import load_runs

    runs = load_runs(args.runs)
    progress = None if args.quiet else TqdmProgress(sys.stderr, leave=False)
    try:
        data = export_bundle(runs, images_per_unit=args.images_per_unit, thumbnail_px=args.thumbnail_px,
                             device=args.device, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    atomic_write_bytes(Path(args.output), data)
    print(f"Wrote {args.output} ({len(data) / 1e6:.1f} MB): " + ", ".join(run.label for run in runs))
    return 0


# ----------------------------------------------------------------------------- app

APP_EXTRA = 'pip install "clip-dissect-explorer[app]"'
APP_DEPENDENCIES = ("streamlit", "altair", "vl_convert")  # what the app extra installs, as import names


def _add_app_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", action="append", default=[], metavar="DIR",
                        help="load every run under DIR, at any depth (repeatable)")
    parser.add_argument("--hosted", action="store_true",
                        help="read-only mode for a public demo: no Run page, no re-description, bounded uploads")
    parser.epilog = ("Any other option goes to Streamlit, e.g. --server.port 8502 --server.headless true "
                     "(see streamlit run --help).")


def _run_app(args: argparse.Namespace, streamlit_options: Sequence[str]) -> int:
    import importlib.util
    from pathlib import Path

    missing = [name for name in APP_DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        raise InvalidInputError(f"The app needs {', '.join(missing)}, not installed here: {APP_EXTRA}")
    from streamlit.web import cli as streamlit_cli

    # Found, not imported: the server imports the app in the background as it starts (dissect_app.warm_up).
    server_script = Path(importlib.util.find_spec("dissect_app").origin).parent / "server" / "streamlit_app.py"
    app_args = [arg for folder in args.results for arg in ("--results", folder)] + (["--hosted"] if args.hosted else [])
    # Streamlit takes this process over and exits with it.
    streamlit_cli.main(["run", str(server_script), *streamlit_options, "--", *app_args], prog_name=f"{PROG} app")
    return 0


# ----------------------------------------------------------------------------- host


def _add_host_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    parser.add_argument("sources", nargs="*", metavar="BUNDLE_OR_RUN",
                        help="results bundles (.zip), run folders, result files or folders of them "
                             "(none: the built-in demo)")
    parser.add_argument("--title", default=None, help="the app's title on the Space (default: CLIP-Dissect explorer)")
    parser.add_argument("--device", default="cpu", help="device for bundling run folders (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_host(args: argparse.Namespace) -> int:
    from dissect_app.host_folder import DEFAULT_TITLE, write_host_folder
    from dissect_core.common.progress import TqdmProgress

    progress = None if args.quiet else TqdmProgress(sys.stderr, leave=False)
    try:
        folder = write_host_folder(args.out_dir, args.sources, title=args.title or DEFAULT_TITLE,
                                   device=args.device, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    print(f"Wrote {folder.path} with {len(folder.runs)} run(s). To publish it, follow {folder.path / 'README.md'}.")
    return 0


# ----------------------------------------------------------------------------- list


def _add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="as a Markdown table (the README's)")


def _run_list(args: argparse.Namespace) -> int:
    print(catalog.markdown(FLAGS) if args.markdown else catalog.listing(FLAGS))
    return 0


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., int]  # (args) -> exit code; (args, unknown options) with passes_unknown
    description: Optional[str] = None
    passes_unknown: bool = False  # options it does not know go to the tool it starts (Streamlit)


SUBCOMMANDS: dict[str, Subcommand] = {
    "describe": Subcommand(
        "describe the units of the target layers (the reference's describe_neurons.py)",
        _add_describe_arguments, _run_describe,
        "Describe units with CLIP-Dissect. Flags and defaults follow the reference tool.",
    ),
    "demo": Subcommand(
        "write the built-in demo (a small CNN trained on Fashion-MNIST vs untrained) as run folders",
        _add_demo_arguments, _run_demo,
        "Dissect the built-in demo's two networks over its probe images, with the images' labels as "
        "concepts, into OUT (seconds on a CPU; no downloads). Open them with dissect app --results OUT.",
    ),
    "doctor": Subcommand(
        "check everything describe needs (device, concepts, probe images, weights, folders), running nothing",
        _add_describe_arguments, _run_doctor,
        "Take describe's flags and print its prerequisites as a checklist, each missing one with its fix, in "
        "seconds and without downloading or loading anything. Exits with 1 when something is missing.",
    ),
    "sweep": Subcommand(
        "describe many models or checkpoints from one spec, on this machine or a Ray cluster",
        _add_sweep_arguments, _run_sweep,
        "Describe every model of SPEC.toml with one setup: one run folder each in its result_dir, the probe "
        "images decoded once and CLIP run once for all of them. Run again, it computes only the runs that "
        "are missing. With --ray, on a Ray cluster, with the same results.",
    ),
    "evaluate": Subcommand(
        "how far a run's labels can be trusted, and the output-layer check",
        _add_evaluate_arguments, _run_evaluate,
        "Print a run's label-quality figures per layer and, where the run dissected the classifier with "
        "the class names as concepts, the top-1/top-5 accuracy of 'unit i is class i'.",
    ),
    "download": Subcommand("fetch a dataset or weight file ahead of time", _add_download_arguments, _run_download),
    "bundle": Subcommand(
        "export runs as one results bundle (.zip), as the app's 'Share these models' does",
        _add_bundle_arguments, _run_bundle,
        "Bundle runs with thumbnails and activation maps of each unit's top images, to import in "
        "the app anywhere or to host.",
    ),
    "app": Subcommand(
        "start the app (a Streamlit server) on the results under --results, the result folder and the demo",
        _add_app_arguments, _run_app,
        "Serve the CLIP-Dissect explorer with Streamlit. Needs the app extra: " + APP_EXTRA + ".",
        passes_unknown=True,
    ),
    "host": Subcommand(
        "write a folder to publish as a Hugging Face Space or Streamlit Community Cloud app",
        _add_host_arguments, _run_host,
        "Write OUT_DIR: the read-only browsing app (no torch), its requirements, a Dockerfile and a "
        "README with the steps for both hosts, with the given bundles and runs baked in.",
    ),
    "list": Subcommand("list every registered choice: probe sets, models, CLIP names, concept sets, "
                       "similarity functions, pool modes", _add_list_arguments, _run_list),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Label every unit of a vision model's layers with a concept (CLIP-Dissect).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in SUBCOMMANDS.items():
        command.add_arguments(
            commands.add_parser(name, help=command.help, description=command.description or command.help)
        )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = SUBCOMMANDS[args.command]
    if unknown and not command.passes_unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = command.run(args, unknown) if command.passes_unknown else command.run(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except DissectError as error:
        print(f"error: {in_words(error, FLAGS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stages already computed are kept in the cache", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``dissect list | head``): stop quietly, as other command-line tools do,
        # and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
