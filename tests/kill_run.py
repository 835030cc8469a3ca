"""Run the planted dissection in this process and kill it with SIGKILL at a chosen moment.

Used by test_faults_kill.py: ``python kill_run.py PROBE CONCEPTS CACHE RESULTS MOMENT``,
where MOMENT is ``probe:N`` (after N probe images), ``describe`` (after the first layer's
similarity), or ``write:NAME`` (just before the file NAME would be renamed into place:
a cache entry kind such as ``activations``, or a run file such as ``manifest.json``).
Not a test module: pytest does not collect it.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dissect_core.common import files  # noqa: E402
from dissect_core.engine.pipeline import DescribeConfig, describe  # noqa: E402
from planted import planted_clip, planted_target  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    probe, concepts, cache, results, moment = sys.argv[1:6]
    kind, _, arg = moment.partition(":")

    def progress(stage: str, done: int, total: int) -> None:
        if kind == "probe" and stage.startswith("probe images") and done >= int(arg):
            die()
        if kind == "describe" and stage.startswith("describe layers"):
            die()

    if kind == "write":
        real_replace = os.replace

        def replace(source, target):
            if Path(target).name == arg or Path(target).parent.name == arg:
                die()
            real_replace(source, target)

        files.os.replace = replace
    describe(DescribeConfig(
        target_model=planted_target(), target_layers=("detect",), clip_model=planted_clip(), d_probe=probe,
        concept_set=concepts, device="cpu", batch_size=16, activation_dir=cache, result_dir=results,
        num_workers=0, top_images=10, similarity_fn="cos_similarity",
    ), progress)
    print("finished without being killed")


if __name__ == "__main__":
    main()
