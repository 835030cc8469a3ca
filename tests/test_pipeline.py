"""End to end through dissect_core.engine.pipeline.describe on a dissection with a known answer."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.pipeline import DescribeConfig, describe
from dissect_core.engine.probe_sets import open_probe_spec
from dissect_core.runs.run_folders import load_run
from dissect_core.runs.side_tables import check_layer_name
from dissect_core.runs.unit_images import stored_unit_views, write_stored_maps

from planted import UNIT_COLOURS, make_planted_probe, planted_clip, planted_target, write_concepts


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    truth = make_planted_probe(root / "probe")
    concepts = write_concepts(root / "concepts.txt")
    return root, truth, concepts


def config_for(root: Path, concepts: Path, tmp: Path, **overrides) -> DescribeConfig:
    settings = dict(
        target_model=planted_target(), target_layers=("detect",), clip_model=planted_clip(),
        d_probe=str(root / "probe"), concept_set=str(concepts), device="cpu", batch_size=64,
        activation_dir=str(tmp / "cache"), result_dir=str(tmp / "results"), num_workers=0,
    )
    settings.update(overrides)
    return DescribeConfig(**settings)


@pytest.mark.parametrize("similarity_fn", ["soft_wpmi", "wpmi", "cos_similarity", "cos_similarity_cubed"])
def test_pipeline_recovers_planted_concepts(planted, tmp_path, similarity_fn):
    root, truth, concepts = planted
    result = describe(config_for(root, concepts, tmp_path, similarity_fn=similarity_fn))

    descriptions = result.run.descriptions
    assert descriptions["description"].tolist() == UNIT_COLOURS
    assert descriptions["unit"].tolist() == list(range(len(UNIT_COLOURS)))
    # Each unit's most activating images are images of its colour.
    probe = open_probe_spec(result.run.manifest.probe.spec)
    top = result.run.top_images
    for unit, colour in enumerate(UNIT_COLOURS):
        first = top[(top["unit"] == unit) & (top["rank"] < 40)]["image_index"]
        assert {truth[probe.item_label(i)][0] for i in first} == {colour}
    # Top-5 concepts start with the label.
    best = result.run.top_concepts.query("rank == 0")
    assert best["concept"].tolist() == UNIT_COLOURS


def test_run_folder_matches_the_reference_format(planted, tmp_path):
    root, _, concepts = planted
    result = describe(config_for(root, concepts, tmp_path))
    lines = (result.run_dir / "descriptions.csv").read_text().splitlines()
    assert lines[0] == "layer,unit,description,similarity"
    assert lines[1].startswith("detect,0,cyan,")
    args = json.loads((result.run_dir / "args.txt").read_text())
    assert {"clip_model", "target_model", "target_layers", "d_probe", "concept_set", "batch_size", "device",
            "activation_dir", "result_dir", "pool_mode", "similarity_fn"} <= set(args)
    assert args["target_layers"] == ["detect"]
    manifest = result.run.manifest
    assert manifest.probe.n_images == 240
    assert set(manifest.timings_s) >= {"load", "probe pass", "similarity"}
    assert len(result.run.top_images.query("layer == 'detect' and unit == 0")) == 100


def test_second_run_is_served_from_the_cache(planted, tmp_path):
    root, _, concepts = planted
    first = describe(config_for(root, concepts, tmp_path))
    second = describe(config_for(root, concepts, tmp_path))
    assert set(second.reused) == {"activations detect", "CLIP image features", "CLIP text features",
                                  "similarity detect"}
    assert first.run_dir != second.run_dir
    pd.testing.assert_frame_equal(first.run.descriptions, second.run.descriptions)


def test_new_concept_list_reuses_activations_and_image_features(planted, tmp_path):
    root, _, concepts = planted
    describe(config_for(root, concepts, tmp_path))
    fewer = write_concepts(tmp_path / "fewer.txt", ["red", "green", "blue", "yellow", "cyan", "magenta", "sky"])
    result = describe(config_for(root, fewer, tmp_path))
    assert "activations detect" in result.reused and "CLIP image features" in result.reused
    assert "CLIP text features" not in result.reused
    assert result.run.descriptions["description"].tolist() == UNIT_COLOURS


def test_changed_weights_or_probe_never_hit_a_stale_entry(planted, tmp_path):
    root, _, concepts = planted
    describe(config_for(root, concepts, tmp_path))
    retrained = planted_target()
    retrained.weights_id = "planted-weights-v2"
    result = describe(config_for(root, concepts, tmp_path, target_model=retrained))
    assert "activations detect" not in result.reused
    assert "CLIP image features" in result.reused

    probe = tmp_path / "probe-copy"
    make_planted_probe(probe, per_colour=40, seed=1)
    result = describe(config_for(root, concepts, tmp_path, d_probe=str(probe)))
    assert not any(stage.startswith(("activations", "CLIP image")) for stage in result.reused)


def test_unreadable_images_are_skipped_and_counted(planted, tmp_path):
    root, _, concepts = planted
    probe = tmp_path / "probe"
    make_planted_probe(probe)
    (probe / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = describe(config_for(root, concepts, tmp_path, d_probe=str(probe)))
    assert result.skipped_images == ["red/broken.png"]
    assert result.run.manifest.probe.n_skipped == 1
    assert result.run.descriptions["description"].tolist() == UNIT_COLOURS


def test_bad_input_fails_fast_and_leaves_the_cache_intact(planted, tmp_path):
    root, _, concepts = planted
    describe(config_for(root, concepts, tmp_path))
    cache = tmp_path / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}

    with pytest.raises(InvalidInputError, match="detect"):  # the message lists valid layers
        describe(config_for(root, concepts, tmp_path, target_layers=("layer9",)))
    with pytest.raises(InvalidInputError, match="similarity_fn"):
        describe(config_for(root, concepts, tmp_path, similarity_fn="cosine"))
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA GPU"):
            describe(config_for(root, concepts, tmp_path, device="cuda"))

    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before


def test_real_module_paths_are_plain_layer_names():
    for name in ("layer4", "layer4.1.conv2", "layer4[1]", "features.0", "blocks.0", "encoder.layers.encoder_layer_11"):
        assert check_layer_name(name, "x") == name


@pytest.mark.parametrize("kind", ["separator", "backslash", "nul", "absolute"])
def test_a_module_named_like_a_path_is_refused_before_anything_is_written(planted, tmp_path, kind):
    # torch refuses only dots in module names: a module may be called "a/b" or an absolute
    # path, and would name the run's maps/<layer>.npy.
    root, _, concepts = planted
    name = {"separator": "a/b", "backslash": "a\\b", "nul": "a\0b", "absolute": str(tmp_path / "escaped")}[kind]
    target = planted_target()
    target.module.add_module(name, target.module.detect)
    with pytest.raises(InvalidInputError, match="`target_layers`: the layer .* is not a plain module name"):
        describe(config_for(root, concepts, tmp_path, target_model=target, target_layers=(name,)))
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_stored_maps_are_never_written_under_a_layer_name_that_is_a_path(tmp_path):
    maps, images = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, dtype=torch.int64)
    top = pd.DataFrame({"layer": ["../escaped"], "unit": [0], "rank": [0], "image_index": [0]})
    with pytest.raises(InvalidInputError, match="not a plain module name"):
        write_stored_maps(tmp_path / "run", {"../escaped": (maps, images)}, top, [], 1)
    assert not list(tmp_path.rglob("*.npy"))


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels_first", "channels_last"])
def test_stored_maps_and_masks_cover_the_planted_squares(planted, tmp_path, channels_last):
    root, truth, concepts = planted
    result = describe(config_for(root, concepts, tmp_path, target_model=planted_target(channels_last=channels_last)))
    run = result.run
    assert run.manifest.layouts == {"detect": "channels_last" if channels_last else "channels_first"}
    assert run.descriptions["description"].tolist() == UNIT_COLOURS
    probe = open_probe_spec(run.manifest.probe.spec)

    # Each unit's stored maps on its top 10 images fire exactly on the planted square.
    maps = np.load(run.path / "maps" / "detect.npy").astype(np.float32)
    assert maps.shape == (len(UNIT_COLOURS), 10, 32, 32)
    for unit in range(len(UNIT_COLOURS)):
        top = run.unit_top_images("detect", unit, 10)
        for rank, index in enumerate(top["image_index"].astype(int)):
            _, (y, x, h, w) = truth[probe.item_label(index)]
            expected = np.zeros((32, 32), dtype=bool)
            expected[y:y + h, x:x + w] = True
            assert np.array_equal(maps[unit, rank] > 0, expected)
            peak = np.unravel_index(maps[unit, rank].argmax(), (32, 32))
            assert expected[peak]

    # The views drawn from them (no model) mask the square.
    unit = UNIT_COLOURS.index("yellow")
    top = run.unit_top_images("detect", unit, 3)
    shown = stored_unit_views(run.path, "detect", unit, top["image_index"].tolist(), top["activation"].tolist(),
                              run.mask_threshold("detect", unit), probe)
    assert len(shown) == 3
    for item in shown:
        _, (y, x, h, w) = truth[item.label]
        mask = np.asarray(item.mask, dtype=np.int16) == np.asarray(item.image, dtype=np.int16)
        inside = mask.all(axis=2)  # pixels the mask left untouched
        expected = np.zeros_like(inside)
        expected[y:y + h, x:x + w] = True
        iou = (inside & expected).sum() / (inside | expected).sum()
        assert iou > 0.9
        assert item.heatmap.size == item.image.size


def test_a_finished_run_is_redescribed_from_the_cache(computed_run, tmp_path):
    from dissect_core.choices.concept_sets import parse_concepts
    from dissect_core.engine.pipeline import config_from_run
    from dissect_core.runs.run_folders import load_run

    run = load_run(computed_run["run_dir"])
    new_concepts = parse_concepts("zebra\nwheel\nsky\n", "mine.txt")
    config = config_from_run(run, concept_set=new_concepts, result_dir=str(tmp_path))
    assert config.activation_dir == str(computed_run["cache"])  # the run's own cache ...
    # ... copied, so that the text features computed here are not cached for other tests.
    config.activation_dir = str(shutil.copytree(computed_run["cache"], tmp_path / "cache"))
    result = describe(config)
    assert {"activations layer4", "activations fc", "CLIP image features"} <= set(result.reused)
    assert "CLIP text features" not in result.reused
    assert set(result.run.descriptions["description"]) <= {"zebra", "wheel", "sky"}
    assert result.run.layers == run.layers
    assert result.run.manifest.concept_set.name == "mine.txt"


def test_imported_csv_cannot_be_redescribed(tmp_path):
    from dissect_core.engine.pipeline import config_from_run
    from dissect_core.runs.run_folders import load_run

    (tmp_path / "descriptions.csv").write_text("layer,unit,description,similarity\nlayer4,0,cat,0.1\n")
    with pytest.raises(InvalidInputError, match="imported from a CSV"):
        config_from_run(load_run(tmp_path))


def test_planted_units_get_trustworthy_quality_figures(planted, tmp_path):
    root, _, concepts = planted
    run = describe(config_for(root, concepts, tmp_path, quality_resamples=10)).run
    quality = run.label_quality
    assert quality["description"].tolist() == UNIT_COLOURS
    assert quality["stability"].min() >= 0.9
    assert quality["correlation"].min() > 0.5
    assert (quality["heldout_label"] == quality["description"]).all()
    layers = run.layer_quality.set_index("layer")
    assert layers.loc["detect", "stable_share"] == 1.0
    assert layers.loc["detect", "distinct_low"] <= 6 <= layers.loc["detect", "distinct_high"]
    image_ids, activation, similarity = run.quality_points("detect")
    assert activation.shape == similarity.shape == (len(image_ids), 6)
    assert run.quality_absent_reason() is None


def test_untrained_units_get_low_quality_figures(planted, tmp_path):
    root, _, concepts = planted
    torch.manual_seed(0)
    untrained = planted_target("untrained-net")
    untrained.module.detect[0].reset_parameters()  # PyTorch's random initialisation
    untrained.weights_id = "untrained"
    trained = describe(config_for(root, concepts, tmp_path, quality_resamples=10)).run.label_quality
    random = describe(config_for(root, concepts, tmp_path, target_model=untrained,
                                 quality_resamples=10)).run.label_quality
    assert random["correlation"].mean() < trained["correlation"].mean() - 0.2
    assert random["stability"].mean() <= trained["stability"].mean()


def test_absent_quality_figures_say_why(planted, tmp_path, computed_run):
    root, _, concepts = planted
    run = describe(config_for(root, concepts, tmp_path, similarity_fn="cos_similarity")).run
    assert run.label_quality is None
    assert "soft_wpmi or wpmi" in run.quality_absent_reason()
    small = load_run(computed_run["run_dir"])  # 120 probe images, top_k=100
    assert small.label_quality is None
    assert "at least 200 probe images" in small.quality_absent_reason()


def test_output_layer_check_on_a_planted_classifier(planted, tmp_path):
    """Concepts given as class names in unit order: unit i should be labelled class i."""
    root, _, _ = planted
    classes = write_concepts(tmp_path / "classes.txt", UNIT_COLOURS)
    run = describe(config_for(root, classes, tmp_path, quality_resamples=2)).run
    [check] = run.manifest.output_check
    assert (check["layer"], check["units"], check["top1"], check["top5"]) == ("detect", 6, 1.0, 1.0)
    torch.manual_seed(1)
    untrained = planted_target("untrained-net")
    untrained.module.detect[0].reset_parameters()
    untrained.weights_id = "untrained"
    run = describe(config_for(root, classes, tmp_path, target_model=untrained, quality_resamples=2)).run
    assert run.manifest.output_check[0]["top1"] <= 0.5


# --------------------------------------------------------------------------- several models, one pass


def test_two_models_share_one_probe_pass_and_match_separate_runs(planted, tmp_path, monkeypatch):
    from dissect_core.engine.pipeline import describe_together
    from dissect_core.engine.probe_sets import ProbeSet

    root, _, concepts = planted
    decoded = []
    load_image = ProbeSet.load_image
    monkeypatch.setattr(ProbeSet, "load_image", lambda self, index: decoded.append(index) or load_image(self, index))
    clip = planted_clip()
    encoded = []
    encode_image = clip.model.encode_image
    clip.model.encode_image = lambda images: encoded.append(len(images)) or encode_image(images)
    plain, channels_last = planted_target("planted-net"), planted_target("planted-cl", channels_last=True)
    configs = [config_for(root, concepts, tmp_path, target_model=model, clip_model=clip)
               for model in (plain, channels_last)]

    together = describe_together(configs)

    # Each probe image decoded once (plus the one image read to learn each model's layer layouts)
    # and seen once by CLIP, for both models.
    assert len(decoded) == 240 + 2 and sum(encoded) == 240
    assert [result.run.target_model for result in together] == ["planted-net", "planted-cl"]
    assert len({result.run_dir for result in together}) == 2
    for result, model in zip(together, (plain, channels_last)):
        alone = describe(config_for(root, concepts, tmp_path / model.name, target_model=model))
        assert result.run.descriptions["description"].tolist() == UNIT_COLOURS
        pd.testing.assert_frame_equal(result.run.descriptions, alone.run.descriptions)
        pd.testing.assert_frame_equal(result.run.top_images, alone.run.top_images)
        pd.testing.assert_frame_equal(result.run.unit_stats, alone.run.unit_stats)
        assert sorted(p.name for p in (result.run_dir / "maps").iterdir()) == \
            sorted(p.name for p in (alone.run_dir / "maps").iterdir())

    again = describe_together(configs)
    assert all({"activations detect", "CLIP image features"} <= set(result.reused) for result in again)


def test_models_described_together_must_share_the_rest(planted, tmp_path):
    from dissect_core.engine.pipeline import describe_together

    root, _, concepts = planted
    fewer = write_concepts(tmp_path / "fewer.txt", ["red", "green", "blue"])
    first = config_for(root, concepts, tmp_path)
    with pytest.raises(InvalidInputError, match="must share `concept_set`"):
        describe_together([first, config_for(root, fewer, tmp_path, target_model=planted_target("other"))])
    with pytest.raises(InvalidInputError, match="listed twice"):
        describe_together([first, config_for(root, concepts, tmp_path)])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))


def test_the_device_decoder_gives_the_same_labels_and_its_own_cache_entries(planted, tmp_path):
    root, _, concepts = planted
    pillow = describe(config_for(root, concepts, tmp_path))
    decoded = describe(config_for(root, concepts, tmp_path, decoder="torchvision"))
    assert decoded.run.descriptions["description"].tolist() == UNIT_COLOURS
    # Pixels decoded another way may differ: nothing recorded from Pillow's pixels is reused.
    assert not any(stage.startswith(("activations", "CLIP image")) for stage in decoded.reused)
    assert decoded.run.manifest.config["decoder"] == "torchvision"
    assert pillow.run.manifest.cache_keys.activations != decoded.run.manifest.cache_keys.activations
    with pytest.raises(InvalidInputError, match="pil, torchvision"):
        describe(config_for(root, concepts, tmp_path, decoder="nvjpeg"))
