"""Benchmark: CLIP text encoding of 20,000 words, full context against trimmed batches.

    .venv/bin/python benchmarks/bench_text_encoding.py                       # ViT-B-16, english_20k
    .venv/bin/python benchmarks/bench_text_encoding.py --baseline_words 2000 # time the old path on a sample

* **before**: what ``encode_texts`` did until the trimming, every concept at the full
  77-token context, in batches of ``--batch_size`` in the list's order.
* **after**: ``dissect_core.engine.clip.encode_texts`` (batches sorted by token count, each
  cut to its longest concept).

The model is a random-weight ViT-B-16 (open_clip's architecture, saved to a file and
loaded through ``load_clip``), so the arithmetic is the real model's. The full-context
cost does not depend on the words (every row is 77 tokens), so ``--baseline_words N``
times it on a seeded sample of N words and scales to the whole list; the features of
that sample are compared with the trimmed ones (max |Δ| relative to the feature norm).
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

import open_clip  # noqa: E402

from dissect_core.engine.clip import encode_texts, load_clip  # noqa: E402
from dissect_core.choices.concept_sets import builtin_concept_set  # noqa: E402


def full_context(clip, words: list[str], batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([clip.model.encode_text(clip.tokenizer(words[i:i + batch_size])).float()
                          for i in range(0, len(words), batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--batch_size", type=int, default=200)
    parser.add_argument("--words", type=int, default=20000, help="first N words of english_20k")
    parser.add_argument("--baseline_words", type=int, default=0,
                        help="time the full-context path on this many sampled words (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    words = list(builtin_concept_set("english_20k").concepts)[: args.words]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        path = Path(tmp) / "random.pt"
        torch.save(open_clip.create_model(args.arch).state_dict(), path)
        clip = load_clip(f"{args.arch}:{path}", "cpu")
    lengths = (clip.tokenizer(words) != 0).sum(dim=1)
    print(f"{len(words):,} words (english_20k), {args.arch} random weights, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; tokens per word incl. start/end: mean {lengths.float().mean():.2f}, "
          f"max {int(lengths.max())}")

    start, cpu = time.perf_counter(), time.process_time()
    trimmed = encode_texts(clip, words, args.batch_size)
    after, after_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"after  (trimmed, sorted): {after:8.1f} s wall, {after_cpu:8.1f} s CPU  ({len(words) / after:7.1f} words/s)")

    sample = list(range(len(words)))
    if args.baseline_words and args.baseline_words < len(words):
        generator = torch.Generator().manual_seed(args.seed)
        sample = sorted(torch.randperm(len(words), generator=generator)[: args.baseline_words].tolist())
    start, cpu = time.perf_counter(), time.process_time()
    full = full_context(clip, [words[i] for i in sample], args.batch_size)
    measured, measured_cpu = time.perf_counter() - start, time.process_time() - cpu
    before, before_cpu = (value * len(words) / len(sample) for value in (measured, measured_cpu))
    scaled = "" if len(sample) == len(words) else f"; measured {measured:.1f} s wall on {len(sample):,} sampled words"
    print(f"before (full 77 tokens):  {before:8.1f} s wall, {before_cpu:8.1f} s CPU  "
          f"({len(sample) / measured:7.1f} words/s{scaled})")
    print(f"speed-up: {before / after:.1f}× wall, {before_cpu / after_cpu:.1f}× CPU time")
    diff = (trimmed[sample] - full).abs().max(dim=1).values / full.norm(dim=1)
    cosine = torch.nn.functional.cosine_similarity(trimmed[sample], full, dim=1)
    print(f"features on {len(sample):,} words: max |Δ|/‖f‖ = {diff.max():.2e}, min cosine = {cosine.min():.8f}")


if __name__ == "__main__":
    main()
