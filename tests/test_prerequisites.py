"""Every prerequisite at once: ``describe`` names all that is missing in one message before
any work, and ``dissect doctor`` prints the same checklist without running anything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dissect_core.cli import main
from dissect_core.engine import downloads, prerequisites
from dissect_core.engine.pipeline import DescribeConfig, describe
from dissect_core.engine.prerequisites import MISSING, MissingPrerequisitesError, check_prerequisites

from standins import make_image_folder, place_in_hf_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline_machine(tmp_path, monkeypatch):
    """No network, no GPU, empty torch hub and Hugging Face caches, a fresh working folder."""
    import huggingface_hub.constants

    monkeypatch.setattr(downloads, "is_reachable", lambda url, timeout=None: False)
    monkeypatch.setattr(prerequisites, "cuda_devices", lambda: (0, "a stand-in machine without a GPU"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# The reference tool's documented command, offline on a fresh machine: five things missing.
REFERENCE_FLAGS = ["--target_model", "resnet18", "--target_layers", "layer2,layer3,layer4",
                   "--d_probe", "broden", "--concept_set", "data/20k.txt", "--clip_model", "ViT-B/16"]
MISSING_ITEMS = ["device", "concept set", "probe set (Broden)", "target weights resnet18", "CLIP weights"]


def test_describe_names_every_missing_prerequisite_at_once_before_any_work(offline_machine, capsys):
    assert main(["describe", *REFERENCE_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 5 things this run needs are missing:")
    for item in MISSING_ITEMS:
        assert f"\n- {item}: " in err
    # Each with its fix, said in flags.
    assert "Use --device cpu" in err and "Pass --download to fetch it" in err
    assert "download.pytorch.org cannot be reached" in err and "huggingface.co cannot be reached" in err
    assert "--clip_model ViT-B-16-quickgelu:/path/to/open_clip_model.safetensors" in err
    assert not (offline_machine / "saved_activations").exists() and not (offline_machine / "results").exists()


def test_the_library_error_lists_the_items_with_their_settings(offline_machine):
    config = DescribeConfig(target_model="resnet18", device="cuda", concept_set="missing.txt")
    with pytest.raises(MissingPrerequisitesError) as error:
        describe(config)
    assert [item.item for item in error.value.items] == MISSING_ITEMS
    assert [item.setting for item in error.value.items] == ["device", "concept_set", "d_probe", "target_model",
                                                           "clip_model"]
    assert all(item.fix for item in error.value.items)


def test_one_missing_item_is_its_own_message_about_its_setting(offline_machine, tmp_path):
    make_image_folder(tmp_path / "probe", 4, size=(16, 16))
    (tmp_path / "weights.pth").write_bytes(b"not loaded by the check")
    config = DescribeConfig(target_model="resnet18", target_checkpoint=str(tmp_path / "weights.pth"), device="cpu",
                            d_probe=str(tmp_path / "probe"), concept_source="labels",
                            result_dir=str(tmp_path / "file" / "results"))
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(MissingPrerequisitesError) as error:
        describe(config)
    assert error.value.setting == "result_dir"
    assert str(error.value).startswith("Cannot write the run folder in ")


def test_doctor_prints_the_checklist_and_exits_1(offline_machine, capsys):
    assert main(["doctor", *REFERENCE_FLAGS]) == 1
    lines = capsys.readouterr().out.splitlines()
    marked = [line for line in lines if not line.startswith("    ")]
    assert [line.split(":")[0] for line in marked[:-1]] == [f"✗ {item}" for item in MISSING_ITEMS] + [
        "✓ cache", "✓ run folder"]
    assert sum(line.startswith("    fix: ") for line in lines) == 5
    assert marked[-1] == "5 missing: describe would stop before any work."
    assert not (offline_machine / "saved_activations").exists()  # nothing made


def test_doctor_passes_when_everything_is_there(offline_machine, capsys):
    import huggingface_hub.constants

    root = offline_machine
    make_image_folder(root / "probe", 4, size=(16, 16))
    (root / "concepts.txt").write_text("dog\ncat\n")
    (root / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (root / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"weights")
    (root / "file.bin").write_bytes(b"weights")
    place_in_hf_cache(huggingface_hub.constants.HF_HUB_CACHE, prerequisites.OPENAI_CLIP_REPOS["ViT-B-16"],
                      prerequisites.CLIP_FILES[0], root / "file.bin")
    flags = ["--target_model", "resnet18", "--d_probe", str(root / "probe"), "--concept_set", "concepts.txt",
             "--device", "cpu"]
    assert main(["doctor", *flags]) == 0
    out = capsys.readouterr().out
    assert "✗" not in out and out.count("✓") == 7 and out.endswith("0 missing: describe can start.\n")


def test_a_download_with_a_network_is_not_missing(offline_machine, monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda url, timeout=None: True)
    items = check_prerequisites([DescribeConfig(target_model="resnet18_places", d_probe="broden", download=True,
                                                device="cpu", concept_set="imagenet_classes")])
    statuses = {item.item: item.status for item in items}
    assert statuses["target weights resnet18_places"] == statuses["probe set (Broden)"] == "download"
    assert not any(item.status == MISSING for item in items)


def test_a_missing_imagenet_folder_says_it_cannot_be_downloaded(offline_machine, monkeypatch):
    monkeypatch.delenv("DISSECT_IMAGENET_VAL", raising=False)
    (item,) = [i for i in check_prerequisites([DescribeConfig(d_probe="imagenet_val", device="cpu")])
               if i.item.startswith("probe set")]
    assert item.status == MISSING and "needs a licence" in item.fix and item.setting == "imagenet_val_dir"


def test_the_check_imports_no_torch():
    # What keeps it within seconds: importing torch alone takes seconds on a loaded machine.
    code = ("import sys; from dissect_core.engine.prerequisites import check_prerequisites; "
            "from dissect_core.choices.config import DescribeConfig; "
            "check_prerequisites([DescribeConfig(device='cpu')], network=False); "
            "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_checks_look_where_the_loaders_look():
    import open_clip

    from dissect_core.choices.catalog import CLIP_ALIASES
    from dissect_core.engine import datasets

    assert prerequisites.BRODEN_IMAGES[0] == datasets.BRODEN_DIR and prerequisites.CIFAR_DIR == datasets.CIFAR_DIR
    assert prerequisites.BRODEN_URL == datasets.BRODEN_URL
    for entry in CLIP_ALIASES:
        hub = open_clip.get_pretrained_cfg(entry.value, "openai")["hf_hub"]
        assert prerequisites.OPENAI_CLIP_REPOS[entry.value] == hub.rstrip("/")
        assert f"{entry.value}-quickgelu" in open_clip.list_models()


def test_a_missing_labels_csv_is_named(offline_machine, tmp_path):
    make_image_folder(tmp_path / "probe", 4, size=(16, 16))
    items = check_prerequisites([DescribeConfig(concept_source="labels", probe_labels="labels.csv", device="cpu",
                                                d_probe=str(tmp_path / "probe"))])
    (item,) = [item for item in items if item.item == "probe labels"]
    assert item.missing and "labels.csv does not exist" in item.detail
