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
    weights/small_cnn_step_*.pth   checkpoints (state dicts) saved during training, from the
                                   initial weights (step 0, "untrained") to the end ("trained")
    fashion-mnist/<class>/*.png    the probe images, one sub-folder per class
    runs/trained, runs/untrained   the two runs in results-bundle layout: run files plus
                                   thumbnails and activation maps of each unit's top images
    training/                      the training sweep: one run per checkpoint, in step order
                                   (``sweep.json``, as ``dissect sweep`` writes it), sharing one
                                   folder of thumbnails and keeping no activation maps

Reading the demo (this module) imports no torch: the app and hosted copies show it
from the stored thumbnails and maps. ``dissect_core.engine.demo_build.write_demo``
re-runs the pipeline on the committed weights and probe images (seconds on a CPU).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dissect_core.common.errors import MissingResourceError
from dissect_core.runs.run_folders import DESCRIPTIONS_FILE
from dissect_core.runs.sweep_index import read_sweep_entries

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo_data"
INFO_FILE = "demo.json"
CLASSES_FILE = "classes.txt"
LICENCE_FILE = "LICENSE-fashion-mnist.txt"
WEIGHTS_DIR = "weights"
PROBE_DIR = "fashion-mnist"
RUNS_DIR = "runs"
SWEEP_DIR = "training"
CHECKPOINT_GLOB = "small_cnn_step_*.pth"  # in weights/; the number is the training step
SWEEP_RUN_NAME = "small CNN · step {step}"
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
# The sweep's runs list fewer: ten runs of 100 rows a unit would be 4 MB of the demo's 8.
SWEEP_TOP_IMAGES = 20


@dataclass(frozen=True)
class DemoModel:
    run_name: str
    last_checkpoint: bool  # the end of training, else its start (the initial weights)

    def checkpoint(self, demo_dir: Path = DEMO_DIR) -> Path:
        """This network's weights file: the last or first of the training checkpoints."""
        checkpoints = training_checkpoints(demo_dir)
        if not checkpoints:
            raise _missing("The built-in demo's weights")
        return checkpoints[-1 if self.last_checkpoint else 0][1]


# Display order: the trained network first (it is "model A" on the comparison pages).
MODELS = {
    "trained": DemoModel("small CNN · trained on Fashion-MNIST", last_checkpoint=True),
    "untrained": DemoModel("small CNN · untrained (same initial weights)", last_checkpoint=False),
}


def checkpoint_name(step: int) -> str:
    return CHECKPOINT_GLOB.replace("*", f"{step:05d}")


def training_checkpoints(demo_dir: Path = DEMO_DIR) -> list[tuple[int, Path]]:
    """The checkpoints saved during training, ``(step, file)`` in step order."""
    found = [(int(re.findall(r"\d+", path.stem)[-1]), path)
             for path in (demo_dir / WEIGHTS_DIR).glob(CHECKPOINT_GLOB)]
    return sorted(found)


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


def demo_sweep_runs(demo_dir: Path = DEMO_DIR) -> list[Path]:
    """The training sweep's run folders, in step order (``sweep.json`` lists them)."""
    sweep = demo_dir / SWEEP_DIR
    folders = [sweep / entry.folder for entry in read_sweep_entries(sweep)]
    for folder in folders:
        if not (folder / DESCRIPTIONS_FILE).is_file():
            raise _missing(f"The built-in demo's training run {folder.name}")
    return folders


def is_demo_run(run_dir: Optional[Path], demo_dir: Path = DEMO_DIR) -> bool:
    """Whether ``run_dir`` is one of the built-in demo's run folders (its sweep's included)."""
    return run_dir is not None and Path(run_dir).resolve().parent in (
        (demo_dir / RUNS_DIR).resolve(), (demo_dir / SWEEP_DIR).resolve())


def demo_info(demo_dir: Path = DEMO_DIR) -> dict:
    """``demo.json``: the data set, seed, accuracies, build time and size of the demo."""
    path = demo_dir / INFO_FILE
    if not path.is_file():
        raise _missing("The built-in demo's demo.json")
    return json.loads(path.read_text(encoding="utf-8"))


def demo_run_inputs(run_dir: Path, demo_dir: Path = DEMO_DIR) -> tuple[Path, Path]:
    """The checkpoint and probe folder a built-in demo run (``is_demo_run``, its training
    sweep's included) is recomputed from: the installed package's own files, never paths
    read from a manifest.

    The demo's manifests name its files relative to ``demo_dir`` (it is a results bundle), so
    re-describing it (``pipeline.config_from_run``) takes them from here instead: a network's
    run by its folder, a sweep's run by its training step.
    """
    run_dir = Path(run_dir)
    checkpoint = None
    if is_demo_run(run_dir, demo_dir):
        if run_dir.name in MODELS:
            checkpoint = MODELS[run_dir.name].checkpoint(demo_dir)
        else:
            steps = {entry.folder: entry.step for entry in read_sweep_entries(demo_dir / SWEEP_DIR)}
            if isinstance(steps.get(run_dir.name), int):
                checkpoint = demo_dir / WEIGHTS_DIR / checkpoint_name(steps[run_dir.name])
    if checkpoint is None:
        raise _missing(f"The built-in demo's weights for {run_dir.name}")
    probe = demo_dir / PROBE_DIR
    for path in (checkpoint, probe):
        if not path.exists():
            raise _missing(f"The built-in demo's {path.name}")
    return checkpoint, probe
