"""Benchmark: the whole similarity stage at the standard scale, dissect_core's against the original's.

    .venv/bin/python benchmarks/bench_similarity_stage.py                 # 1,000 images, 2,000 concepts
    .venv/bin/python benchmarks/bench_similarity_stage.py --repeats 5 --profile

Stand-ins: a random-weight ResNet-18 (layers layer2, layer3, layer4 and fc: 128, 256,
512 and 1,000 units), the tests' tiny CLIP (random weights, 32-d features), ``--images``
synthetic 224×224 JPEGs (``bench_standard.make_probe``) and the first ``--concepts``
words of english_20k, on the CPU.

One ``describe`` fills a feature cache (probe pass, CLIP features; untimed). Then, in turn:

* **ours**: ``describe`` again on a copy of that cache without its similarity and
  label-quality entries, so both are computed and everything before them is read from
  the cache; the figure is the run's own ``timings["similarity"]``: scores, labels and
  the tables of the run folder (descriptions, top-5 concepts, top images, unit stats).
  The quality figures (``timings["label quality"]``, which the original does not
  compute) are printed beside it.
* **original**: the original's similarity stage on the same features, activations and
  concepts, in memory (the original also reads them from files, not counted here):
  per layer, normalise the CLIP features, P = I·Tᵀ, soft-WPMI with ``gather`` over an
  expanded index (``dense_reference.dense_soft_wpmi(select="gather")``), the maximum
  over concepts and one description row per unit.

Best of ``--repeats`` (other work on the machine only ever adds time). Both runs' labels
are compared with each other and with the exact float64 scores. ``--profile`` prints
cProfile's top functions for one more run of ours.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from standins import make_tiny_clip_checkpoint  # noqa: E402

from benchmarks.bench_standard import make_probe  # noqa: E402
from benchmarks.dense_reference import dense_soft_wpmi, exact_soft_wpmi  # noqa: E402
from dissect_core.choices.concept_sets import builtin_concept_set, parse_concepts  # noqa: E402
from dissect_core.choices.config import DescribeConfig  # noqa: E402
from dissect_core.engine.activations import LayerActivations  # noqa: E402
from dissect_core.engine.cache import FeatureCache  # noqa: E402
from dissect_core.engine.models import TargetModel  # noqa: E402
from dissect_core.engine.pipeline import describe  # noqa: E402
from dissect_core.engine.stage_results import ImageFeatures, TextFeatures  # noqa: E402

LAYERS = ("layer2", "layer3", "layer4", "fc")
RECOMPUTED = ("similarity", "label_quality")  # the cache folders ours recomputes on each run


def load_inputs(cache_dir: Path, n_concepts: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The CLIP features and each layer's pooled activations that the first run cached."""
    cache = FeatureCache(cache_dir)
    (image_file,), (text_file,) = (list((cache_dir / kind).glob("*.pt")) for kind in ("clip_images", "clip_texts"))
    image = cache.load(ImageFeatures, image_file.stem)
    text = cache.load(TextFeatures, text_file.stem, n_concepts=n_concepts)
    layers = {}
    for path in (cache_dir / "activations").glob("*.pt"):
        entry = cache.load(LayerActivations, path.stem)
        layers[pd.read_json(path.with_suffix(".json"), typ="series")["layer"]] = entry.pooled
    return image.features, text.features, {layer: layers[layer] for layer in LAYERS}


def original_stage(image_features, text_features, layers, words) -> pd.DataFrame:
    rows = []
    for layer, acts in layers.items():
        similarities = dense_soft_wpmi(image_features, text_features, acts, select="gather")
        values, ids = torch.max(similarities, dim=1)
        rows += [(layer, unit, words[int(i)], float(v)) for unit, (v, i) in enumerate(zip(values, ids))]
    return pd.DataFrame(rows, columns=["layer", "unit", "description", "similarity"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--concepts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", help="keep the probe images and the filled cache here, to reuse them "
                                           "(default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.work_dir or scratch)
        make_probe(tmp / "probe", args.images, args.seed)
        clip = make_tiny_clip_checkpoint(tmp / "clip.pt", seed=args.seed)
        torch.manual_seed(args.seed)
        module = torchvision.models.resnet18(weights=None).eval()
        preprocess = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
        target = TargetModel("resnet18", module, preprocess, f"random-{args.seed}", "random weights")
        concepts = builtin_concept_set("english_20k").concepts[: args.concepts]
        concepts = parse_concepts("\n".join(concepts), f"english_20k[:{len(concepts)}]")
        words = list(concepts.concepts)

        def config(cache: Path) -> DescribeConfig:
            return DescribeConfig(target_model=target, target_layers=LAYERS, clip_model=clip, d_probe=str(tmp / "probe"),
                                  concept_set=concepts, device="cpu", activation_dir=str(cache),
                                  result_dir=str(tmp / "results"))

        first = describe(config(tmp / "cache"))
        image_features, text_features, layers = load_inputs(tmp / "cache", len(words))
        units = {layer: acts.shape[1] for layer, acts in layers.items()}
        print(f"similarity stage: {args.images:,} images × {args.concepts:,} concepts, resnet18 "
              f"{', '.join(f'{layer} ({count})' for layer, count in units.items())} = {sum(units.values()):,} units, "
              f"tiny CLIP ({image_features.shape[1]}-d), CPU, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}; first run's probe pass {first.timings['probe pass']:.1f} s (untimed)")

        def ours(number: int):
            cache = tmp / f"cache-{number}"
            shutil.copytree(tmp / "cache", cache, ignore=shutil.ignore_patterns(*RECOMPUTED))
            result = describe(config(cache))
            shutil.rmtree(cache)
            return result

        timings = {"ours": [], "quality": [], "both": [], "original": []}
        for number in range(args.repeats):
            result = ours(number)
            timings["ours"].append(result.timings["similarity"])
            timings["quality"].append(result.timings["label quality"])
            timings["both"].append(result.timings["similarity"] + result.timings["label quality"])
            start = time.perf_counter()
            original = original_stage(image_features, text_features, layers, words)
            timings["original"].append(time.perf_counter() - start)

        for label, key in (("ours (dissect_core)", "ours"), ("original's formulation", "original"),
                           ("ours: label quality (not in the original)", "quality"),
                           ("ours: similarity + label quality", "both")):
            print(f"  {label:<44} best {min(timings[key]):6.3f} s  (all: "
                  f"{', '.join(f'{t:.3f}' for t in timings[key])})")
        print(f"  ours / original: {min(timings['ours']) / min(timings['original']):.2f} "
              f"(at most 1 meets the target); load average {os.getloadavg()[0]:.1f} at the end")

        ours_labels = result.run.descriptions
        for layer, acts in layers.items():
            exact = exact_soft_wpmi(image_features, text_features, acts).argmax(dim=1)
            exact_words = [words[int(i)] for i in exact]
            mine = ours_labels[ours_labels.layer == layer].description.tolist()
            theirs = original[original.layer == layer].description.tolist()
            print(f"  {layer}: ours vs original: {sum(a != b for a, b in zip(mine, theirs))} of {len(mine)} labels "
                  f"differ; vs exact: ours {sum(a != b for a, b in zip(mine, exact_words))}, "
                  f"original {sum(a != b for a, b in zip(theirs, exact_words))}")

        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            ours(args.repeats)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
