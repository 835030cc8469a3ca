"""The built-in demo: a small CNN trained by this project on Fashion-MNIST, against the
same network untrained, dissected with the labelled-probe concept source.

No pretrained CLIP or ImageNet weights can ship with the package, so the demo is real
in another way: ``scripts/build_demo.py`` trains ``small_cnn`` (seeded) on the
Fashion-MNIST training set, keeps its initial weights as the untrained counterpart,
and dissects both over a probe subset of the test images whose concepts are the ten
class names (``concept_sources``). The committed files live in ``demo_data/``:

    demo.json                      what was built and how well it does (accuracy, sizes, times)
    classes.txt                    the class names, in the order of the classifier's outputs
    LICENSE-fashion-mnist.txt      the data set's MIT licence
    weights/small_cnn_*.pth        both checkpoints (state dicts)
    fashion-mnist/<class>/*.png    the probe images, one sub-folder per class
    runs/trained, runs/untrained   the two runs in results-bundle layout: run files plus
                                   thumbnails and activation maps of each unit's top images

Reading the demo (:func:`demo_runs`, :func:`demo_info`) imports no torch: the app
and hosted copies show it from the stored thumbnails and maps. :func:`write_demo`
re-runs the pipeline on the committed weights and probe images (seconds on a CPU).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import MissingResourceError
from .progress import ProgressFn

if TYPE_CHECKING:
    from .pipeline import DescribeResult

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
INFO_FILE = "demo.json"
CLASSES_FILE = "classes.txt"
LICENCE_FILE = "LICENSE-fashion-mnist.txt"
WEIGHTS_DIR = "weights"
PROBE_DIR = "fashion-mnist"
RUNS_DIR = "runs"
TITLE = "Demo: a small CNN trained on Fashion-MNIST, against the same network untrained"
# Fashion-MNIST's classes in label order (= the classifier's outputs); "T-shirt/top"
# is spelled without the slash because each class is a folder name.
CLASSES = ("T-shirt or top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LAYERS = ("conv1", "conv2", "conv3", "fc")
IMAGES_PER_UNIT = 10  # thumbnails and maps stored per unit
TOP_IMAGES = 50  # top images listed per unit (soft-WPMI still scores over its own top 100)


@dataclass(frozen=True)
class DemoModel:
    run_name: str
    checkpoint: str  # file name in weights/


# Display order: the trained network first (it is "model A" on the comparison pages).
MODELS = {
    "trained": DemoModel("small CNN · trained on Fashion-MNIST", "small_cnn_trained.pth"),
    "untrained": DemoModel("small CNN · untrained (same initial weights)", "small_cnn_untrained.pth"),
}


def _missing(what: str) -> MissingResourceError:
    return MissingResourceError(
        what, looked_in="dissect_core/demo_data",
        how_to_fix="Reinstall dissect_core, or rebuild the demo with scripts/build_demo.py.",
    )


def demo_runs(demo_dir: Path = DEMO_DIR) -> list[Path]:
    """The demo's two run folders (trained, untrained), ready for ``results.load_run``.

    They hold thumbnails and activation maps, so every page, heatmaps included, shows
    them without the model or torch. For hosting and for the app's default view.
    """
    folders = [demo_dir / RUNS_DIR / key for key in MODELS]
    for folder in folders:
        if not (folder / "descriptions.csv").is_file():
            raise _missing(f"The built-in demo's run {folder.name}")
    return folders


def demo_info(demo_dir: Path = DEMO_DIR) -> dict:
    """``demo.json``: the data set, seed, accuracies, build time and size of the demo."""
    path = demo_dir / INFO_FILE
    if not path.is_file():
        raise _missing("The built-in demo's demo.json")
    return json.loads(path.read_text(encoding="utf-8"))


def dissect(demo_dir: Path, work_dir: Path, progress: Optional[ProgressFn] = None,
            similarity_fn: Optional[str] = None, similarity_params: Optional[dict] = None) -> list["DescribeResult"]:
    """Dissect both demo networks over the demo's probe images, labels as concepts.

    Run folders go to ``work_dir``, the stage cache to ``work_dir/saved_activations``.
    The classifier ``fc`` is included: with the class names as concepts, a trained
    network's output unit k should be labelled with class k (the output-layer check).
    ``similarity_fn`` None is the labelled probes' default (the demo's); the others are
    for comparing scores (benchmarks/compare_label_scores.py).
    """
    from .pipeline import DescribeConfig, describe

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
    from .quality import run_output_checks

    run = result.run
    checks = run_output_checks(run.descriptions, run.top_concepts, CLASSES)
    run.manifest = replace(run.manifest, output_check=[asdict(check) for check in checks])
    run.manifest.write(result.run_dir)


def write_demo(out_dir: Path | str, progress: Optional[ProgressFn] = None) -> list[Path]:
    """Re-run the demo's dissections into ``out_dir``; returns the two run folders.

    The runs point at the package's weights and probe images, so the app computes
    their heatmaps live, like any run made on this machine.
    """
    for path in (DEMO_DIR / PROBE_DIR, *(DEMO_DIR / WEIGHTS_DIR / m.checkpoint for m in MODELS.values())):
        if not path.exists():
            raise _missing(f"The built-in demo's {path.name}")
    return [result.run_dir for result in dissect(DEMO_DIR, Path(out_dir), progress)]
