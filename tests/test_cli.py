"""``python -m dissect_core describe`` with the reference's flags, on stand-ins that go
through the real loading code (a Places365-layout checkpoint, an open_clip checkpoint
file, a synthetic image folder)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from dissect_core.engine import downloads
from dissect_core.cli import build_parser, configs_from_args, main
from dissect_core.choices.catalog import with_source_defaults
from dissect_core.runs.run_folders import load_run

from standins import (add_corrupt_files, make_image_folder, make_tiny_clip_checkpoint, place_torchvision_weights,
                      save_places_style_checkpoint)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    save_places_style_checkpoint(data / "resnet18_places365.pth.tar")
    clip = make_tiny_clip_checkpoint(root / "tiny_clip.pt")
    make_image_folder(root / "probe", 120, size=(48, 48))
    add_corrupt_files(root / "probe" / "cat")
    (root / "concepts.txt").write_text("dog\ncat\nstripes\n\nsky\nwater\ndog\n")
    return root, clip


def reference_command(root: Path, clip: str) -> list[str]:
    return [
        "describe", "--clip_model", clip, "--target_model", "resnet18_places",
        "--target_layers", "layer3,layer4", "--d_probe", str(root / "probe"),
        "--concept_set", str(root / "concepts.txt"), "--batch_size", "32", "--device", "cpu",
        "--activation_dir", str(root / "saved_activations"), "--result_dir", str(root / "results"),
        "--pool_mode", "avg", "--similarity_fn", "soft_wpmi", "--data_dir", str(root / "data"),
        "--num_workers", "0", "--quiet",
    ]


def test_defaults_are_the_reference_tools():
    args = build_parser().parse_args(["describe"])
    (config,) = [with_source_defaults(config) for config in configs_from_args(args)]
    assert (config.clip_model, config.target_model, config.target_layers, config.d_probe, config.concept_set) == (
        "ViT-B/16", "resnet50", ("conv1", "layer1", "layer2", "layer3", "layer4"), "broden", "data/20k.txt")
    assert (config.batch_size, config.device, config.activation_dir, config.result_dir, config.pool_mode,
            config.similarity_fn) == (200, "cuda", "saved_activations", "results", "avg", "soft_wpmi")


def test_labelled_probes_default_to_their_labels_and_auprc():
    # docs/labelled_scores.md: auprc keeps labels on held-out images best on the demo.
    args = build_parser().parse_args(["describe", "--concept_source", "labels"])
    (config,) = [with_source_defaults(config) for config in configs_from_args(args)]
    assert (config.concept_set, config.similarity_fn) == (None, "auprc")
    args = build_parser().parse_args(["describe", "--concept_source", "labels", "--similarity_fn", "soft_wpmi"])
    assert with_source_defaults(configs_from_args(args)[0]).similarity_fn == "soft_wpmi"


def test_describe_end_to_end_on_standins(standins, capsys, monkeypatch):
    root, clip = standins
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network was checked"))
    assert main(reference_command(root, clip)) == 0
    out, err = capsys.readouterr()
    assert "layer3: 256 units" in out and "layer4: 512 units" in out
    assert "warning: Skipped 2 unreadable image(s)" in err
    # 120 probe images give no label-quality figures: the run says so, why, and what to do.
    (skipped,) = [line for line in out.splitlines() if line.startswith("Skipped ")]
    assert skipped.startswith("Skipped label quality: Layer layer3: the quality figures need at least 200")
    assert skipped.endswith("this run has 120. Use a probe set of at least 200 readable images (--d_probe) to have them.")
    run_dir = next((root / "results").iterdir())
    assert not (run_dir / "label_quality.csv").exists()
    run = load_run(run_dir)
    assert run.layers == ["layer3", "layer4"]
    assert len(run.descriptions) == 256 + 512
    assert set(run.descriptions["description"]) <= {"dog", "cat", "stripes", "sky", "water"}
    assert json.loads((run_dir / "args.txt").read_text())["target_layers"] == ["layer3", "layer4"]
    assert run.manifest.concept_set.duplicates_dropped == 1

    # The same command again is served from the cache.
    assert main(reference_command(root, clip)) == 0
    assert "Reused from the cache: activations layer3, activations layer4" in capsys.readouterr().out


def test_cuda_without_gpu_names_the_fix(standins, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    root, clip = standins
    command = reference_command(root, clip)
    command[command.index("--device") + 1] = "cuda"
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err


def test_unknown_layer_lists_valid_names(standins, capsys):
    root, clip = standins
    command = reference_command(root, clip)
    command[command.index("--target_layers") + 1] = "layer4,layer5"
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "layer5" in err and "layer4" in err and "fc" in err


def test_offline_missing_weights_fail_within_seconds(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: False)
    make_image_folder(tmp_path / "probe", 4)
    (tmp_path / "concepts.txt").write_text("dog\n")
    start = time.monotonic()
    code = main(["describe", "--target_model", "resnet18_places", "--data_dir", str(tmp_path / "empty"),
                 "--d_probe", str(tmp_path / "probe"), "--concept_set", str(tmp_path / "concepts.txt"),
                 "--device", "cpu", "--activation_dir", str(tmp_path / "c"), "--result_dir", str(tmp_path / "r")])
    assert code == 2 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "resnet18_places365.pth.tar" in err and "places2.csail.mit.edu" in err


def test_the_standard_comparison_is_one_command(standins, tmp_path, capsys, monkeypatch):
    # ImageNet and Places365 ResNet18s over one probe pass: one run folder each.
    root, clip = standins
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network was checked"))
    place_torchvision_weights("resnet18")
    command = reference_command(root, clip)
    command[command.index("--target_model") + 1] = "resnet18,resnet18_places"
    command[command.index("--target_layers") + 1] = "layer4"
    command[command.index("--result_dir") + 1] = str(tmp_path / "results")
    command[command.index("--activation_dir") + 1] = str(tmp_path / "cache")
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "resnet18:" in out and "resnet18_places:" in out
    runs = [load_run(path) for path in sorted((tmp_path / "results").iterdir())]
    assert sorted(run.target_model for run in runs) == ["resnet18", "resnet18_places"]
    assert all(len(run.descriptions) == 512 for run in runs)
    assert runs[0].manifest.target_weights_sha256 != runs[1].manifest.target_weights_sha256
    assert len(list((tmp_path / "cache" / "clip_images").glob("*.pt"))) == 1


@pytest.mark.parametrize("models, checkpoints, expected", [
    ("resnet18,,resnet18_places", None, "empty name"),
    ("resnet18,resnet18", None, "lists a model twice"),
    ("resnet18,resnet18_places", "a.pt", "1 file(s) for 2 model(s)"),
])
def test_a_bad_model_list_says_how_to_write_it(standins, capsys, models, checkpoints, expected):
    root, clip = standins
    command = reference_command(root, clip)
    command[command.index("--target_model") + 1] = models
    if checkpoints:
        command += ["--target_checkpoint", checkpoints]
    assert main(command) == 2
    assert expected in capsys.readouterr().err


def test_a_closed_pipe_ends_the_listing_quietly():
    # `dissect list | head -1`: the reader is gone before anything is written.
    process = subprocess.Popen([sys.executable, "-m", "dissect_core", "list"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and err.decode() == ""


def test_python_dash_m_entry_point(tmp_path):
    # The module entry point itself, in a fresh interpreter.
    result = subprocess.run(
        [sys.executable, "-m", "dissect_core", "describe", "--help"], cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0
    for flag in ("--clip_model", "--target_model", "--target_layers", "--d_probe", "--concept_set",
                 "--batch_size", "--device", "--activation_dir", "--result_dir", "--pool_mode", "--similarity_fn"):
        assert flag in result.stdout


# `python -m dissect_core ARGS`, then which of torch and open_clip it imported (on stderr).
_RUN_AND_REPORT_IMPORTS = """
import runpy, sys
try:
    runpy.run_module("dissect_core", run_name="__main__")
except SystemExit as done:
    code = done.code
print("imported:", *sorted({"torch", "open_clip"} & set(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("args, says", [(["--help"], "describe"), (["--version"], "dissect 0."),
                                        (["list"], "soft_wpmi"), (["list", "--markdown"], "| probe set |"),
                                        (["describe", "--help"], "--similarity_fn")])
def test_help_version_and_list_answer_without_torch(args, says):
    # Users type --help constantly: it must not wait for torch and open_clip to load (seconds).
    result = subprocess.run([sys.executable, "-c", _RUN_AND_REPORT_IMPORTS, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "imported:"


def test_the_cli_prints_the_run_summary(tmp_path, capsys, monkeypatch):
    # The summary is built once (DescribeResult.summary); the CLI prints it as it is.
    import pandas as pd

    from dissect_core.engine import pipeline, prerequisites
    from dissect_core.runs.run import Run

    descriptions = pd.DataFrame({"layer": ["layer4"] * 3, "unit": [0, 1, 2],
                                 "description": ["dog", "dog", "sky"], "similarity": [1.0, 2.0, 3.0]})
    result = pipeline.DescribeResult(tmp_path / "run", Run("r", descriptions), {"load": 1.25},
                                     ["CLIP text features"], ["cat/broken.jpg"], ["The cached entry x was damaged"])
    monkeypatch.setattr(pipeline, "describe_together", lambda configs, progress: [result])
    monkeypatch.setattr(prerequisites, "require_prerequisites", lambda configs: [])  # the defaults' files are absent
    assert main(["describe", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"Wrote {tmp_path / 'run' / 'descriptions.csv'}",
                                "layer4: 3 units, 2 distinct concepts",
                                "Reused from the cache: CLIP text features", "Timings: load 1.2 s"]
    assert err.splitlines() == ["warning: The cached entry x was damaged",
                                "warning: Skipped 1 unreadable image(s), e.g. cat/broken.jpg"]
    assert [line.text for line in result.summary()] == [*out.splitlines()[:3], "The cached entry x was damaged",
                                                        "Skipped 1 unreadable image(s), e.g. cat/broken.jpg",
                                                        out.splitlines()[3]]


def test_evaluate_reports_quality_and_the_output_layer_check(tmp_path, capsys, computed_run):
    from dissect_core.runs.run_folders import write_run

    # The computed run has too few probe images for quality figures: evaluate says so.
    assert main(["evaluate", str(computed_run["run_dir"])]) == 0
    out = capsys.readouterr().out
    assert "Label quality: none" in out and "at least 200 probe images" in out
    assert "not applicable" in out

    # A planted classifier: units 0-2 labelled with their class, unit 3 has it second.
    run_dir = tmp_path / "classifier"
    run_dir.mkdir()
    classes = ["cat", "dog", "car", "tree"]
    labels = ["cat", "dog", "car", "car"]
    descriptions = pd.DataFrame({"layer": "fc", "unit": range(4), "description": labels, "similarity": 1.0})
    top = pd.DataFrame([("fc", u, 0, labels[u], 2.0) for u in range(4)] + [("fc", 3, 1, "tree", 1.0)],
                       columns=["layer", "unit", "rank", "concept", "score"])
    write_run(run_dir, descriptions, args={}, manifest=None, top_concepts=top)
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    assert main(["evaluate", str(run_dir), "--class_names", str(tmp_path / "classes.txt")]) == 0
    assert "fc (4 units): top-1 75.0%, top-5 100.0%" in capsys.readouterr().out
    (tmp_path / "short.txt").write_text("cat\n\ndog\n")
    assert main(["evaluate", str(run_dir), "--class_names", str(tmp_path / "short.txt")]) == 2
    assert "line 2 is blank" in capsys.readouterr().err


def test_progress_draws_bars_only_on_a_terminal():
    import io

    from dissect_core.common.progress import TqdmProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, terminal in ((io.StringIO(), False), (Terminal(), True)):
        progress = TqdmProgress(stream, leave=False)
        for done in range(0, 101, 10):
            progress("activations resnet18", done, 100)
        progress.write("warning: a note")
        progress.close()
        text = stream.getvalue()
        if terminal:
            assert "\r" in text and "%|" in text  # tqdm's bar
        else:  # a log: one line for the finished stage, no bar
            lines = text.splitlines()
            assert len(lines) == 2 and lines[0].startswith("activations resnet18: 100 in ") and "\r" not in text
            assert lines[1] == "warning: a note"


def test_describe_prints_warnings_as_they_happen_without_quiet(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from dissect_core.common.progress import log
    from dissect_core.engine import pipeline, prerequisites
    from dissect_core.runs.run import Run

    descriptions = pd.DataFrame({"layer": ["l"], "unit": [0], "description": ["dog"], "similarity": [1.0]})
    result = pipeline.DescribeResult(tmp_path / "run", Run("r", descriptions), {}, [], [], ["damaged entry"])

    def describe_together(configs, progress):
        log.warning("damaged entry")  # as the pipeline logs it, mid-run
        return [result]

    monkeypatch.setattr(pipeline, "describe_together", describe_together)
    monkeypatch.setattr(prerequisites, "require_prerequisites", lambda configs: [])  # the defaults' files are absent
    assert main(["describe"]) == 0
    assert capsys.readouterr().err.splitlines() == ["warning: damaged entry", "warning: damaged entry"]
    assert main(["describe", "--quiet"]) == 0  # only in the summary
    assert capsys.readouterr().err.splitlines() == ["warning: damaged entry"]
