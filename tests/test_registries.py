"""Named choices come from the registries: the CLI's choices, help and `list`, the CLI
reference (docs/cli.md), and a clear error listing the valid names for an unknown one, before heavy work."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from dissect_core.choices import catalog
from dissect_core.engine import downloads, pipeline
from dissect_core.engine import probe_sets
from dissect_core.choices.catalog import (CLIP_ALIASES, DECODERS, NAMED_MODELS, POOL_MODES, PROBE_SETS,
                                  SIMILARITY_FUNCTIONS, ProbeSource)
from dissect_core.cli import FLAGS, main
from dissect_core.choices.concept_sets import CONCEPT_SETS
from dissect_core.common.errors import DissectError, InvalidInputError, MissingResourceError, in_words
from dissect_core.engine.pipeline import DescribeConfig, describe
from dissect_core.engine.probe_sets import image_folder
from dissect_core.common.registry import Entry, LazyFunction

from standins import make_image_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_loading(monkeypatch):
    """Loading the target model fails the test: a bad name must be reported before it.

    The weights these commands name (resnet18, RN50) are absent here; with a network they
    would be downloaded, so they are no prerequisite missing beside the bad name (offline,
    describe would name them too, in one message: tests/test_prerequisites.py)."""
    def refuse(*args, **kwargs):
        pytest.fail("heavy work started before the bad name was reported")

    monkeypatch.setattr(pipeline, "load_target_model", refuse)
    monkeypatch.setattr(downloads, "is_reachable", lambda url, timeout=None: True)


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_list_prints_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in catalog.registries():
        assert f"{registry.kind}s:" in out
        for entry in registry:
            assert entry.name in out
    assert "top_k=100, a=10.0, lam=1.0" in out  # soft_wpmi's defaults
    assert "--imagenet_val_dir" in out and "`imagenet_val_dir`" not in out  # said as a flag


def test_cli_reference_is_generated_from_the_parser_and_the_registries():
    # docs/cli.md is what scripts/make_cli_reference.py writes now: a new flag or choice
    # without a regenerated page fails here, naming the command that fixes it.
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "make_cli_reference.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert catalog.markdown(FLAGS) in (REPO / "docs" / "cli.md").read_text(encoding="utf-8")


def test_cli_help_comes_from_the_registries(capsys):
    text = help_text("describe", capsys)
    for registry in (PROBE_SETS, NAMED_MODELS, CLIP_ALIASES, CONCEPT_SETS, SIMILARITY_FUNCTIONS, POOL_MODES):
        for name in registry.names():
            assert name in text
    for entry in SIMILARITY_FUNCTIONS:
        assert entry.description in text
    assert "(top_k=100, a=10.0, lam=1.0, min_prob=1e-07, p_start=0.998, p_end=0.97)" in text


@pytest.mark.parametrize("flag, value, registry", [
    ("--similarity_fn", "softwpmi", SIMILARITY_FUNCTIONS), ("--pool_mode", "mean_max", POOL_MODES)])
def test_unknown_choice_flag_lists_the_valid_ones(flag, value, registry, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["describe", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert value in err and "choose from" in err
    for name in registry.names():
        assert name in err


def _command(tmp_path: Path, **flags: str) -> list[str]:
    make_image_folder(tmp_path / "probe", 4)
    (tmp_path / "concepts.txt").write_text("dog\ncat\n")
    settings = {"--target_model": "resnet18", "--d_probe": str(tmp_path / "probe"),
                "--concept_set": str(tmp_path / "concepts.txt"), "--clip_model": "RN50",
                "--device": "cpu", "--activation_dir": str(tmp_path / "c"), "--result_dir": str(tmp_path / "r")}
    settings.update(flags)
    return ["describe", *(part for pair in settings.items() for part in pair)]


@pytest.mark.parametrize("flag, value, valid", [
    ("--d_probe", "brodne", PROBE_SETS.names()),
    ("--target_model", "resnet18_place", NAMED_MODELS.names()),
    ("--clip_model", "ViT-B/61", CLIP_ALIASES.names()),
    ("--concept_set", "english_2k", CONCEPT_SETS.names()),
    ("--similarity_param", "topk=3", list(SIMILARITY_FUNCTIONS.get("soft_wpmi").defaults)),
])
def test_unknown_name_through_the_cli(flag, value, valid, tmp_path, capsys, no_loading):
    assert main(_command(tmp_path, **{flag: value})) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: ") and value.split("=")[0] in err
    for name in valid:
        assert name in err


def test_library_errors_name_fields_and_the_cli_says_flags(tmp_path, capsys):
    with pytest.raises(InvalidInputError) as error:
        describe(DescribeConfig(batch_size=0))
    assert "`batch_size`" in str(error.value)
    assert in_words(error.value, FLAGS).startswith("--batch_size must be at least 1")
    assert main(_command(tmp_path, **{"--batch_size": "0"})) == 2
    assert "error: --batch_size must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, error_type, valid", [
    ("pool_mode", "mean_max", InvalidInputError, ["avg", "max"]),
    ("similarity_fn", "softwpmi", InvalidInputError, SIMILARITY_FUNCTIONS.names()),
    ("target_model", "resnet18_place", InvalidInputError, NAMED_MODELS.names()),
    ("d_probe", "brodne", InvalidInputError, PROBE_SETS.names()),
    ("clip_model", "RN05", InvalidInputError, CLIP_ALIASES.names()),
    ("concept_set", "imagenet_class", MissingResourceError, CONCEPT_SETS.names()),
])
def test_unknown_name_through_the_library(field, value, error_type, valid, tmp_path, no_loading):
    make_image_folder(tmp_path / "probe", 4)
    (tmp_path / "concepts.txt").write_text("dog\n")
    settings = dict(target_model="resnet18", d_probe=str(tmp_path / "probe"), clip_model="RN50",
                    concept_set=str(tmp_path / "concepts.txt"), device="cpu")
    settings[field] = value
    with pytest.raises(error_type) as error:
        describe(DescribeConfig(**settings))
    assert error.value.setting == field
    for name in valid:
        assert name in str(error.value)


def test_a_registered_probe_set_is_usable_by_name_everywhere(tmp_path, monkeypatch, capsys):
    # What the README shows: one registration makes a probe set known to the CLI and the library.
    make_image_folder(tmp_path / "shapes", 6)
    source = ProbeSource(lambda options: image_folder(Path(options.data_dir) / "shapes"))
    monkeypatch.setitem(PROBE_SETS._entries, "shapes", Entry("shapes", source, "six synthetic images"))
    probe = probe_sets.open_probe("shapes", data_dir=tmp_path)
    assert len(probe) == 6
    assert main(["list"]) == 0
    assert "six synthetic images" in capsys.readouterr().out
    assert "shapes" in help_text("describe", capsys)


def test_download_choices_are_the_downloadable_sets_and_named_models(capsys):
    assert "{broden,cifar100_train,cifar100_val,resnet18_places}" in help_text("download", capsys)


def test_errors_are_dissect_errors():
    # The CLI and the app catch DissectError; every registry lookup raises one.
    for registry in catalog.registries():
        with pytest.raises(DissectError, match=registry.names()[0]):
            registry.get("no such name")


def test_every_registered_implementation_imports():
    # Implementations are named by "module:function" and imported on first use, so a wrong name
    # would only show when a user picks that choice: resolve them all here.
    for registry in (PROBE_SETS, DECODERS, NAMED_MODELS, SIMILARITY_FUNCTIONS, POOL_MODES):
        for entry in registry:
            value = entry.value
            parts = ([value] if isinstance(value, LazyFunction)
                     else [getattr(value, field.name) for field in dataclasses.fields(value)])
            implementations = [part for part in parts if isinstance(part, LazyFunction)]
            assert implementations, f"{registry.kind} {entry.name} names no implementation"
            for implementation in implementations:
                assert callable(implementation.resolve()), implementation.path
