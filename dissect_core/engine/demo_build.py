"""Re-dissecting the built-in demo (``dissect_core.runs.demo_runs``) from its committed
weights and probe images: what ``python -m dissect_core demo OUT`` and ``scripts/build_demo.py`` run.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import msgspec

from dissect_core.common.progress import ProgressFn
from dissect_core.runs.demo_runs import (CLASSES, DEMO_DIR, LAYERS, MODELS, PROBE_DIR, TOP_IMAGES, WEIGHTS_DIR,
                                         _missing)

if TYPE_CHECKING:
    from dissect_core.engine.pipeline import DescribeResult


def dissect(demo_dir: Path, work_dir: Path, progress: Optional[ProgressFn] = None,
            similarity_fn: Optional[str] = None, similarity_params: Optional[dict] = None) -> list["DescribeResult"]:
    """Dissect both demo networks over the demo's probe images, labels as concepts.

    Run folders go to ``work_dir``, the stage cache to ``work_dir/saved_activations``.
    The classifier ``fc`` is included: with the class names as concepts, a trained
    network's output unit k should be labelled with class k (the output-layer check).
    ``similarity_fn`` None is the labelled probes' default (the demo's); the others are
    for comparing scores (benchmarks/compare_label_scores.py).
    """
    from dissect_core.engine.pipeline import DescribeConfig, describe

    results = []
    for model in MODELS.values():
        config = DescribeConfig(
            target_model="small_cnn",
            target_checkpoint=str(demo_dir / WEIGHTS_DIR / model.checkpoint),
            target_layers=LAYERS,
            d_probe=str(demo_dir / PROBE_DIR),
            concept_source="labels",
            similarity_fn=similarity_fn,
            similarity_params=dict(similarity_params or {}),
            device="cpu",
            batch_size=250,
            top_images=TOP_IMAGES,
            num_workers=0,
            activation_dir=str(Path(work_dir) / "saved_activations"),
            result_dir=str(work_dir),
            run_name=model.run_name,
        )
        result = describe(config, progress)
        _check_outputs_in_class_order(result)
        results.append(result)
    return results


def _check_outputs_in_class_order(result: "DescribeResult") -> None:
    """Redo the run's output-layer check against ``CLASSES``, the classifier's output order.

    The pipeline checks unit i against the i-th concept; the labelled-probe source lists
    its concepts alphabetically ("Ankle boot" first), which is not the class order, so
    its check would compare unit i with the wrong class.
    """
    from dissect_core.engine.label_quality import run_output_checks
    from dissect_core.engine.pipeline import OUTPUT_CHECK

    run = result.run
    checks = run_output_checks(run.descriptions, run.top_concepts, CLASSES)
    run.manifest = msgspec.structs.replace(run.manifest, output_check=[asdict(check) for check in checks])
    run.manifest.write(result.run_dir)
    result.skipped = [stage for stage in result.skipped if stage.stage != OUTPUT_CHECK]  # done here after all


def write_demo(out_dir: Path | str, progress: Optional[ProgressFn] = None) -> list[Path]:
    """Re-run the demo's dissections into ``out_dir``; returns the two run folders.

    The runs point at the package's weights and probe images, so the app computes
    their heatmaps live, like any run made on this machine.
    """
    for path in (DEMO_DIR / PROBE_DIR, *(DEMO_DIR / WEIGHTS_DIR / m.checkpoint for m in MODELS.values())):
        if not path.exists():
            raise _missing(f"The built-in demo's {path.name}")
    return [result.run_dir for result in dissect(DEMO_DIR, Path(out_dir), progress)]
