"""Target model loading (Places365, torchvision, own checkpoints) and layer lookup, offline."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from dissect_core.engine import downloads
from dissect_core.engine import models
from dissect_core.choices.catalog import NAMED_MODELS
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.engine.models import get_layer, layer_names, load_target_model
from standins import place_torchvision_weights, save_places_style_checkpoint


class Unsafe:
    """A class a weights_only load must refuse to unpickle."""


def _no_network(monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network was checked"))


def _offline(monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: False)


def _same_weights(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = module.state_dict()
    return loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def test_places_checkpoint_loads_through_the_real_path(tmp_path, monkeypatch):
    path = tmp_path / "resnet18_places365.pth.tar"
    state = save_places_style_checkpoint(path)
    _no_network(monkeypatch)
    target = load_target_model("resnet18_places", weights_dir=tmp_path)
    assert target.name == "resnet18_places"
    assert _same_weights(target.module, state)
    assert not target.module.training
    assert target.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(path) in target.source and "365 classes" in target.source
    image = Image.new("RGB", (300, 200), (120, 30, 200))
    batch = target.preprocess(image).unsqueeze(0)
    assert batch.shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert target.module(batch).shape == (1, 365)


def test_places_keys_without_module_prefix_are_kept(tmp_path):
    # The reference dropped such keys silently (quirk Q4); a strict load must see them.
    state = torchvision.models.resnet18(weights=None, num_classes=365).state_dict()
    mixed = {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(state.items())}
    torch.save({"state_dict": mixed}, tmp_path / "resnet18_places365.pth.tar")
    target = load_target_model("resnet18_places", weights_dir=tmp_path)
    assert _same_weights(target.module, state)


def test_places_offline_fails_fast_with_fix(tmp_path, monkeypatch):
    _offline(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(MissingResourceError) as info:
        load_target_model("resnet18_places", weights_dir=tmp_path / "data")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "resnet18_places365.pth.tar" in message
    assert str((tmp_path / "data" / "resnet18_places365.pth.tar").resolve()) in message
    assert NAMED_MODELS.get("resnet18_places").value.weights_url in message


def test_weights_only_loading_is_used(tmp_path, monkeypatch):
    save_places_style_checkpoint(tmp_path / "resnet18_places365.pth.tar")
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_target_model("resnet18_places", weights_dir=tmp_path)
    assert seen and all(call.get("weights_only") is True and call.get("map_location") == "cpu" for call in seen)


def test_pickled_objects_are_refused_not_unpickled(tmp_path):
    path = tmp_path / "unsafe.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({"state_dict": state, "extra": Unsafe()}, path)
    with pytest.raises(InvalidInputError, match="weights_only=True"):
        load_target_model("resnet18", checkpoint=path)


def test_torchvision_weights_come_from_the_hub_cache(torch_home, monkeypatch):
    path, state = place_torchvision_weights("resnet18")
    assert path == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    _no_network(monkeypatch)
    target = load_target_model("resnet18")
    assert _same_weights(target.module, state)
    assert target.source == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert target.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert target.preprocess(Image.new("RGB", (320, 240))).shape == (3, 224, 224)


def test_torchvision_offline_fails_fast_with_fix(torch_home, monkeypatch):
    _offline(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(MissingResourceError) as info:
        load_target_model("resnet50")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    weights_url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert weights_url in message
    assert str(torch_home / "hub" / "checkpoints" / weights_url.rsplit("/", 1)[1]) in message


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(InvalidInputError) as info:
        load_target_model("resnet19")
    message = str(info.value)
    assert "resnet18" in message and "resnet18_places" in message and "list_models" in message


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model"])
def test_own_checkpoint_with_ten_classes(tmp_path, layout):
    state = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    obj = {"plain": prefixed, "state_dict": {"state_dict": prefixed, "epoch": 3}, "model": {"model": state}}[layout]
    path = tmp_path / "mine.pth"
    torch.save(obj, path)
    target = load_target_model("resnet18", checkpoint=path)
    assert target.module.fc.out_features == 10
    assert _same_weights(target.module, state)
    assert "10 classes" in target.source


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "squeezenet1_1"])
def test_own_checkpoint_num_classes_from_other_heads(tmp_path, arch):
    # classifier.3 (Linear) and classifier.1 (a 1x1 Conv2d) rather than fc
    state = torchvision.models.get_model(arch, weights=None, num_classes=7).state_dict()
    torch.save(state, tmp_path / "mine.pth")
    target = load_target_model(arch, checkpoint=tmp_path / "mine.pth")
    with torch.no_grad():
        assert target.module(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_missing_own_checkpoint(tmp_path):
    with pytest.raises(MissingResourceError, match="nope.pth"):
        load_target_model("resnet18", checkpoint=tmp_path / "nope.pth")


def test_mismatched_checkpoint_lists_keys(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(InvalidInputError) as info:
        load_target_model("resnet18", checkpoint=tmp_path / "r34.pth")
    assert "unexpected keys (e.g. layer1.2." in str(info.value)


def test_old_densenet_key_names_are_renamed(tmp_path):
    path = tmp_path / "dense.pth"
    torch.save({"features.denseblock1.denselayer1.norm.1.weight": torch.ones(2)}, path)
    assert list(models._read_state_dict(path)) == ["features.denseblock1.denselayer1.norm1.weight"]


def test_layer_names_and_nested_dotted_layers():
    module = torchvision.models.resnet18(weights=None)
    names = layer_names(module)
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer4.1.conv2" in names and "" not in names
    assert get_layer(module, "layer4") is module.layer4
    assert get_layer(module, "layer4.1") is module.layer4[1]
    assert get_layer(module, "layer4[1]") is module.layer4[1]
    assert get_layer(module, "layer4.1.conv2") is module.layer4[1].conv2


def test_unknown_layer_lists_valid_names():
    module = torchvision.models.resnet18(weights=None)
    with pytest.raises(InvalidInputError) as info:
        get_layer(module, "layer5")
    message = str(info.value)
    assert "conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc" in message
    assert "nested names such as" in message
