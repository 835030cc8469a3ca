"""Device check: probe images decoded by Pillow in loader workers vs on the device.

For someone with a GPU (none was available when the device decoder was written):

    python benchmarks/check_cuda.py --device cuda              # 2,000 synthetic JPEGs
    python benchmarks/check_cuda.py --device cuda --images 20000 --batch_size 256
    python benchmarks/check_cuda.py --device cpu --images 200  # the same code on the CPU

It writes ``--images`` seeded synthetic JPEGs (320×256, as benchmarks/bench_activations.py)
and times two full passes over them with the preprocessing of the standard comparison
(resnet18's ImageNet preset, the Places ResNet18's Compose, open_clip ViT-B-16's
evaluation transform), every batch ending on ``--device``:

* ``pil``: ``probe_loading.probe_loader`` (Pillow and the PIL transforms in the workers),
  then the batch copied to the device;
* ``torchvision``: ``probe_data.device_probe_loader`` (workers read bytes; the main
  process decodes each batch with ``decode_jpeg`` on the device and preprocesses there).

Printed: seconds and images/s of each (after one warm-up batch, CUDA synchronised), and
how far the preprocessed values differ, in 1/255 steps of a pixel (max, mean).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_activations import make_folder  # noqa: E402
from dissect_core.choices.catalog import DECODERS  # noqa: E402
from dissect_core.engine.probe_loading import default_num_workers  # noqa: E402
from dissect_core.engine.probe_sets import image_folder


def transforms() -> dict:
    import open_clip
    import torchvision

    from dissect_core.engine.models import places_preprocess

    return {
        "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms(),
        "resnet18_places": places_preprocess(),
        "clip": open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                          std=open_clip.OPENAI_DATASET_STD),
    }


def timed_pass(decoder: str, probe, steps: dict, batch_size: int, workers: int, device: torch.device):
    """(seconds after the first batch, images after it, the first batch's tensors on the CPU)."""
    loader = DECODERS.get(decoder).value(probe, steps, batch_size, workers, device)
    first, start, images = None, 0.0, 0
    for batch in loader:
        tensors = {key: value.to(device, non_blocking=True) for key, value in batch.tensors.items()}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if first is None:
            first, start = {key: value.cpu() for key, value in tensors.items()}, time.perf_counter()
        else:
            images += len(batch.indices)
    return time.perf_counter() - start, images, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_workers", type=int, default=None, help="loader workers (default: cores − 1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    steps = transforms()
    print(f"{args.images:,} JPEGs of 320×256, batch {args.batch_size}, {workers} workers, device {device}, "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        make_folder(Path(tmp), args.images)
        probe = image_folder(tmp)
        results = {decoder: timed_pass(decoder, probe, steps, args.batch_size, workers, device)
                   for decoder in ("pil", "torchvision")}
    for decoder, (seconds, images, _) in results.items():
        print(f"{decoder:>11}: {seconds:7.2f} s for {images:,} images after the first batch, "
              f"{images / seconds:8.1f} images/s")
    print(f"speed-up of torchvision on {device}: {results['pil'][0] / results['torchvision'][0]:.2f}×")
    for key, transform in steps.items():
        std = torch.tensor(transform.std if hasattr(transform, "std") else transform.transforms[-1].std)
        steps_255 = ((results["pil"][2][key] - results["torchvision"][2][key]) * std.view(1, -1, 1, 1) * 255).abs()
        print(f"{key}: preprocessed values differ by at most {steps_255.max():.2f} and on average "
              f"{steps_255.mean():.3f} steps of 1/255 (first batch)")


if __name__ == "__main__":
    main()
