"""Activation maps of token layers: a ViT encoder layer's patch tokens on their grid are
stored like convolutional maps and drawn without the model; a token output whose patches
form no square grid gets none, with a warning."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision import transforms

from dissect_core.engine.models import TargetModel
from dissect_core.engine.pipeline import DescribeConfig, describe
from dissect_core.engine.probe_sets import open_probe_spec
from dissect_core.engine.unit_views import live_unit_views
from dissect_core.runs.unit_images import stored_unit_views

from planted import make_planted_probe, planted_clip, write_concepts

LAYER = "encoder.layers.encoder_layer_0"
UNITS, GRID = 16, 4  # hidden_dim 16; 32 px images in 8 px patches


def tiny_vit() -> TargetModel:
    torch.manual_seed(0)
    module = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                                  hidden_dim=UNITS, mlp_dim=32, num_classes=10)
    return TargetModel("tiny-vit", module.eval(), transforms.ToTensor(), "tiny-vit-v1", "tests/test_token_maps.py")


class TwoLeadingTokens(nn.Module):
    """Patch tokens behind two leading tokens (a class token and one more, like DeiT's
    distillation token): 2 + 16 tokens, whose last 17 form no square grid."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patches = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.leading = nn.Parameter(torch.randn(1, 2, 8))
        self.tokens = nn.Identity()

    def forward(self, x):
        patches = self.patches(x).flatten(2).transpose(1, 2)
        return self.tokens(torch.cat([self.leading.expand(len(x), -1, -1), patches], dim=1))


@pytest.fixture(scope="module")
def probe_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("token_maps")
    make_planted_probe(root / "probe", per_colour=4)
    write_concepts(root / "concepts.txt")
    return root


def config_for(root, tmp, **overrides) -> DescribeConfig:
    settings = dict(
        target_model=tiny_vit(), target_layers=(LAYER,), clip_model=planted_clip(), pool_mode="mean",
        similarity_fn="cos_similarity", d_probe=str(root / "probe"), concept_set=str(root / "concepts.txt"),
        device="cpu", batch_size=7,
        activation_dir=str(tmp / "cache"), result_dir=str(tmp / "results"), num_workers=0,
    )
    settings.update(overrides)
    return DescribeConfig(**settings)


def test_vit_layer_maps_are_its_patch_tokens_on_their_grid(probe_root, tmp_path):
    result = describe(config_for(probe_root, tmp_path, top_maps=5))
    run = result.run
    assert run.manifest.layouts == {LAYER: "tokens"}
    assert not result.warnings
    maps = np.load(run.path / "maps" / f"{LAYER}.npy").astype(np.float32)
    assert maps.shape == (UNITS, 5, GRID, GRID)

    # The patch tokens of every probe image, recomputed directly: token 1 + row * 4 + column.
    target, probe, unit = tiny_vit(), open_probe_spec(run.manifest.probe.spec), 3
    recorded = []
    hook = target.module.encoder.layers.encoder_layer_0.register_forward_hook(lambda m, i, o: recorded.append(o))
    with torch.inference_mode():
        target.module(torch.stack([target.preprocess(probe.load_image(i)) for i in range(len(probe))]))
    hook.remove()
    patches = recorded[0][:, 1:, unit]
    top = run.unit_top_images(LAYER, unit, 5)
    expected = patches[top["image_index"].astype(int).tolist()].reshape(5, GRID, GRID).numpy()
    np.testing.assert_allclose(maps[unit], expected, rtol=2e-3, atol=2e-3)
    # The pooled activation (mean over the patch tokens) is the mean of the stored map.
    np.testing.assert_allclose(maps[unit].mean(axis=(1, 2)), top["activation"], rtol=2e-3, atol=2e-3)
    # The mask threshold is the top-0.5 % level of the patch values (exact: the probe set is small).
    threshold = run.mask_threshold(LAYER, unit)
    values = patches.flatten()
    assert threshold == pytest.approx(float(values.kthvalue(math.ceil(0.995 * len(values))).values), rel=1e-5)

    # Heatmaps and masks drawn from the stored maps, without the model, and live for old runs.
    for views in (stored_unit_views(run.path, LAYER, unit, top["image_index"].tolist(), top["activation"].tolist(),
                                    threshold, probe),
                  live_unit_views(target, probe, LAYER, unit, top["image_index"].tolist(),
                                  top["activation"].tolist(), threshold)):
        assert len(views) == 5
        assert all(view.heatmap is not None and view.mask is not None for view in views)
        assert all(view.heatmap.size == view.image.size for view in views)


def test_patches_on_no_square_grid_get_no_maps_and_a_warning(probe_root, tmp_path):
    target = TargetModel("two-leading-tokens", TwoLeadingTokens().eval(), transforms.ToTensor(), "two-leading-v1",
                         "tests/test_token_maps.py")
    result = describe(config_for(probe_root, tmp_path, target_model=target, target_layers=("tokens",),
                                 layer_layout={"tokens": "tokens"}))
    run = result.run
    warning = ("Layer 'tokens' of two-leading-tokens gets no activation maps (heatmaps, masks): its patch tokens "
               "(all but the first, the class token) do not form a square grid.")
    assert result.warnings == [warning] and run.manifest.warnings == [warning]
    assert not (run.path / "maps" / "tokens.npy").exists()
    assert run.mask_threshold("tokens", 0) is None
    top = run.unit_top_images("tokens", 0, 3)
    views = stored_unit_views(run.path, "tokens", 0, top["image_index"].tolist(), top["activation"].tolist(), None,
                              open_probe_spec(run.manifest.probe.spec))
    assert len(views) == 3 and all(view.heatmap is None for view in views)
