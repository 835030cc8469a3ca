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

Reading the demo (this module) imports no torch: the app and hosted copies show it
from the stored thumbnails and maps. ``dissect_core.engine.demo_build.write_demo``
re-runs the pipeline on the committed weights and probe images (seconds on a CPU).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dissect_core.common.errors import MissingResourceError

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo_data"
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
# Top images listed per unit: soft-WPMI's top_k, so that the Unit explorer counts the labels
# among all the images a unit's label was chosen from (runs.unit_evidence).
TOP_IMAGES = 100


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
    """The demo's two run folders (trained, untrained), ready for ``run_folders.load_run``.

    They hold thumbnails and activation maps, so every page, heatmaps included, shows
    them without the model or torch. For hosting and for the app's default view.
    """
    folders = [demo_dir / RUNS_DIR / key for key in MODELS]
    for folder in folders:
        if not (folder / "descriptions.csv").is_file():
            raise _missing(f"The built-in demo's run {folder.name}")
    return folders


def is_demo_run(run_dir: Optional[Path], demo_dir: Path = DEMO_DIR) -> bool:
    """Whether ``run_dir`` is one of the built-in demo's run folders."""
    return run_dir is not None and Path(run_dir).resolve().parent == (demo_dir / RUNS_DIR).resolve()


def demo_info(demo_dir: Path = DEMO_DIR) -> dict:
    """``demo.json``: the data set, seed, accuracies, build time and size of the demo."""
    path = demo_dir / INFO_FILE
    if not path.is_file():
        raise _missing("The built-in demo's demo.json")
    return json.loads(path.read_text(encoding="utf-8"))



def demo_run_inputs(run_dir: Path, demo_dir: Path = DEMO_DIR) -> tuple[Path, Path]:
    """The checkpoint and probe folder a built-in demo run (``is_demo_run``) is recomputed from:
    the installed package's own files, never paths read from a manifest.

    The demo's manifests name its files relative to ``demo_dir`` (it is a results bundle), so
    re-describing it (``pipeline.config_from_run``) takes them from here instead.
    """
    model = MODELS.get(Path(run_dir).name) if is_demo_run(run_dir, demo_dir) else None
    if model is None:
        raise _missing(f"The built-in demo's weights for {Path(run_dir).name}")
    checkpoint, probe = demo_dir / WEIGHTS_DIR / model.checkpoint, demo_dir / PROBE_DIR
    for path in (checkpoint, probe):
        if not path.exists():
            raise _missing(f"The built-in demo's {path.name}")
    return checkpoint, probe
