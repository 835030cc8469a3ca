"""Re-dissecting the built-in demo (``dissect_core.runs.demo_runs``) from its committed
weights and probe images: what ``python -m dissect_core demo OUT`` and ``scripts/build_demo.py`` run.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import msgspec

from dissect_core.common.files import atomic_write_text
from dissect_core.common.progress import ProgressFn
from dissect_core.runs.demo_runs import (CHECKPOINT_GLOB, CLASSES, DEMO_DIR, LAYERS, MODELS, PROBE_DIR,
                                         SWEEP_DIR, SWEEP_RUN_NAME, SWEEP_TOP_IMAGES, TOP_IMAGES, WEIGHTS_DIR,
                                         _missing, training_checkpoints)
from dissect_core.runs.manifest import RunManifest
from dissect_core.runs.run import Run

if TYPE_CHECKING:
    from dissect_core.engine.pipeline import DescribeResult
    from dissect_core.engine.sweep import SweepResult

SWEEP_SPEC = "training_sweep.toml"  # written beside the sweep's folder: how to run it again


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
            target_checkpoint=str(model.checkpoint(demo_dir)),
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
    from dissect_core.engine.pipeline import OUTPUT_CHECK

    result.run.manifest = _outputs_in_class_order(result.run)
    result.skipped = [stage for stage in result.skipped if stage.stage != OUTPUT_CHECK]  # done here after all


def _outputs_in_class_order(run: Run) -> RunManifest:
    from dissect_core.engine.label_quality import run_output_checks

    checks = run_output_checks(run.descriptions, run.top_concepts, CLASSES)
    manifest = msgspec.structs.replace(run.manifest, output_check=[asdict(check) for check in checks])
    manifest.write(run.path)
    return manifest


def sweep_spec(demo_dir: Path, work_dir: Path) -> str:
    """The training sweep's spec: every checkpoint, in step order, as the demo's runs are made."""
    setup = {
        "target_model": "small_cnn", "target_layers": ",".join(LAYERS), "d_probe": str(demo_dir / PROBE_DIR),
        "concept_source": "labels", "device": "cpu", "batch_size": 250, "top_images": SWEEP_TOP_IMAGES,
        "num_workers": 0, "activation_dir": str(work_dir / "saved_activations"),
        "result_dir": str(work_dir / SWEEP_DIR),
    }
    model = {"target_checkpoint": str(demo_dir / WEIGHTS_DIR / CHECKPOINT_GLOB), "name": SWEEP_RUN_NAME}
    # JSON strings are TOML basic strings (paths may hold quotes or backslashes).
    lines = ["# The built-in demo's training sweep: dissect sweep " + SWEEP_SPEC, "[setup]"]
    lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in setup.items()]
    lines += ["", "[[model]]"] + [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in model.items()]
    return "\n".join(lines) + "\n"


def dissect_sweep(demo_dir: Path, work_dir: Path, progress: Optional[ProgressFn] = None) -> "SweepResult":
    """Dissect every training checkpoint of the demo as a sweep (``dissect sweep``) into
    ``work_dir/training``, its spec written to ``work_dir/training_sweep.toml``; each run's
    output-layer check in the classifier's class order, as the demo's two runs have it."""
    from dissect_core.engine.sweep import run_sweep

    spec = Path(work_dir) / SWEEP_SPEC
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec, sweep_spec(Path(demo_dir), Path(work_dir)))
    result = run_sweep(spec, progress)
    for item in result.runs:
        if item.run is not None:
            item.run.manifest = _outputs_in_class_order(item.run)
    return result


def write_demo(out_dir: Path | str, progress: Optional[ProgressFn] = None) -> list[Path]:
    """Re-run the demo's dissections into ``out_dir``: the two networks, then the training
    sweep (``out_dir/training``); returns the run folders, the sweep's in step order.

    The runs point at the package's weights and probe images, so the app computes
    their heatmaps live, like any run made on this machine.
    """
    if not (DEMO_DIR / PROBE_DIR).is_dir():
        raise _missing(f"The built-in demo's {PROBE_DIR}")
    if not training_checkpoints(DEMO_DIR):
        raise _missing("The built-in demo's weights")
    folders = [result.run_dir for result in dissect(DEMO_DIR, Path(out_dir), progress)]
    sweep = dissect_sweep(DEMO_DIR, Path(out_dir), progress)
    return folders + [item.run.path for item in sweep.runs if item.run is not None]
