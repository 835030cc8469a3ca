"""Command line: ``dissect describe`` (or ``python -m dissect_core describe``) takes the
reference tool's flags.

The reference's documented commands work after swapping the program name
(``python describe_neurons.py …`` → ``dissect describe …``), with the same flag names
and defaults. Extra flags are added for what the reference hard-coded (data folder, own
checkpoints, ImageNet location, downloads). Choices, defaults and help come from the
registries (``dissect_core.catalog``), so a new probe set or model shows up here by itself.

Each subcommand is a pair of functions (add its arguments, run it) in :data:`SUBCOMMANDS`;
adding one is one more row there.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from . import __version__, catalog
from .clip import CLIP_ALIASES
from .concepts import CONCEPT_SETS
from .errors import DissectError, InvalidInputError, in_words
from .models import NAMED_MODELS
from .pipeline import DescribeConfig
from .probe_data import PROBE_SETS
from .similarity import SIMILARITY_FUNCTIONS

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
                                "(resnet18, resnet50, vit_b_16, ...)")
    reference.add_argument("--target_layers", default=",".join(default["target_layers"]),
                           help="comma-separated module paths, e.g. layer2,layer3,layer4 or layer4.1.conv2")
    reference.add_argument("--d_probe", default=default["d_probe"],
                           help=f"probe images: one of {_choices(PROBE_SETS)}, or a folder of images")
    reference.add_argument("--concept_set", default=default["concept_set"],
                           help="text file with one concept per line, or a built-in set: "
                                f"{_choices(CONCEPT_SETS)}")
    reference.add_argument("--batch_size", type=int, default=default["batch_size"])
    reference.add_argument("--device", default=REFERENCE_DEVICE, help="cuda, cpu or auto")
    reference.add_argument("--activation_dir", default=default["activation_dir"], help="cache folder")
    reference.add_argument("--result_dir", default=default["result_dir"], help="where run folders are written")
    reference.add_argument("--pool_mode", default=default["pool_mode"], choices=catalog.pool_modes().names(),
                           help=_entries_help(catalog.pool_modes()))
    reference.add_argument("--similarity_fn", default=default["similarity_fn"],
                           choices=SIMILARITY_FUNCTIONS.names(), help=_entries_help(SIMILARITY_FUNCTIONS))

    extra = parser.add_argument_group("additional flags")
    extra.add_argument("--similarity_param", action="append", default=[], metavar="KEY=VALUE",
                       help="change a parameter of --similarity_fn from its default (repeatable), "
                            "e.g. --similarity_param top_k=50")
    extra.add_argument("--target_checkpoint", default=None,
                       help="your own weights file for --target_model's architecture")
    extra.add_argument("--data_dir", default=default["data_dir"],
                       help="where Broden, CIFAR-100 and named models' weights are kept (default: data)")
    extra.add_argument("--imagenet_val_dir", default=None,
                       help="ImageNet validation folder (class subfolders) for imagenet_val / imagenet_broden")
    extra.add_argument("--download", action="store_true",
                       help="download a missing probe dataset (Broden is about 1 GB)")
    extra.add_argument("--num_workers", type=int, default=None, help="image-loading worker processes")
    extra.add_argument("--top_images", type=int, default=default["top_images"],
                       help=f"top images kept per unit (default {default['top_images']})")
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


def config_from_args(args: argparse.Namespace) -> DescribeConfig:
    """The library configuration the ``describe`` flags stand for."""
    return DescribeConfig(
        target_model=args.target_model,
        target_layers=tuple(args.target_layers.split(",")),
        clip_model=args.clip_model,
        d_probe=args.d_probe,
        concept_set=args.concept_set,
        similarity_fn=args.similarity_fn,
        similarity_params=_similarity_params(args.similarity_param),
        pool_mode=args.pool_mode,
        batch_size=args.batch_size,
        device=args.device,
        activation_dir=args.activation_dir,
        result_dir=args.result_dir,
        target_checkpoint=args.target_checkpoint,
        data_dir=args.data_dir,
        imagenet_val_dir=args.imagenet_val_dir,
        download=args.download,
        num_workers=args.num_workers,
        top_images=args.top_images,
    )


def _run_describe(args: argparse.Namespace) -> int:
    from .pipeline import describe
    from .progress import TqdmProgress

    config = config_from_args(args)
    progress = None if args.quiet else TqdmProgress(leave=False, file=sys.stderr)
    try:
        result = describe(config, progress)
    finally:
        if progress is not None:
            progress.close()
    for line in result.summary():
        print(f"warning: {line.text}" if line.warning else line.text, file=sys.stderr if line.warning else sys.stdout)
    return 0


# ----------------------------------------------------------------------------- download


def _download_choices() -> list[str]:
    return [entry.name for entry in PROBE_SETS if entry.value.downloadable] + NAMED_MODELS.names()


def _add_download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=_download_choices(),
                        help="a probe set (both CIFAR-100 splits come in one archive) or a named model's weights")
    parser.add_argument("--data_dir", default="data")


def _run_download(args: argparse.Namespace) -> int:
    from .progress import TqdmProgress

    progress = TqdmProgress(unit="B", unit_scale=True, file=sys.stderr)
    try:
        if args.what in PROBE_SETS:
            from .probe_data import download_dataset

            folder = download_dataset(args.what, args.data_dir, progress)
            print(f"{args.what} ready in {folder}")
        else:
            from .models import load_target_model

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

    from .bundle import export_bundle
    from .files import atomic_write_bytes
    from .progress import TqdmProgress
    from .results import load_runs

    runs = load_runs(args.runs)
    progress = None if args.quiet else TqdmProgress(leave=False, file=sys.stderr)
    try:
        data = export_bundle(runs, images_per_unit=args.images_per_unit, thumbnail_px=args.thumbnail_px,
                             device=args.device, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    atomic_write_bytes(Path(args.output), data)
    print(f"Wrote {args.output} ({len(data) / 1e6:.1f} MB): " + ", ".join(run.label for run in runs))
    return 0


# ----------------------------------------------------------------------------- host


def _add_host_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    parser.add_argument("sources", nargs="+", metavar="BUNDLE_OR_RUN",
                        help="results bundles (.zip), run folders, result files or folders of them")
    parser.add_argument("--title", default=None, help="the app's title on the Space (default: CLIP-Dissect explorer)")
    parser.add_argument("--device", default="cpu", help="device for bundling run folders (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_host(args: argparse.Namespace) -> int:
    from .hosting import DEFAULT_TITLE, write_host_folder
    from .progress import TqdmProgress

    progress = None if args.quiet else TqdmProgress(leave=False, file=sys.stderr)
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
    run: Callable[[argparse.Namespace], int]
    description: Optional[str] = None


SUBCOMMANDS: dict[str, Subcommand] = {
    "describe": Subcommand(
        "describe the units of the target layers (the reference's describe_neurons.py)",
        _add_describe_arguments, _run_describe,
        "Describe units with CLIP-Dissect. Flags and defaults follow the reference tool.",
    ),
    "download": Subcommand("fetch a dataset or weight file ahead of time", _add_download_arguments, _run_download),
    "bundle": Subcommand(
        "export runs as one results bundle (.zip), as the app's 'Share these models' does",
        _add_bundle_arguments, _run_bundle,
        "Bundle runs with thumbnails and activation maps of each unit's top images, to import in "
        "the app anywhere or to host.",
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
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except DissectError as error:
        print(f"error: {in_words(error, FLAGS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stages already computed are kept in the cache", file=sys.stderr)
        return 130
