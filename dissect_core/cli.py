"""Command line: ``python -m dissect_core describe`` takes the reference tool's flags.

The reference's documented commands work after swapping the program name
(``python describe_neurons.py …`` → ``python -m dissect_core describe …``), with
the same flag names and defaults. Extra flags are added for what the reference
hard-coded (data folder, own checkpoints, ImageNet location, downloads).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .errors import DissectError, InvalidInputError

SIMILARITY_CHOICES = ("soft_wpmi", "wpmi", "rank_reorder", "cos_similarity", "cos_similarity_cubed")
PROBE_NAMES = ("broden", "cifar100_train", "cifar100_val", "imagenet_val", "imagenet_broden")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dissect_core",
        description="Label every unit of a vision model's layers with a concept (CLIP-Dissect).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    describe = commands.add_parser(
        "describe",
        help="describe the units of the target layers (the reference's describe_neurons.py)",
        description="Describe units with CLIP-Dissect. Flags and defaults follow the reference tool.",
    )
    reference = describe.add_argument_group("flags of the reference tool (same names and defaults)")
    reference.add_argument("--clip_model", default="ViT-B/16",
                           help="CLIP model: a reference name (ViT-B/16, RN50, ...), an open_clip "
                                "ARCH or ARCH:PRETRAINED pair, or ARCH:/path/to/checkpoint")
    reference.add_argument("--target_model", default="resnet50",
                           help="resnet18_places or any torchvision classification model "
                                "(resnet18, resnet50, vit_b_16, ...)")
    reference.add_argument("--target_layers", default="conv1,layer1,layer2,layer3,layer4",
                           help="comma-separated module paths, e.g. layer2,layer3,layer4 or layer4.1.conv2")
    reference.add_argument("--d_probe", default="broden",
                           help=f"probe images: one of {', '.join(PROBE_NAMES)}, or a folder of images")
    reference.add_argument("--concept_set", default="data/20k.txt",
                           help="text file with one concept per line, or a built-in set: "
                                "english_20k, imagenet_classes")
    reference.add_argument("--batch_size", type=int, default=200)
    reference.add_argument("--device", default="cuda", help="cuda, cpu or auto")
    reference.add_argument("--activation_dir", default="saved_activations", help="cache folder")
    reference.add_argument("--result_dir", default="results", help="where run folders are written")
    reference.add_argument("--pool_mode", default="avg", choices=("avg", "max"))
    reference.add_argument("--similarity_fn", default="soft_wpmi", choices=SIMILARITY_CHOICES)

    extra = describe.add_argument_group("additional flags")
    extra.add_argument("--target_checkpoint", default=None,
                       help="your own weights file for --target_model's architecture")
    extra.add_argument("--data_dir", default="data",
                       help="where Broden, CIFAR-100 and the Places365 weights are kept (default: data)")
    extra.add_argument("--imagenet_val_dir", default=None,
                       help="ImageNet validation folder (class subfolders) for imagenet_val / imagenet_broden")
    extra.add_argument("--download", action="store_true",
                       help="download a missing probe dataset (Broden is about 1 GB)")
    extra.add_argument("--num_workers", type=int, default=None, help="image-loading worker processes")
    extra.add_argument("--top_images", type=int, default=100, help="top images kept per unit (default 100)")
    extra.add_argument("--quality_resamples", type=int, default=20,
                       help="bootstrap resamples of the probe images for each label's stability (default 20)")
    extra.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser(
        "evaluate", help="how far a run's labels can be trusted, and the output-layer check",
        description="Print a run's label-quality figures per layer and, where the run dissected the "
                    "classifier with the class names as concepts, the top-1/top-5 accuracy of 'unit i is class i'.")
    evaluate.add_argument("run_dir", help="a run folder written by describe")
    evaluate.add_argument("--class_names", default=None,
                          help="text file with the model's class names, one per line in class order "
                               "(default: the run's own check, for ImageNet names or a class-name concept list)")

    download = commands.add_parser("download", help="fetch a dataset or weight file ahead of time")
    download.add_argument("what", choices=("broden", "cifar100", "resnet18_places"))
    download.add_argument("--data_dir", default="data")

    for name, (help_text, description, add_arguments) in _SHARING_COMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text, description=description))
    return parser


def _describe(args: argparse.Namespace) -> int:
    from .pipeline import DescribeConfig, describe
    from .progress import TqdmProgress

    config = DescribeConfig(
        target_model=args.target_model,
        target_layers=tuple(args.target_layers.split(",")),
        clip_model=args.clip_model,
        d_probe=args.d_probe,
        concept_set=args.concept_set,
        similarity_fn=args.similarity_fn,
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
        quality_resamples=args.quality_resamples,
    )
    progress = None if args.quiet else TqdmProgress(leave=False, file=sys.stderr)
    try:
        result = describe(config, progress)
    finally:
        if progress is not None:
            progress.close()
    counts = result.run.descriptions.groupby("layer", sort=False)["description"].agg(["size", "nunique"])
    print(f"Wrote {result.run_dir / 'descriptions.csv'}")
    for layer, row in counts.iterrows():
        print(f"  {layer}: {row['size']} units, {row['nunique']} distinct concepts")
    if result.reused:
        print("Reused from cache: " + ", ".join(result.reused))
    if args.quiet:  # otherwise the progress display printed them as they came
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if result.skipped_images:
        print(f"Skipped {len(result.skipped_images)} unreadable image(s), e.g. {result.skipped_images[0]}")
    print("Timings: " + ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in result.timings.items()))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .quality import read_class_names, run_output_checks
    from .results import load_run

    run = load_run(args.run_dir)
    print(run.label)
    if run.layer_quality is None:
        print(f"Label quality: none ({run.quality_absent_reason()})")
    else:
        print("Label quality (stable: stability >= 0.8; distinct labels with a 95 % bootstrap interval):")
        for row in run.layer_quality.itertuples():
            print(f"  {row.layer}: {row.units} units, {row.stable_share:.0%} stable, mean held-out correlation "
                  f"{row.mean_correlation:.3f}, {row.distinct} distinct [{row.distinct_low}-{row.distinct_high}]")
    if args.class_names:
        path = Path(args.class_names)
        if not path.is_file():
            raise InvalidInputError(f"Class-name file {path} does not exist.")
        checks = run_output_checks(run.descriptions, run.top_concepts, read_class_names(path.read_bytes(), path.name))
        checks = [vars(check) for check in checks]
    else:
        checks = run.manifest.get("output_check") or []
    if not checks:
        print("Output-layer check: not applicable (no layer with one unit per class name); "
              "pass --class_names FILE for a classifier layer dissected with its class names.")
    for check in checks:
        top5 = "n/a" if check["top5"] is None else f"{check['top5']:.1%}"
        print(f"Output-layer check, {check['layer']} ({check['units']} units): "
              f"top-1 {check['top1']:.1%}, top-5 {top5}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .progress import TqdmProgress

    progress = TqdmProgress(unit="B", unit_scale=True, file=sys.stderr)
    try:
        if args.what in ("broden", "cifar100"):
            from .probe_data import download_dataset

            folder = download_dataset(args.what, args.data_dir, progress)
            print(f"{args.what} ready in {folder}")
        else:
            from .models import load_target_model

            model = load_target_model("resnet18_places", weights_dir=args.data_dir, progress=progress)
            print(f"Places365 ResNet18 weights ready: {model.source}")
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


_SHARING_COMMANDS = {
    "bundle": ("export runs as one results bundle (.zip), as the app's 'Share these models' does",
               "Bundle runs with thumbnails and activation maps of each unit's top images, to import in "
               "the app anywhere or to host.", _add_bundle_arguments),
    "host": ("write a folder to publish as a Hugging Face Space or Streamlit Community Cloud app",
             "Write OUT_DIR: the read-only browsing app (no torch), its requirements, a Dockerfile and a "
             "README with the steps for both hosts, with the given bundles and runs baked in.",
             _add_host_arguments),
}


COMMANDS = {"describe": _describe, "download": _download, "bundle": _run_bundle, "host": _run_host,
            "evaluate": _evaluate}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DissectError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stages already computed are kept in the cache", file=sys.stderr)
        return 130
