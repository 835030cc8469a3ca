"""Activation extraction on the CPU: images per second and peak memory.

Measures ``dissect_core.engine.activations.record_probe_pass`` over a synthetic folder of
JPEGs (224×224 after the models' own preprocessing) with

* resnet18 (random weights), layers layer2, layer3, layer4 recorded in one pass;
* CLIP ViT-B-16 (random weights loaded through the local-checkpoint path);
* both in the same pass (each image decoded once), as a dissection runs it;

and the resnet18 pass with and without keeping each unit's top-10 maps (the
running top-k that lets unit views and bundles skip the model).

Each configuration runs in a fresh subprocess so its peak resident memory
(ru_maxrss) is its own. Peak memory is also measured for growing probe sets, to
show it stays flat: only pooled activations (images × units) grow with the set
(checked with resnet18, whose pass is fast enough to repeat at several sizes, with
and without maps).

    python benchmarks/bench_activations.py            # 2,000 images
    python benchmarks/bench_activations.py --images 200 --sizes 100,200   # quick
    python benchmarks/bench_activations.py --configs resnet18              # skip CLIP
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_folder(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth random images compress like photos (noise would make huge JPEGs).
        small = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((320, 256), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)


def measure(kind: str, folder: str, clip_file: str, batch_size: int, workers: int, top_maps: int) -> dict:
    """One configuration, in this process (called in a child)."""
    import torch
    import torchvision

    from dissect_core.engine.activations import TargetLayers, record_probe_pass
    from dissect_core.engine.clip import load_clip
    from dissect_core.engine.models import TargetModel
    from dissect_core.engine.probe_sets import image_folder
    from dissect_core.engine.recording import resolve_layouts

    probe = image_folder(folder)
    target = clip = None
    if kind in ("resnet18", "both"):
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        target = TargetModel("resnet18", torchvision.models.resnet18(weights=None).eval(),
                             weights.transforms(), "random", "random weights")
    if kind in ("clip", "both"):
        clip = load_clip(f"ViT-B-16:{clip_file}", "cpu")
    targets = []
    if target is not None:
        sample = target.preprocess(probe.load_image(0)).unsqueeze(0)
        targets = [TargetLayers(target, resolve_layouts(target.module, ["layer2", "layer3", "layer4"], sample, "avg"))]
    start = time.perf_counter()
    result = record_probe_pass(probe, targets=targets, clip=clip, top_maps=top_maps,
                               batch_size=batch_size, num_workers=workers)
    seconds = time.perf_counter() - start
    return {"kind": kind, "images": len(probe), "seconds": seconds, "images_per_s": len(probe) / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "skipped": len(result.skipped)}


def child(args: list[str]) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                            check=True, cwd=REPO)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--sizes", default="500,1000,2000", help="probe sizes for the flat-memory check")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--configs", default="resnet18,clip,both",
                        help="which passes to time: resnet18, clip, both (CLIP on 2 cores takes ~10 min)")
    parser.add_argument("--child", nargs=6, metavar=("KIND", "FOLDER", "CLIP", "BATCH", "WORKERS", "MAPS"))
    args = parser.parse_args()
    if args.child:
        kind, folder, clip_file, batch, workers, maps = args.child
        print(json.dumps(measure(kind, folder, clip_file, int(batch), int(workers), int(maps))))
        return

    import open_clip
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_file = tmp / "vit_b_16_random.pt"
        torch.save(open_clip.create_model("ViT-B-16").state_dict(), clip_file)
        sizes = sorted({int(s) for s in args.sizes.split(",")} | {args.images})
        for size in sizes:
            make_folder(tmp / f"probe_{size}", size)
        print(f"CPU: {torch.get_num_threads()} threads, batch {args.batch_size}, {args.workers} loader worker(s)")
        print(f"{'configuration':<34}{'images':>8}{'seconds':>10}{'images/s':>10}{'peak RSS':>11}")
        common = [str(clip_file), str(args.batch_size), str(args.workers)]
        for kind in args.configs.split(","):
            for maps in (10, 0) if kind == "resnet18" else (10,):
                r = child([kind, str(tmp / f"probe_{args.images}"), *common, str(maps)])
                name = {"resnet18": "resnet18 (layer2-4)", "clip": "CLIP ViT-B-16 image tower",
                        "both": "resnet18 + CLIP, one pass"}[kind]
                name += "" if kind == "clip" else (", top-10 maps" if maps else ", no maps")
                print(f"{name:<34}{r['images']:>8}{r['seconds']:>10.1f}{r['images_per_s']:>10.1f}"
                      f"{r['peak_rss_mb']:>9.0f} MB")
        print("\nPeak memory as the probe set grows (resnet18, layer2-4):")
        for size in sizes:
            for maps in (10, 0):
                r = child(["resnet18", str(tmp / f"probe_{size}"), *common, str(maps)])
                print(f"  {size:>6} images, {'top-10 maps' if maps else 'no maps':<11}: peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB ({r['images_per_s']:.1f} images/s)")


if __name__ == "__main__":
    main()
