"""A sweep on stand-ins, shared by tests/test_sweep.py and tests/test_sweep_ray.py: a random
ShuffleNet V2 ×0.5 (torchvision's weight file, placed where torchvision keeps it; a network
with stages that is cheap at 224 px) with its layers picked by a rule, and three checkpoints of the demo's small CNN named by training step,
over 30 synthetic images with a tiny CLIP."""
from __future__ import annotations

from pathlib import Path

import torch

from standins import make_image_folder, make_tiny_clip_checkpoint, place_torchvision_weights

STEPS = (0, 50, 100)  # the file names sort as 0, 100, 50: the sweep must order them by step
N_IMAGES, BATCH = 30, 8
STAGED = "shufflenet_v2_x0_5"
FOLDERS = [STAGED] + [f"small_cnn_step_{step}" for step in STEPS]


def make_sweep_inputs(root: Path) -> str:
    """Probe images, concepts, checkpoints and weights under ``root`` (set TORCH_HOME to
    ``root / "torch_home"`` first); returns the CLIP name."""
    from dissect_core.engine.small_cnn import SmallCNN

    make_image_folder(root / "probe", N_IMAGES, size=(40, 40))
    (root / "concepts.txt").write_text("dog\ncat\nstripes\nsky\nwater\n")
    place_torchvision_weights(STAGED)
    (root / "checkpoints").mkdir()
    for step in STEPS:
        torch.manual_seed(step)
        torch.save(SmallCNN(width=8).state_dict(), root / "checkpoints" / f"step_{step}.pt")
    return make_tiny_clip_checkpoint(root / "tiny_clip.pt")


def write_spec(root: Path, clip: str, name: str, models: str = "", out: Path | None = None, **setup: str) -> Path:
    """A spec over the inputs of :func:`make_sweep_inputs` in ``root``, written as
    ``out/name.toml`` (``out`` defaults to ``root``) with its runs in ``out/name`` and its
    cache in ``out/name-cache``; ``models`` replaces the default [[model]] tables and
    ``setup`` adds to (or replaces) [setup]'s keys."""
    out = out or root
    keys = {
        "d_probe": f'"{root / "probe"}"', "concept_set": f'"{root / "concepts.txt"}"', "clip_model": f'"{clip}"',
        "device": '"cpu"', "batch_size": str(BATCH), "num_workers": "0", "top_images": "5", "top_maps": "3",
        "activation_dir": f'"{out / (name + "-cache")}"', "result_dir": f'"{out / name}"',
        "similarity_param": "{top_k = 5}", "quality_resamples": "2",
        **setup,
    }
    models = models or f'''
[[model]]
target_model = "{STAGED}"
layer_rule = "stage_ends"

[[model]]
target_model = "small_cnn"
target_checkpoint = "{root / "checkpoints" / "step_*.pt"}"
name = "small_cnn_step_{{step}}"
target_layers = "conv1,conv3,fc"
'''
    path = out / f"{name}.toml"
    path.write_text("[setup]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + models)
    return path
