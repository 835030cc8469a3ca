"""dissect sweep on one machine: a spec's runs, in order, as describe writes them, from one
pass over the probe images; restarts that compute only what is missing; interruptions that
leave no half-written run; a spec's problems reported together with their lines. The
stand-ins are in sweep_setup.py; the Ray path is tested in test_sweep_ray.py."""
from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from dissect_core.cli import main
from dissect_core.common.errors import InvalidInputError
from dissect_core.engine import pipeline
from dissect_core.engine.activations import ProbeRecorder, TargetLayers, record_probe_pass
from dissect_core.engine.layer_rules import resolve_rule, stage_ends
from dissect_core.engine.models import load_target_model
from dissect_core.engine.probe_loading import probe_loader
from dissect_core.engine.probe_sets import image_folder
from dissect_core.engine.recording import resolve_layouts
from dissect_core.engine.sweep import STAGING_PREFIX, read_spec, run_sweep
from dissect_core.runs.run_folders import find_runs, load_run
from dissect_core.runs.sweep_index import ENTRY_FILE, read_sweep

from sweep_setup import BATCH, FOLDERS, N_IMAGES, STAGED, STEPS, make_sweep_inputs, write_spec


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        yield root, make_sweep_inputs(root)


@pytest.fixture(scope="module")
def swept(inputs):
    """The reference sweep and its result. Tests that change anything work on copies."""
    root, clip = inputs
    spec = write_spec(root, clip, "swept")
    return spec, run_sweep(spec)


def files_of(folder):
    return {path.relative_to(folder).as_posix(): path.stat().st_mtime_ns
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_sweep_writes_each_models_run_in_order_with_its_resolved_layers(inputs, swept, capsys):
    root, clip = inputs
    runs = read_sweep(root / "swept")
    # Checkpoints of the glob come in training-step order (their file names sort as 0, 100, 50).
    assert [run.entry.folder for run in runs] == FOLDERS
    assert [run.entry.step for run in runs] == [None, *STEPS]
    assert [run.entry.position for run in runs] == [0, 1, 2, 3]
    staged = runs[0]
    assert staged.entry.layer_rule == "stage_ends"
    assert staged.entry.layers == staged.run.manifest.layers == ["stage2.3", "stage3.7", "stage4.3"]
    for run in runs[1:]:
        assert run.run.layers == ["conv1", "conv3", "fc"]
        assert run.run.label == run.entry.folder  # name = "small_cnn_step_{step}"
        assert run.run.manifest.target_checkpoint.endswith(f"step_{run.entry.step}.pt")
    # The app lists them as finished runs, and nothing else.
    found, problems = find_runs(root / "swept")
    assert sorted(run.path.name for run in found) == sorted(FOLDERS) and problems == []


def test_the_probe_images_are_decoded_once_and_clip_runs_once_for_the_whole_sweep(swept):
    _, result = swept
    # Four models, one pass: each image decoded once, CLIP over each batch once, the concepts once.
    assert result.computed == FOLDERS and result.kept == []
    assert (result.probe_passes, result.images_decoded) == (1, N_IMAGES)
    assert result.clip_batches == math.ceil(N_IMAGES / BATCH)
    assert result.concept_encodings == 1


def test_a_sweeps_run_is_the_run_describe_writes(inputs, swept, tmp_path):
    root, clip = inputs
    checkpoint = root / "checkpoints" / "step_50.pt"
    assert main(["describe", "--target_model", "small_cnn", "--target_checkpoint", str(checkpoint),
                 "--target_layers", "conv1,conv3,fc", "--clip_model", clip, "--d_probe", str(root / "probe"),
                 "--concept_set", str(root / "concepts.txt"), "--device", "cpu", "--batch_size", str(BATCH),
                 "--num_workers", "0", "--top_images", "5", "--top_maps", "3", "--similarity_param", "top_k=5",
                 "--quality_resamples", "2",
                 "--activation_dir", str(tmp_path / "cache"), "--result_dir", str(tmp_path / "runs"),
                 "--quiet"]) == 0
    described = load_run(next((tmp_path / "runs").iterdir()))
    swept_run = load_run(root / "swept" / "small_cnn_step_50")
    for table in ("descriptions", "top_concepts", "top_images", "unit_stats", "label_quality"):
        pd.testing.assert_frame_equal(getattr(swept_run, table), getattr(described, table))
    assert swept_run.manifest.cache_keys == described.manifest.cache_keys


def test_a_restarted_sweep_computes_nothing_finished(inputs, swept, capsys):
    root, _ = inputs
    swept, _ = swept
    before = files_of(root / "swept"), files_of(root / "swept-cache")
    capsys.readouterr()
    assert main(["sweep", str(swept), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 run(s) computed, 4 kept; 0 pass(es) over the probe images" in out
    after = files_of(root / "swept"), files_of(root / "swept-cache")
    assert after[1] == before[1]  # no cache entry written or rewritten
    assert {name: stamp for name, stamp in after[0].items() if name != "sweep.json"} == \
        {name: stamp for name, stamp in before[0].items() if name != "sweep.json"}


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "full disk"])
def test_an_interrupted_sweep_leaves_no_half_written_run_and_resumes(inputs, tmp_path, monkeypatch, failure):
    root, clip = inputs
    spec = write_spec(root, clip, "interrupted", out=tmp_path)
    shutil.copytree(root / "swept-cache", tmp_path / "interrupted-cache")  # the probe pass is not what is tested
    written = []
    real_write_run = pipeline.write_run

    def failing_write_run(run_dir, *args, **kwargs):
        written.append(run_dir)
        if len(written) == 3:  # the third run: its maps are written, its tables not
            raise failure
        return real_write_run(run_dir, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_run", failing_write_run)
    with pytest.raises(type(failure)):
        run_sweep(spec)
    result_dir = tmp_path / "interrupted"
    assert sorted(path.name for path in result_dir.iterdir()) == sorted([*FOLDERS[:2], "sweep.json"])
    found, problems = find_runs(result_dir)
    assert len(found) == 2 and problems == []
    kept = files_of(result_dir / FOLDERS[0])

    monkeypatch.setattr(pipeline, "write_run", real_write_run)
    result = run_sweep(spec)
    assert result.computed == FOLDERS[2:] and result.kept == FOLDERS[:2]
    assert files_of(result_dir / FOLDERS[0]) == kept
    for folder in FOLDERS:
        fresh, reference = load_run(result_dir / folder), load_run(root / "swept" / folder)
        pd.testing.assert_frame_equal(fresh.descriptions, reference.descriptions)


def test_a_killed_sweeps_staging_folder_is_removed_by_the_next(inputs, swept, tmp_path):
    root, _ = inputs
    swept, _ = swept
    shutil.copytree(root / "swept", tmp_path / "swept")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names a process that is gone
    leftover = tmp_path / "swept" / f"{STAGING_PREFIX}{dead.pid}-{FOLDERS[0]}"
    (leftover / "maps").mkdir(parents=True)
    spec = tmp_path / "spec.toml"
    spec.write_text(swept.read_text().replace(str(root / "swept") + '"', str(tmp_path / "swept") + '"'))
    run_sweep(spec)
    assert not leftover.exists()


def test_layer_rules_pick_each_familys_last_blocks():
    import torchvision

    expected = {
        "resnet18": ["layer1.1", "layer2.1", "layer3.1", "layer4.1"],
        "convnext_tiny": ["features.1.2", "features.3.2", "features.5.8", "features.7.2"],
        "swin_t": ["features.1.1", "features.3.1", "features.5.5", "features.7.1"],
        "vit_b_16": ["encoder.layers.encoder_layer_11"],
    }
    for name, layers in expected.items():
        with torch.device("meta"):  # the structure alone
            model = torchvision.models.get_model(name)
        assert stage_ends(model) == layers, name
        assert all(dict(model.named_modules()).get(layer) is not None for layer in layers)
    with torch.device("meta"):
        plain = torchvision.models.get_model("vgg11")
    with pytest.raises(InvalidInputError, match="matches no layer of vgg11"):
        resolve_rule("stage_ends", plain, "vgg11")


def test_records_from_split_shuffled_batches_merge_into_the_one_pass_result(inputs):
    """What workers return, merged in any order, is the one-machine pass's result exactly."""
    root, _ = inputs
    probe = image_folder(root / "probe")
    model = load_target_model("small_cnn", root / "checkpoints" / "step_50.pt")
    sample = model.preprocess(probe.load_image(0)).unsqueeze(0)
    targets = [TargetLayers(model, resolve_layouts(model.module, ["conv1", "fc"], sample, "max"))]
    whole = record_probe_pass(probe, targets=targets, pool_mode="max", top_maps=4, batch_size=4, num_workers=0)

    recorder = ProbeRecorder(targets, None, "max", 4, len(probe), torch.device("cpu"))
    with recorder:
        parts = [recorder.record(batch) for batch in probe_loader(probe, recorder.transforms, 4, 0)]
    random.Random(0).shuffle(parts)
    merged = recorder.empty()
    for part in parts:
        merged.merge(part, 4)
    split = merged.finish(targets, probe, 0.0)
    for layer in ("conv1", "fc"):
        mine, theirs = split.layers[0][layer], whole.layers[0][layer]
        for name in ("pooled", "image_indices", "mask_threshold", "maps", "map_images"):
            a, b = getattr(mine, name), getattr(theirs, name)
            assert (a is None and b is None) or torch.equal(a, b), (layer, name)


# ----------------------------------------------------------------------------- bad input


def spec_problems(path) -> str:
    with pytest.raises(InvalidInputError) as error:
        run_sweep(path)
    return str(error.value)


def test_every_problem_of_a_spec_is_reported_at_once_with_its_line(inputs, tmp_path):
    root, clip = inputs
    spec = write_spec(root, clip, "bad", out=tmp_path, pool_mode='"median"', targt_layers='"conv1"', models=f'''
[[model]]
target_model = "{STAGED}"
layer_rule = "stage_end"

[[model]]
target_model = "small_cnn"
target_checkpoint = "{root}/checkpoints/nothing_*.pt"

[[model]]
target_model = "small_cnn"
target_checkpoint = "{root}/checkpoints/step_0.pt"
batch_size = "eight"
result_dir = "elsewhere"

[[model]]
target_model = "small_cnn"
target_checkpoint = "{root}/checkpoints/step_50.pt"
name = "same"

[[model]]
target_model = "small_cnn"
target_checkpoint = "{root}/checkpoints/step_100.pt"
name = "same"
''')
    text = spec.read_text().splitlines()

    def line(fragment, after=0):
        return next(number for number, content in enumerate(text, start=1) if fragment in content and number > after)

    message = spec_problems(spec)
    expected = [
        (line("pool_mode"), "pool_mode: Unknown pool mode 'median': use one of avg, max, cls, mean"),
        (line("targt_layers"), "unknown key 'targt_layers'. Did you mean target_layers?"),
        (line("layer_rule"), "unknown layer_rule 'stage_end': use one of stage_ends, blocks"),
        (line("nothing_*"), "matches no file"),
        (line('"eight"'), "batch_size is a whole number, not 'eight'"),
        (line("elsewhere"), "result_dir is shared by the whole sweep: set it in [setup]"),
        (line("[[model]]", line("step_100") - 3), "would both be 'same': give them different names"),
    ]
    assert f"has {len(expected)} problem(s); nothing was computed" in message
    reported = message.splitlines()[1:]
    for number, words in expected:
        assert any(item.startswith(f"  line {number}: ") and words in item for item in reported), (number, words)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad-cache").exists()


def test_models_that_cannot_be_loaded_or_whose_layers_do_not_exist_are_reported_before_any_work(inputs, tmp_path):
    root, clip = inputs
    (tmp_path / "broken.pt").write_text("not weights")
    spec = write_spec(root, clip, "unloadable", out=tmp_path, models=f'''
[[model]]
target_model = "small_cnn"
target_checkpoint = "{tmp_path}/broken.pt"
target_layers = "conv1"

[[model]]
target_model = "small_cnn"
target_checkpoint = "{root}/checkpoints/step_0.pt"
layer_rule = "stage_ends"

[[model]]
target_model = "{STAGED}"
target_layers = "layer9"
''')
    text = spec.read_text().splitlines()

    def line(fragment):
        return next(number for number, content in enumerate(text, start=1) if fragment in content)

    message = spec_problems(spec)
    assert "has 3 problem(s)" in message
    assert (f"line {line('broken.pt')}: small_cnn_broken: the model cannot be loaded: target_checkpoint: The "
            f"checkpoint cannot be loaded: {tmp_path / 'broken.pt'} is a text file") in message
    assert (f"line {line('stage_ends')}: small_cnn_step_0: layer_rule 'stage_ends' matches no layer "
            "of small_cnn") in message
    assert f"line {line('layer9')}: {STAGED}: target_layers: The model has no layer 'layer9'" in message
    assert not (tmp_path / "unloadable").exists() and not (tmp_path / "unloadable-cache").exists()


def test_a_run_folder_made_with_other_settings_is_not_taken_for_finished(inputs, swept, tmp_path):
    root, clip = inputs
    shutil.copytree(root / "swept", tmp_path / "swept")
    spec = write_spec(root, clip, "swept", out=tmp_path, top_images="4")  # the same folders, another setting
    message = spec_problems(spec)
    assert message.count("holds a run made with other settings") == 4


def test_without_ray_the_ray_option_says_how_to_install_it(inputs, swept, monkeypatch, capsys):
    swept, _ = swept
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    assert main(["sweep", str(swept), "--ray", "--quiet"]) == 2
    assert "pip install 'clip-dissect-explorer[ray]'" in capsys.readouterr().err


def test_a_sweep_entry_records_the_run_it_belongs_to(inputs, swept):
    root, _ = inputs
    swept, _ = swept
    entry = json.loads((root / "swept" / "small_cnn_step_100" / ENTRY_FILE).read_text())
    assert (entry["position"], entry["step"], entry["layers"]) == (3, 100, ["conv1", "conv3", "fc"])
    assert entry["identity"] == read_spec(swept).models[3].identity
    assert os.path.isabs(json.loads((root / "swept" / "sweep.json").read_text())["spec"])
