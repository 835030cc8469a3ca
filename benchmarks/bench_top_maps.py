"""What keeping each unit's top maps costs the probe pass, without image decoding noise.

Runs a random ResNet-18 over the same batch of 64 random 224×224 images ``--batches``
times, recording layer2-4 through ``recording.record_layers`` into the probe pass's
per-layer accumulators, once with ``top_maps=10`` and once with ``top_maps=0``, and
prints the CPU time per batch of each (process time: steadier than wall time on a
shared machine), for the whole pass and for the accumulators alone, and the bytes the
accumulators keep beyond the pooled activations, which do not grow with the images.

Usage: ``.venv/bin/python benchmarks/bench_top_maps.py [--batches 6]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    import torchvision

    from dissect_core.engine.activations import _LayerAccumulator
    from dissect_core.engine.recording import record_layers, resolve_layouts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    batches = parser.parse_args().batches
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    batch = torch.randn(64, 3, 224, 224)
    layouts = resolve_layouts(model, ["layer2", "layer3", "layer4"], batch[:1], "avg")
    print(f"{'top_maps':>8} {'CPU s per batch of 64 (median)':>31} {'accumulators alone':>19} "
          f"{'kept beyond pooled':>19}")
    for top_maps in (10, 0, 10, 0):
        accumulators = {layer: _LayerAccumulator(layout, "avg", 64 * batches, top_maps, torch.Generator())
                        for layer, layout in layouts.items()}
        times, spent = [], [0.0]

        def consume(layer, output, layout):
            start = time.process_time()
            accumulators[layer](output)
            spent[0] += time.process_time() - start

        with record_layers(model, layouts, consume) as hooked, torch.inference_mode():
            for _ in range(batches):
                start = time.process_time()
                hooked(batch)
                times.append(time.process_time() - start)
        kept = sum(a.maps.numel() * 2 for a in accumulators.values() if a.maps is not None)
        print(f"{top_maps:>8} {statistics.median(times):>31.3f} {spent[0] / batches:>19.3f} "
              f"{kept / 2**20:>16.1f} MB")


if __name__ == "__main__":
    main()
