"""Benchmark: the standard comparison end to end, stage by stage, on a synthetic probe set.

    .venv/bin/python benchmarks/bench_standard.py --images 2000 --device cpu
    .venv/bin/python benchmarks/bench_standard.py --device cuda          # 63,305 images (Broden's size)

The standard comparison is two ResNet18s (ImageNet and Places365 in real use; here
random weights, 1,000 and 365 classes, different seeds), layers layer2–layer4, CLIP
ViT-B-16 (random weights, loaded from a file through ``load_clip``), the 20,000 words
of ``english_20k`` and soft-WPMI.

Three ways, each with its own fresh feature cache (``--modes`` picks some):

* ``together``: both models over one probe pass (``describe_together``, what
  ``dissect describe --target_model resnet18,resnet18_places`` does);
* ``separate``: one ``describe`` per model sharing one cache, as before the one-pass
  mode: the second run reuses CLIP's image and text features but decodes every image again;
* ``single``: the first model alone, to tell what the second model adds to one pass.

The probe set is N seeded synthetic 224×224 JPEGs (smooth random colour fields, so
they compress and decode like photos), written in parallel into ``--probe_dir`` (a
temporary folder by default; an existing folder with the right number of images is
reused). Reported: the seconds of each stage (``DescribeResult.timings``; a pass's
shared stages are counted once), the process's peak resident memory so far, and on
CUDA the peak GPU memory allocated by PyTorch. Timings on a shared machine are noisy.
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


STAGES = ("load", "probe pass", "text encoding", "similarity", "label quality", "write")
MODES = ("together", "separate", "single")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=BRODEN_IMAGES)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--probe_dir", help="where the synthetic JPEGs go (default: a temporary folder)")
    parser.add_argument("--concepts", type=int, default=20000, help="the first N words of english_20k")
    parser.add_argument("--batch_size", type=int, default=200)
    parser.add_argument("--num_workers", type=int, help="decode workers (default: the library's choice)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--decoder", default="pil", help="pil, or torchvision (JPEGs decoded on --device)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",")]
    if not set(modes) <= set(MODES):
        raise SystemExit(f"--modes: choose among {', '.join(MODES)}")

    import open_clip
    import torch
    import torchvision

    from dissect_core.choices.concept_sets import builtin_concept_set, parse_concepts
    from dissect_core.engine.models import TargetModel
    from dissect_core.engine.pipeline import DescribeConfig, describe, describe_together
    from dissect_core.engine.probe_loading import default_num_workers

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
              f"{workers} loader workers, decoder {args.decoder}, torch {torch.__version__}")
        print(f"{'run':<27}" + "".join(f"{s:>15}" for s in STAGES) + f"{'total':>10}{'peak RSS':>11}"
              + (f"{'peak GPU':>11}" if cuda else ""))

        def config(target: TargetModel, cache: str) -> DescribeConfig:
            return DescribeConfig(
                target_model=target, target_layers=("layer2", "layer3", "layer4"),
                clip_model=f"ViT-B-16:{clip_file}", d_probe=str(probe_dir), concept_set=concepts,
                device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                decoder=args.decoder, activation_dir=str(tmp / cache), result_dir=str(tmp / "results"))

        def timed(label: str, run) -> tuple[float, dict]:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            results = run()
            total = time.perf_counter() - start
            # Shared stages (load, probe pass, text encoding) are in every result: count them once.
            stages = {stage: results[0].timings.get(stage, 0.0) for stage in STAGES}
            for result in results[1:]:
                for stage in ("similarity", "label quality", "write"):
                    stages[stage] += result.timings.get(stage, 0.0)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB → GiB
            line = f"{label:<27}" + "".join(f"{stages[s]:>13.1f} s" for s in STAGES)
            line += f"{total:>8.1f} s{peak:>7.2f} GiB"
            if cuda:
                line += f"{torch.cuda.max_memory_allocated() / 1024 ** 3:>7.2f} GiB"
            reused = sorted({stage for result in results for stage in result.reused})
            print(line + (f"  (from the cache: {', '.join(reused)})" if reused else ""), flush=True)
            return total, stages

        totals, probe_passes = {}, {}
        if "together" in modes:
            totals["together"], stages = timed("together: both, one pass", lambda: describe_together(
                [config(target, "cache-together") for target in models]))
            probe_passes["together"] = stages["probe pass"]
        if "separate" in modes:
            totals["separate"] = 0.0
            for target in models:
                seconds, stages = timed(f"separate: {target.name}", lambda: [describe(config(target, "cache-separate"))])
                totals["separate"] += seconds
        if "single" in modes:
            totals["single"], stages = timed(f"single: {models[0].name} alone", lambda: [describe(
                config(models[0], "cache-single"))])
            probe_passes["single"] = stages["probe pass"]
        if {"together", "separate"} <= set(totals):
            saved = totals["separate"] - totals["together"]
            print(f"one pass instead of two runs: {totals['together']:.1f} s instead of {totals['separate']:.1f} s "
                  f"({saved:.1f} s, {100 * saved / totals['separate']:.0f} % saved)")
        if {"together", "single"} <= set(probe_passes):
            extra = probe_passes["together"] - probe_passes["single"]
            print(f"the second model adds {extra:.1f} s to the probe pass "
                  f"({probe_passes['single']:.1f} s for {models[0].name} + CLIP alone, "
                  f"{probe_passes['together']:.1f} s for both + CLIP)")


if __name__ == "__main__":
    main()
