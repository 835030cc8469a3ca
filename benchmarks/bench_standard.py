"""Benchmark: the standard comparison end to end, stage by stage, on a synthetic probe set.

    .venv/bin/python benchmarks/bench_standard.py --images 2000 --device cpu
    .venv/bin/python benchmarks/bench_standard.py --device cuda          # 63,305 images (Broden's size)

The standard comparison is two ResNet18s (ImageNet and Places365 in real use; here
random weights, 1,000 and 365 classes, different seeds), layers layer2–layer4, CLIP
ViT-B-16 (random weights, loaded from a file through ``load_clip``), the 20,000 words
of ``english_20k`` and soft-WPMI, each model dissected with
``dissect_core.pipeline.describe`` as the CLI does, sharing one feature cache: the
second model reuses the CLIP image and text features of the first.

The probe set is N seeded synthetic 224×224 JPEGs (smooth random colour fields, so
they compress and decode like photos), written in parallel into ``--probe_dir`` (a
temporary folder by default; an existing folder with the right number of images is
reused). Reported: the seconds of each stage of each run (``DescribeResult.timings``),
the process's peak resident memory after each run, and on CUDA the peak GPU memory
allocated by PyTorch in each run. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BRODEN_IMAGES = 63305
FOLDERS = ("ade20k", "dtd", "opensurfaces", "pascal")  # Broden's four sources, as class folders


def _write_images(job: tuple[str, int, int, int]) -> None:
    import numpy as np
    from PIL import Image

    root, start, stop, seed = job
    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        folder = Path(root) / FOLDERS[index % len(FOLDERS)]
        Image.fromarray(small).resize((224, 224), Image.BICUBIC).save(folder / f"{index:06d}.jpg", quality=90)


def make_probe(root: Path, count: int, seed: int) -> float:
    """Write ``count`` JPEGs under ``root`` in parallel; return the seconds it took (0 if reused)."""
    existing = sum(1 for _ in root.glob("*/*.jpg")) if root.is_dir() else 0
    if existing == count:
        return 0.0
    if existing:
        raise SystemExit(f"{root} holds {existing} images, not {count}: give another --probe_dir.")
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step = 500
    jobs = [(str(root), i, min(i + step, count), seed) for i in range(0, count, step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_images, jobs))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=BRODEN_IMAGES)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--probe_dir", help="where the synthetic JPEGs go (default: a temporary folder)")
    parser.add_argument("--concepts", type=int, default=20000, help="the first N words of english_20k")
    parser.add_argument("--batch_size", type=int, default=200)
    parser.add_argument("--num_workers", type=int, help="decode workers (default: the library's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import open_clip
    import torch
    import torchvision

    from dissect_core.concepts import builtin_concept_set, parse_concepts
    from dissect_core.models import TargetModel
    from dissect_core.pipeline import DescribeConfig, describe
    from dissect_core.probe_data import default_num_workers

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no GPU here; use --device cpu.")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probe_dir = Path(args.probe_dir) if args.probe_dir else tmp / "probe"
        made = make_probe(probe_dir, args.images, args.seed)
        torch.manual_seed(args.seed)
        clip_file = tmp / "vit_b_16_random.pt"
        torch.save(open_clip.create_model("ViT-B-16").state_dict(), clip_file)
        preprocess = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
        models = []
        for name, classes, seed in (("resnet18", 1000, 1), ("resnet18_places", 365, 2)):
            torch.manual_seed(args.seed + seed)
            module = torchvision.models.resnet18(weights=None, num_classes=classes).eval()
            models.append(TargetModel(name, module, preprocess, f"random-{args.seed + seed}", "random weights"))

        words = builtin_concept_set("english_20k").concepts[: args.concepts]
        concepts = parse_concepts("\n".join(words), f"english_20k[:{len(words)}]")
        device_name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
        workers = default_num_workers() if args.num_workers is None else args.num_workers
        print(f"standard comparison: {args.images:,} synthetic JPEGs ({'written in %.1f s' % made if made else 'reused'}), "
              f"2 × resnet18 (layer2-4), ViT-B-16, {len(words):,} words, soft_wpmi; {device_name}, batch {args.batch_size}, "
              f"{workers} decode workers, torch {torch.__version__}")
        stages = ("load", "probe pass", "text encoding", "similarity", "write")
        print(f"{'model':<17}" + "".join(f"{s:>15}" for s in stages) + f"{'total':>10}{'peak RSS':>11}"
              + (f"{'peak GPU':>11}" if cuda else ""))
        for target in models:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            result = describe(DescribeConfig(
                target_model=target, target_layers=("layer2", "layer3", "layer4"),
                clip_model=f"ViT-B-16:{clip_file}", d_probe=str(probe_dir), concept_set=concepts,
                device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                activation_dir=str(tmp / "cache"), result_dir=str(tmp / "results")))
            total = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB → GiB
            line = f"{target.name:<17}" + "".join(f"{result.timings.get(s, 0.0):>13.1f} s" for s in stages)
            line += f"{total:>8.1f} s{peak:>7.2f} GiB"
            if cuda:
                line += f"{torch.cuda.max_memory_allocated() / 1024 ** 3:>7.2f} GiB"
            print(line + (f"  (from the cache: {', '.join(result.reused)})" if result.reused else ""), flush=True)


if __name__ == "__main__":
    main()
