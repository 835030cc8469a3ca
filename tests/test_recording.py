"""Recording layer outputs (dissect_core.engine.recording): layouts read from the model or declared,
tuple and token outputs, pool modes that fit, and the probe pass's running top-k maps."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import Permute

from dissect_core.engine.activations import _LayerAccumulator, top_rows
from dissect_core.common.errors import InvalidInputError
from dissect_core.choices.layouts import CHANNELS_FIRST, CHANNELS_LAST, FLAT, TOKENS, parse_layer_layouts
from dissect_core.engine.recording import layer_outputs, pool, resolve_layouts, spatial_maps


class WithAux(nn.Module):
    """Returns (main output, auxiliary output), like MultiheadAttention or GoogLeNet in training."""

    def forward(self, x):
        return x * 2, x.mean()


class Tokens(nn.Module):
    """(batch, 3, 4, 4) images → (batch, 1 + 16 tokens, 3 units): a class token, then patches."""

    def forward(self, x):
        patches = x.flatten(2).transpose(1, 2)
        return torch.cat([torch.full_like(patches[:, :1], 7.0), patches], dim=1)


class Shuffle(nn.Module):
    """A 4-D output whose layout no table knows."""

    def forward(self, x):
        return x.transpose(1, 2)


class Table(nn.Module):
    """An output that does not depend on the batch (like Swin v2's position-bias MLP)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 4, 2, 2))

    def forward(self, x):
        return self.weight * 1


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU())
        self.last = nn.Sequential(Permute([0, 2, 3, 1]), nn.Linear(3, 6), nn.GELU())
        self.aux = WithAux()
        self.tokens = Tokens()
        self.shuffle = Shuffle()
        self.fc = nn.Linear(5, 2)
        self.table = Table()

    def forward(self, x):
        self.last(x), self.aux(x), self.tokens(x), self.shuffle(x), self.table(x)
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().train()


def images(n=3):
    return torch.rand(n, 3, 4, 4)


def test_layouts_are_read_from_module_types(net):
    layouts = resolve_layouts(net, ["conv", "conv.1", "last", "last.1", "last.2", "fc"], images(1), "avg")
    assert layouts == {"conv": CHANNELS_FIRST, "conv.1": CHANNELS_FIRST, "last": CHANNELS_LAST,
                       "last.1": CHANNELS_LAST, "last.2": CHANNELS_LAST, "fc": FLAT}


def test_tuple_outputs_record_their_first_element(net):
    batch = images()
    layouts = resolve_layouts(net, ["aux"], batch[:1], "avg", {"aux": "channels_first"})
    recorded = layer_outputs(net, layouts, batch)
    torch.testing.assert_close(recorded["aux"], batch * 2)


def test_channels_last_outputs_are_handed_on_units_first(net):
    batch = images()
    layouts = resolve_layouts(net, ["last"], batch[:1], "max")
    recorded = layer_outputs(net, layouts, batch)["last"]
    expected = net.last(batch).permute(0, 3, 1, 2)
    assert recorded.shape == (3, 6, 4, 4)
    torch.testing.assert_close(recorded, expected)
    torch.testing.assert_close(pool(recorded, CHANNELS_LAST, "max"), expected.amax(dim=(2, 3)))


def test_token_outputs_pool_by_cls_mean_avg_and_max(net):
    batch = images(2)
    with pytest.raises(InvalidInputError, match=r"'tokens'.*\(2, 17, 3\).*--layer_layout tokens=tokens"):
        resolve_layouts(net, ["tokens"], batch, "cls")
    layouts = resolve_layouts(net, ["tokens"], batch, "cls", {"tokens": "tokens"})
    assert layouts == {"tokens": TOKENS}
    out = layer_outputs(net, layouts, batch)["tokens"]
    patches = batch.flatten(2).transpose(1, 2)
    torch.testing.assert_close(pool(out, TOKENS, "cls"), torch.full((2, 3), 7.0))
    torch.testing.assert_close(pool(out, TOKENS, "mean"), patches.mean(dim=1))
    torch.testing.assert_close(pool(out, TOKENS, "avg"), out.mean(dim=1))
    torch.testing.assert_close(pool(out, TOKENS, "max"), torch.full((2, 3), 7.0))


def test_spatial_maps_of_every_layout(net):
    batch = images(2)
    layouts = resolve_layouts(net, ["conv", "last", "tokens", "fc"], batch, "avg", {"tokens": "tokens"})
    out = layer_outputs(net, layouts, batch)
    # Tokens holds the image's pixels in row-major order behind a class token: the grid gives the image back.
    torch.testing.assert_close(spatial_maps(out["tokens"], TOKENS), batch)
    torch.testing.assert_close(spatial_maps(out["last"], CHANNELS_LAST), net.last(batch).permute(0, 3, 1, 2))
    assert spatial_maps(out["conv"], CHANNELS_FIRST) is out["conv"]
    assert spatial_maps(out["tokens"][:, :-1], TOKENS) is None  # 15 patch tokens: no square grid
    assert spatial_maps(out["fc"], FLAT) is None


def test_pool_mode_that_does_not_fit_is_refused_with_the_valid_ones(net):
    with pytest.raises(InvalidInputError, match=r"pool_mode 'cls' does not fit layer 'conv'.*use one of avg, max"):
        resolve_layouts(net, ["conv", "fc"], images(1), "cls")
    with pytest.raises(InvalidInputError, match="Unknown pool mode 'median'.*avg, max, cls, mean"):
        resolve_layouts(net, ["conv"], images(1), "median")
    resolve_layouts(net, ["fc"], images(1), "cls")  # one value per unit: nothing to pool


def test_unknown_layouts_say_how_to_declare_them(net):
    with pytest.raises(InvalidInputError) as error:
        resolve_layouts(net, ["shuffle"], images(1), "avg")
    message = str(error.value)
    assert "'shuffle' (Shuffle, shape (2, 4, 3, 4))" in message
    assert "--layer_layout shuffle=channels_first" in message and "channels_last" in message
    layouts = resolve_layouts(net, ["shuffle"], images(1), "avg", {"shuffle": "channels_last"})
    assert layouts["shuffle"] is CHANNELS_LAST


def test_bad_declarations_and_batch_independent_outputs_are_refused(net):
    with pytest.raises(InvalidInputError, match="declares layer 'fc' as tokens"):
        resolve_layouts(net, ["fc"], images(1), "avg", {"fc": "tokens"})
    with pytest.raises(InvalidInputError, match=r"'table' has shape \(1, 4, 2, 2\), which is not one row per image"):
        resolve_layouts(net, ["table"], images(1), "avg")
    with pytest.raises(InvalidInputError, match="not among the target layers"):
        resolve_layouts(net, ["fc"], images(1), "avg", {"conv": "channels_first"})
    with pytest.raises(InvalidInputError, match="Unknown layer layout 'nhwc'"):
        parse_layer_layouts("features.7=nhwc")
    with pytest.raises(InvalidInputError, match="LAYER=LAYOUT"):
        parse_layer_layouts("channels_last")
    assert parse_layer_layouts(" a.b=channels_last, c=flat ,") == {"a.b": "channels_last", "c": "flat"}


def test_hooks_are_removed_and_the_model_restored(net):
    layouts = resolve_layouts(net, ["conv", "last"], images(1), "avg")
    layer_outputs(net, layouts, images())
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_running_top_maps_equal_the_global_top_images_with_ties():
    torch.manual_seed(0)
    # Max-pooled values with many ties (maps rounded to quarters), maps that differ within a tie.
    outputs = (torch.rand(37, 4, 3, 3) * 4).round() / 4
    accumulator = _LayerAccumulator(CHANNELS_FIRST, "max", 37, 5)
    for start in range(0, 37, 8):
        accumulator(outputs[start:start + 8], torch.arange(start, min(start + 8, 37)) * 10)  # probe indices
    result = accumulator.take().finish("channels_first", [])
    _, rows = top_rows(outputs.amax(dim=(2, 3)), 5)
    assert torch.equal(result.map_images, (rows * 10).T)
    expected = outputs[rows.T, torch.arange(4)[:, None]].half()
    assert torch.equal(result.maps, expected)
    assert result.maps.shape == (4, 5, 3, 3)
