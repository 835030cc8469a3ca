"""Torchvision families of every layout through the CLI, with random weights placed where
torchvision keeps them: Swin (channels-last), ConvNeXt, ViT (tokens, cls and mean) and
ResNet. A few tiny images each: these models are large for a CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dissect_core.cli import main
from dissect_core.engine.models import load_target_model
from dissect_core.engine.probe_sets import open_probe_spec
from dissect_core.runs.run_folders import load_run

from standins import make_image_folder, make_tiny_clip_checkpoint, place_torchvision_weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchvision_layouts")
    with pytest.MonkeyPatch.context() as patch:  # restored after the module, even when setup fails
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        make_image_folder(root / "probe", 4, size=(40, 40))
        (root / "concepts.txt").write_text("dog\ncat\nstripes\nsky\n")
        yield root, make_tiny_clip_checkpoint(root / "tiny_clip.pt")


def describe(root, clip, model, layers, *extra) -> int:
    return main([
        "describe", "--clip_model", clip, "--target_model", model, "--target_layers", layers,
        "--d_probe", str(root / "probe"), "--concept_set", str(root / "concepts.txt"), "--batch_size", "4",
        "--device", "cpu", "--activation_dir", str(root / "cache"), "--result_dir", str(root / "results" / model),
        "--num_workers", "0", "--similarity_fn", "cos_similarity", "--quiet", *extra,
    ])


def newest_run(root, model):
    return load_run(max((root / "results" / model).iterdir(), key=lambda p: p.stat().st_mtime_ns))


@pytest.mark.parametrize("model, layer, units", [
    ("swin_t", "features.7", 768),
    ("convnext_tiny", "features.7", 768),
    ("resnet18", "layer4", 512),
])
def test_spatial_layers_have_one_unit_per_channel(setup, model, layer, units):
    root, clip = setup
    place_torchvision_weights(model)
    assert describe(root, clip, model, layer) == 0
    run = newest_run(root, model)
    assert run.units(layer)["unit"].tolist() == list(range(units))
    assert run.manifest.layouts == {layer: "channels_last" if model == "swin_t" else "channels_first"}
    if model == "resnet18":
        return
    # The stored maps are the layer's maps, units first: features(x) is features.7's output,
    # (batch, 7, 7, 768) for Swin and (batch, 768, 7, 7) for ConvNeXt.
    target = load_target_model(model)
    probe = open_probe_spec(run.manifest.probe.spec)
    unit = 5
    top = run.unit_top_images(layer, unit, 4)["image_index"].astype(int).tolist()
    with torch.inference_mode():
        out = target.module.features(torch.stack([target.preprocess(probe.load_image(i)) for i in top]))
    expected = out[..., unit] if model == "swin_t" else out[:, unit]
    stored = np.load(run.path / "maps" / f"{layer}.npy")
    assert stored.shape == (units, 4, 7, 7)
    np.testing.assert_allclose(stored[unit].astype(np.float32), expected.numpy(), rtol=2e-3, atol=2e-3)


def test_vit_tokens_with_cls_and_mean_pooling(setup):
    root, clip = setup
    place_torchvision_weights("vit_b_16")
    layer = "encoder.layers.encoder_layer_11"
    activations = {}
    for mode in ("cls", "mean"):
        assert describe(root, clip, "vit_b_16", layer, "--pool_mode", mode) == 0
        run = newest_run(root, "vit_b_16")
        assert run.units(layer)["unit"].tolist() == list(range(768))
        assert run.manifest.layouts == {layer: "tokens"}
        activations[mode] = run.top_images.sort_values(["unit", "rank"])["activation"].to_numpy()
        # 224 px in 16 px patches: each unit's maps on its 4 images (the probe set) are the 14 × 14 patch grid.
        assert np.load(run.path / "maps" / f"{layer}.npy").shape == (768, 4, 14, 14)
    assert not np.allclose(activations["cls"], activations["mean"])


def test_a_pool_mode_that_does_not_fit_fails_before_the_probe_pass(setup, capsys):
    root, clip = setup
    place_torchvision_weights("resnet18")
    before = sorted((root / "cache").rglob("*")) if (root / "cache").exists() else []
    assert describe(root, clip, "resnet18", "layer3", "--pool_mode", "cls") == 2
    error = capsys.readouterr().err
    assert "pool_mode 'cls' does not fit layer 'layer3'" in error and "use one of avg, max" in error
    assert (sorted((root / "cache").rglob("*")) if (root / "cache").exists() else []) == before
