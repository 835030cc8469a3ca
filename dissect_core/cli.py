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

from .errors import DissectError

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
    extra.add_argument("--quiet", action="store_true", help="no progress bars")

    download = commands.add_parser("download", help="fetch a dataset or weight file ahead of time")
    download.add_argument("what", choices=("broden", "cifar100", "resnet18_places"))
    download.add_argument("--data_dir", default="data")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "describe":
            return _describe(args)
        return _download(args)
    except DissectError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stages already computed are kept in the cache", file=sys.stderr)
        return 130
