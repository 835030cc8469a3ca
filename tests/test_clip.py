"""CLIP names, loading (local file, HF cache, offline), tokens and features, with a tiny CLIP."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants
from open_clip.transformer import QuickGELU
from PIL import Image

from dissect_core.engine import downloads
from dissect_core.engine.clip import (
    causal_text_tower,
    check_context_length,
    encode_images,
    encode_texts,
    load_clip,
    parse_clip_name,
)
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from standins import CLIP_CONFIG_DIR, TINY_CLIP_ARCH, make_tiny_clip_checkpoint, place_in_hf_cache

# Concepts of 1 to 12 words, shuffled so that sorting by length reorders them.
MIXED_CONCEPTS = [" ".join(["dog", "cat", "tree", "red", "car"][: 1 + (i * 7) % 5] * (1 + i % 3)) + f" {i}"
                  for i in range(23)]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    return make_tiny_clip_checkpoint(path), path


@pytest.fixture(scope="module")
def tiny_clip(tiny_checkpoint):
    return load_clip(tiny_checkpoint[0], device="cpu")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: False)


@pytest.mark.parametrize(
    "name, arch",
    [
        ("ViT-B/16", "ViT-B-16"),
        ("ViT-B/32", "ViT-B-32"),
        ("ViT-L/14", "ViT-L-14"),
        ("RN50", "RN50"),
        ("RN101", "RN101"),
        ("RN50x4", "RN50x4"),
        ("RN50x16", "RN50x16"),
        ("RN50x64", "RN50x64"),
    ],
)
def test_reference_names_parse_to_openai_weights(name, arch):
    assert parse_clip_name(name) == (arch, "openai")


def test_open_clip_names_tags_and_paths(tmp_path, monkeypatch):
    assert parse_clip_name("ViT-B-16") == ("ViT-B-16", "openai")
    assert parse_clip_name("ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_clip_name(" ViT-B-16:LAION2B-S34B-B88K ") == ("ViT-B-16", "laion2b_s34b_b88k")
    assert parse_clip_name("ViT-B-16:/models/clip.pt") == ("ViT-B-16", "/models/clip.pt")
    monkeypatch.chdir(tmp_path)
    assert parse_clip_name("ViT-B-16:weights.safetensors") == ("ViT-B-16", str(tmp_path / "weights.safetensors"))


def test_unknown_arch_suggests_close_matches():
    with pytest.raises(InvalidInputError) as info:
        parse_clip_name("ViT-B/61")
    message = str(info.value)
    assert "ViT-B/16" in message and "list_pretrained" in message


def test_unknown_tag_lists_the_tags():
    with pytest.raises(InvalidInputError) as info:
        parse_clip_name("ViT-B-16:laion2b_s34b_b8k")
    message = str(info.value)
    assert "laion2b_s34b_b88k" in message and "openai" in message


def test_arch_without_openai_weights_needs_a_tag():
    with pytest.raises(InvalidInputError, match="laion400m_e31"):
        parse_clip_name("ViT-B-16-plus-240")


def test_load_local_checkpoint(tiny_checkpoint, tiny_clip):
    name, path = tiny_checkpoint
    assert tiny_clip.name == name == f"{TINY_CLIP_ARCH}:{path}"
    assert tiny_clip.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tiny_clip.context_length == 77
    assert tiny_clip.device == torch.device("cpu") and tiny_clip.dtype == torch.float32
    assert not tiny_clip.model.training
    assert tiny_clip.preprocess(Image.new("RGB", (90, 70))).shape == (3, 64, 64)
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(tiny_clip.model.state_dict()[k], v) for k, v in state.items())


def test_missing_local_checkpoint(tmp_path):
    with pytest.raises(MissingResourceError, match="gone.pt"):
        load_clip(f"{TINY_CLIP_ARCH}:{tmp_path / 'gone.pt'}", device="cpu")


def test_checkpoint_of_the_wrong_architecture(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InvalidInputError, match="other.pt"):
        load_clip(f"{TINY_CLIP_ARCH}:{tmp_path / 'other.pt'}", device="cpu")


def test_encode_texts_raw_strings_unnormalised(tiny_clip):
    calls = []
    texts = ["dog", "cat", "a red car"]
    features = encode_texts(tiny_clip, texts, batch_size=2, progress=lambda *a: calls.append(a))
    assert features.shape == (3, 32) and features.dtype == torch.float32 and features.device.type == "cpu"
    with torch.no_grad():
        direct = tiny_clip.model.encode_text(tiny_clip.tokenizer(texts))  # no template, no normalisation
    torch.testing.assert_close(features, direct)
    assert not torch.allclose(features.norm(dim=1), torch.ones(3))
    assert calls[-1][1:] == (3, 3)


def _text_lengths_seen(model) -> list[int]:
    """Record the sequence length of every batch entering the text transformer."""
    seen: list[int] = []
    model.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    return seen


def _full_context(clip, texts, batch_size=5):
    with torch.no_grad():
        return torch.cat([clip.model.encode_text(clip.tokenizer(texts[i:i + batch_size]))
                          for i in range(0, len(texts), batch_size)])


def test_text_encoding_is_trimmed_to_the_concepts_and_keeps_their_order(tiny_checkpoint):
    clip = load_clip(tiny_checkpoint[0], device="cpu")
    assert causal_text_tower(clip.model) is not None
    seen = _text_lengths_seen(clip.model)
    trimmed = encode_texts(clip, MIXED_CONCEPTS, batch_size=5)
    assert max(seen) < 40 and len(set(seen)) > 1  # sorted batches, each cut to its longest concept
    expected = _full_context(clip, MIXED_CONCEPTS)
    torch.testing.assert_close(trimmed, expected, atol=1e-5, rtol=1e-5)
    # The same concepts in another order give the same rows, in that order.
    reordered = encode_texts(clip, MIXED_CONCEPTS[::-1], batch_size=5)
    torch.testing.assert_close(reordered, trimmed.flip(0), atol=1e-5, rtol=1e-5)


def _variant_config(tmp_path, name: str, **text_cfg) -> str:
    config = json.loads((CLIP_CONFIG_DIR / f"{TINY_CLIP_ARCH}.json").read_text())
    config["text_cfg"].update(text_cfg)
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model(name).state_dict(), tmp_path / f"{name}.pt")
    return f"{name}:{tmp_path / f'{name}.pt'}"


@pytest.mark.parametrize("variant, text_cfg", [
    ("tiny-test-clip-bidirectional", {"no_causal_mask": True}),
    ("tiny-test-clip-last-token", {"pool_type": "last"}),
])
def test_towers_that_see_the_padding_get_the_full_context(tmp_path, variant, text_cfg):
    clip = load_clip(_variant_config(tmp_path, variant, **text_cfg), device="cpu")
    assert causal_text_tower(clip.model) is None
    seen = _text_lengths_seen(clip.model)
    features = encode_texts(clip, MIXED_CONCEPTS, batch_size=5)
    assert set(seen) == {77}
    expected = _full_context(clip, MIXED_CONCEPTS)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    # Here the padding changes the features (in a causal tower pooling the end-of-text
    # token it would not), so trimming would have been wrong.
    tokens = clip.tokenizer(["dog 1"])
    other_padding = tokens.clone()
    other_padding[:, 4:] = 7  # after start, "dog", "1", end-of-text
    with torch.no_grad():
        assert not torch.allclose(clip.model.encode_text(tokens), clip.model.encode_text(other_padding), atol=1e-4)


def test_encode_images(tiny_clip):
    batch = torch.stack([tiny_clip.preprocess(Image.new("RGB", (64, 64), c)) for c in ("red", "blue")])
    features = encode_images(tiny_clip, batch)
    assert features.shape == (2, 32) and features.dtype == torch.float32


def test_over_long_concept_raises_with_token_count(tiny_clip):
    fits = " ".join(["word"] * 75)  # 75 + start + end = 77 tokens
    check_context_length(tiny_clip, ["dog", fits])
    with pytest.raises(InvalidInputError) as info:
        encode_texts(tiny_clip, ["dog", fits + " word", " ".join(["word"] * 100)])
    message = str(info.value)
    assert "2 concept(s)" in message and "(78 tokens)" in message and "(102 tokens)" in message
    assert "77" in message and "Shorten" in message


def test_pretrained_weights_offline_fail_fast_with_fix(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(MissingResourceError) as info:
        load_clip("ViT-B/16", device="cpu")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    for part in (
        "timm/vit_base_patch16_clip_224.openai",
        "open_clip_model.safetensors",
        str(tmp_path / "hf"),
        "https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_model.safetensors",
        "ViT-B-16-quickgelu:/path/to/open_clip_model.safetensors",
    ):
        assert part in message


def test_pretrained_tag_loads_from_hf_cache_without_network(tiny_checkpoint, tmp_path, monkeypatch):
    cfg = {
        "hf_hub": "test-org/tiny-test-clip/",
        "quick_gelu": True,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_CLIP_ARCH, {"testtag": cfg})
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    place_in_hf_cache(tmp_path / "hf", "test-org/tiny-test-clip", "open_clip_pytorch_model.bin", tiny_checkpoint[1])
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network was checked"))
    clip = load_clip(f"{TINY_CLIP_ARCH}:testtag", device="cpu")
    assert clip.name == f"{TINY_CLIP_ARCH}:testtag" and clip.weights_id == "testtag"
    assert isinstance(clip.model.transformer.resblocks[0].mlp.gelu, QuickGELU)  # the tag's quick_gelu
    white = clip.preprocess(Image.new("RGB", (64, 64), "white"))
    torch.testing.assert_close(white, torch.full_like(white, 2.0))  # the tag's mean and std
