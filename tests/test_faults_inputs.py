"""Fault catalogue: probe folders, image modes, concept lists, checkpoints and flags.

Each case asserts the exact outcome: skipped and counted, converted correctly, or
refused with a message that says what was wrong, and nothing hangs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissect_core.cli import main
from dissect_core.engine.clip import load_clip
from dissect_core.choices.concept_sets import parse_concepts
from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.models import load_target_model
from dissect_core.engine.probe_loading import probe_loader
from dissect_core.engine.probe_sets import MAX_FOLDER_DEPTH, image_folder, to_rgb

from standins import make_image_folder, register_tiny_clip

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="POSIX file names, FIFOs and links")


# --------------------------------------------------------------------------- probe folders

@pytest.fixture
def folder(tmp_path) -> Path:
    make_image_folder(tmp_path / "probe", 4, size=(16, 16))
    return tmp_path / "probe"


@linux_only
def test_symlink_loop_is_skipped_and_counted(folder):
    os.symlink("..", folder / "cat" / "loop")  # cat/loop -> probe: a cycle
    os.symlink(str(folder), folder / "dog" / "again")
    probe = image_folder(folder)
    assert len(probe) == 4  # not multiplied
    assert probe.listing_skipped == {"folders reached twice through links": 2}


@linux_only
def test_fifo_named_like_an_image_is_skipped_and_never_read(folder):
    os.mkfifo(folder / "cat" / "x.jpg")
    probe = image_folder(folder)
    assert len(probe) == 4
    assert probe.listing_skipped == {"not regular files (FIFOs, sockets, devices)": 1}


@linux_only
def test_fifo_appearing_after_listing_is_skipped_at_load_without_hanging(folder):
    probe = image_folder(folder)
    victim = folder / probe.item_label(0)
    victim.unlink()
    os.mkfifo(victim)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        probe.load_image(0)
    batches = list(probe_loader(probe, {"x": lambda im: torch.zeros(1)}, batch_size=8, num_workers=0))
    assert batches[0].skipped == [0]


@linux_only
def test_broken_symlink_is_skipped_and_counted(folder):
    os.symlink(folder / "nowhere.jpg", folder / "cat" / "gone.jpg")
    probe = image_folder(folder)
    assert len(probe) == 4
    assert probe.listing_skipped == {"broken links": 1}


@linux_only
def test_non_utf8_file_name_is_listed_loaded_and_labelled(folder):
    name = os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (8, 8), (10, 200, 30)).save(folder / "cat" / name)
    probe = image_folder(folder)
    assert len(probe) == 5
    index = [probe.item_label(i) for i in range(len(probe))].index("cat/caf\ufffd.png")
    assert probe.load_image(index).getpixel((0, 0)) == (10, 200, 30)
    assert image_folder(folder).fingerprint == probe.fingerprint


def test_very_deep_tree_is_listed_without_recursion_and_bounded(tmp_path):
    deep = tmp_path / "probe"
    path = deep
    for _ in range(MAX_FOLDER_DEPTH + 5):
        path = path / "d"
    path.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(path / "too_deep.png")
    Image.new("RGB", (8, 8)).save(deep / "d" / "shallow.png")
    probe = image_folder(deep)
    assert [probe.item_label(i) for i in range(len(probe))] == ["d/shallow.png"]
    assert probe.listing_skipped == {f"folders deeper than {MAX_FOLDER_DEPTH} levels": 1}


def test_unreadable_subfolder_is_skipped_and_counted(folder, monkeypatch):
    from dissect_core.engine import probe_sets

    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "dog":  # as for a folder without read permission (root reads all)
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(probe_sets.os, "scandir", scandir)
    probe = image_folder(folder)
    assert len(probe) == 2
    assert probe.listing_skipped == {"unreadable folders": 1}


def test_skipped_listing_is_a_warning_of_the_run(tmp_path):
    from test_faults_cache import config_for  # the planted dissection
    from dissect_core.engine.pipeline import describe
    from planted import make_planted_probe, write_concepts

    make_planted_probe(tmp_path / "p" / "probe", per_colour=6)
    planted = (tmp_path / "p", write_concepts(tmp_path / "p" / "concepts.txt"))
    if sys.platform == "linux":
        os.symlink(tmp_path / "missing", tmp_path / "p" / "probe" / "red" / "broken.png")
    else:
        pytest.skip("needs symlinks")
    result = describe(config_for(planted, tmp_path))
    assert result.warnings == ["Skipped while listing probe: 1 broken links."]
    assert result.run.manifest.probe.listing_skipped == {"broken links": 1}


# --------------------------------------------------------------------------- image modes

def _mode_image(mode: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """An image in ``mode`` whose correct RGB value is the second element."""
    if mode == "I;16":
        return Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)), (128, 128, 128)
    if mode == "I;16B":
        return Image.frombytes("I;16B", (4, 4), (40000).to_bytes(2, "big") * 16), (156, 156, 156)
    if mode == "I":
        return Image.fromarray(np.full((4, 4), 65535, dtype=np.int32), "I"), (255, 255, 255)
    if mode == "I (wide range)":
        values = np.array([[-1000, 1000]] * 2, dtype=np.int32)
        return Image.fromarray(values, "I"), (0, 0, 0)  # min-max scaled: the first pixel is the minimum
    if mode == "F":
        return Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F"), (128, 128, 128)
    if mode == "P with transparency":
        image = Image.new("P", (4, 4), 0)
        image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        image.info["transparency"] = 0  # palette entry 0 (black) is transparent
        return image, (255, 255, 255)
    if mode == "LA":
        return Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)  # fully transparent black
    if mode == "RGBA half":
        return Image.new("RGBA", (4, 4), (0, 0, 0, 128)), (127, 127, 127)
    if mode == "CMYK":
        return Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)
    if mode == "L":
        return Image.new("L", (4, 4), 77), (77, 77, 77)
    raise ValueError(mode)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "I (wide range)", "F", "P with transparency", "LA",
                                  "RGBA half", "CMYK", "L"])
def test_image_modes_convert_to_the_right_rgb(mode):
    image, expected = _mode_image(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == pytest.approx(expected, abs=1)


def test_sixteen_bit_png_in_a_probe_folder_is_not_white(tmp_path):
    (tmp_path / "probe").mkdir()
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "probe" / "ramp16.png")
    pixels = np.asarray(image_folder(tmp_path / "probe").load_image(0))
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert abs(float(pixels.mean()) - 127.5) < 2  # a ramp, not "almost white"


# --------------------------------------------------------------------------- concept lists

@pytest.mark.parametrize("separator, kept", [
    ("\f", "dog\fcat"), ("\u2028", "dog\u2028cat"), ("\x85", "dog\x85cat"), ("\x1c", "dog\x1ccat"),
    ("\v", "dog\vcat"),
])
def test_concepts_split_on_line_endings_only(separator, kept):
    concepts = parse_concepts(f"{kept}\nsky\n", "list")
    assert concepts.concepts == (kept, "sky")


@pytest.mark.parametrize("text", ["dog\ncat\nsky", "dog\r\ncat\r\nsky\r\n", "dog\rcat\rsky\r", "dog\ncat\r\nsky\r"])
def test_concepts_split_on_every_line_ending_the_original_reads(text):
    concepts = parse_concepts(text, "list")
    assert concepts.concepts == ("dog", "cat", "sky")
    assert concepts.blank_lines_dropped == 0


# --------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def bad_weight_files(tmp_path_factory) -> dict[str, Path]:
    import safetensors.torch
    import open_clip

    root = tmp_path_factory.mktemp("bad_weights")
    files = {
        "text": ("model.pth", b"<html><body>404 Not Found</body></html>\n"),
        "empty": ("model.pth", b""),
        "random bytes": ("model.pth", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))),
        "damaged zip": ("model.npz", b"PK\x03\x04" + b"\x00" * 64),
    }
    out = {}
    for name, (filename, data) in files.items():
        folder = root / name.replace(" ", "_")
        folder.mkdir()
        (folder / filename).write_bytes(data)
        out[name] = folder / filename
    register_tiny_clip()
    good = root / "good.safetensors"
    safetensors.torch.save_file(open_clip.create_model("tiny-test-clip").state_dict(), good)
    data = good.read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated safetensors"] = root / "truncated.safetensors"
    (root / "bad.npz").write_bytes(data[:100])
    out["npz that is not an npz"] = root / "bad.npz"
    return out


EXPECTED = {
    "text": "is a text file, not a weight file",
    "empty": "is empty",
    "random bytes": "is damaged or not a weight file",
    "damaged zip": "is damaged or not a weight file",
    "truncated safetensors": "is damaged or not a weight file",
    "npz that is not an npz": "is damaged or not a weight file",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_bad_target_checkpoint_is_a_clear_error(bad_weight_files, kind):
    with pytest.raises(InvalidInputError, match=EXPECTED[kind]) as error:
        load_target_model("resnet18", bad_weight_files[kind])
    assert "The checkpoint cannot be loaded" in str(error.value)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_bad_clip_checkpoint_is_a_clear_error(bad_weight_files, kind):
    with pytest.raises(InvalidInputError, match=EXPECTED[kind]) as error:
        load_clip(f"tiny-test-clip:{bad_weight_files[kind]}", "cpu")
    assert "Cannot load CLIP model tiny-test-clip" in str(error.value)


# --------------------------------------------------------------------------- flags

@pytest.mark.parametrize("flags, message", [
    (["--num_workers", "-1"], "--num_workers must be 0"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--target_layers", ","], "No target layers given"),
    (["--target_layers", "layer4,layer4"], "listed twice"),
    (["--target_layers", "layer4,../../x"], "--target_layers: the layer '../../x' is not a plain module name"),
    (["--top_images", "0"], "top_images must be at least 1"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, flags, message):
    code = main(["describe", "--d_probe", str(tmp_path), "--device", "cpu", "--activation_dir",
                 str(tmp_path / "cache"), "--result_dir", str(tmp_path / "results"), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
