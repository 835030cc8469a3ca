"""Results bundles: export a comparison (a computed run and a reference CSV), import it
on "another machine" (the probe images gone, other folders) and draw the unit views from
the stored thumbnails and maps; bad bundles are refused without touching the destination."""
from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dissect_core.engine.bundle_export import export_bundle
from dissect_core.runs import bundle_format
from dissect_core.runs.bundle_format import BUNDLE_FORMAT, import_bundle
from dissect_core.runs.unit_images import unit_overlays
from dissect_core.common.errors import DissectError, InvalidInputError
from dissect_core.runs.manifest import RunManifest
from dissect_core.choices.layouts import CHANNELS_FIRST
from dissect_core.engine.recording import layer_outputs
from dissect_core.runs.run_folders import find_runs, load_run
from dissect_core.engine.unit_views import live_unit_views, probe_for_run, target_for_run
from dissect_core.runs.unit_images import stored_unit_views

REFERENCE_CSV = (
    "layer,unit,description,similarity\n"
    "layer2,0,red,0.26\nlayer2,1,\"dotted, striped\",0.21\nlayer2,2,nan,nan\n"
)


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def shared(computed_run, tmp_path_factory) -> dict:
    """Export on "this machine" from copies, delete the copies, import elsewhere."""
    root = tmp_path_factory.mktemp("bundle")
    probe = shutil.copytree(computed_run["probe"], root / "probe")
    run_dir = shutil.copytree(computed_run["run_dir"], root / "source" / computed_run["run_dir"].name)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["probe"]["spec"]["root"] = str(probe)  # the copy: deleted below
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    reference_dir = root / "source" / "resnet18_25_07_16_18_08"
    reference_dir.mkdir()
    (reference_dir / "descriptions.csv").write_text(REFERENCE_CSV)
    originals = [load_run(run_dir), load_run(reference_dir)]

    calls: list[tuple[str, int, int]] = []
    data = export_bundle(originals, progress=lambda *call: calls.append(call))
    shutil.rmtree(probe)
    shutil.rmtree(root / "source")

    dest = root / "imported"
    dest.mkdir()
    upload = io.BytesIO(data)
    upload.name = "demo.zip"
    folders = import_bundle(upload, dest)
    return {"data": data, "calls": calls, "originals": originals, "dest": dest, "folders": folders,
            "manifest": manifest}


def test_bundle_holds_the_run_files_thumbnails_and_maps(shared, computed_run):
    archive = zipfile.ZipFile(io.BytesIO(shared["data"]))
    index = json.loads(archive.read("bundle.json"))
    assert index["format"] == BUNDLE_FORMAT
    computed, reference = index["runs"]
    assert computed["folder"] == computed_run["run_dir"].name and computed["images"] is True
    assert computed["map_layers"] == ["layer4"]  # fc has no spatial map
    assert reference == {"label": "resnet18_25_07_16_18_08 · layer2 · 3 units", "folder": "resnet18_25_07_16_18_08",
                         "images": False, "why": reference["why"]}
    assert "labels only" in reference["why"]

    names = set(archive.namelist())
    prefix = f"runs/{computed['folder']}/"
    for name in ("descriptions.csv", "args.txt", "manifest.json", "top_concepts.csv", "top_images.csv",
                 "unit_stats.csv"):
        assert prefix + name in names
    assert {n for n in names if n.startswith("runs/resnet18_25")} == {"runs/resnet18_25_07_16_18_08/descriptions.csv"}

    top = shared["originals"][0].top_images.sort_values("rank").groupby(["layer", "unit"]).head(10)
    thumbnails = {n for n in names if n.startswith(prefix + "thumbnails/") and n.endswith(".jpg")}
    assert thumbnails == {f"{prefix}thumbnails/{i}.jpg" for i in set(top["image_index"])}
    with Image.open(io.BytesIO(archive.read(sorted(thumbnails)[0]))) as image:
        assert max(image.size) == 160
    labels = json.loads(archive.read(prefix + "thumbnails/labels.json"))
    assert len(labels) == len(thumbnails) and all(label.endswith((".jpg", ".png")) for label in labels.values())
    maps = np.load(io.BytesIO(archive.read(prefix + "maps/layer4.npy")))
    assert maps.dtype == np.float16 and maps.shape == (512, 10, 7, 7)
    assert shared["calls"][-1][1:] == (len(thumbnails), len(thumbnails))
    assert len(shared["data"]) < 4 * 1024**2  # ~2.6 MB, most of it top_images.csv and thumbnails


def test_import_gives_the_same_runs_in_a_new_folder(shared):
    (bundle_dir,) = list(shared["dest"].iterdir())  # no staging folder left behind
    assert bundle_dir.name.startswith("demo_") and (bundle_dir / "bundle.json").is_file()
    assert [f.parent for f in shared["folders"]] == [bundle_dir, bundle_dir]
    runs, problems = find_runs(shared["dest"])
    assert problems == []
    by_folder = {run.path: run for run in runs}
    for folder, original in zip(shared["folders"], shared["originals"]):
        imported = by_folder[folder]
        pd.testing.assert_frame_equal(imported.descriptions, original.descriptions)
        # An imported run's manifest is marked so; apart from that the files are the same.
        unmarked = imported.manifest and msgspec.structs.replace(imported.manifest, imported=None)
        assert unmarked == original.manifest
        assert imported.imported == (original.manifest is not None) and imported.args == original.args
        assert imported.label == original.label
    computed = load_run(shared["folders"][0])
    pd.testing.assert_frame_equal(computed.top_images, shared["originals"][0].top_images)
    assert computed.manifest.imported["bundle"] == "demo.zip"
    assert msgspec.structs.replace(computed.manifest, imported=None) == RunManifest.from_json(json.dumps(shared["manifest"]))


def test_stored_views_match_the_live_ones_without_the_probe_images(shared, computed_run):
    run = load_run(shared["folders"][0])
    with pytest.raises(DissectError):
        probe_for_run(run.sources)  # the probe copy it was exported from is gone
    top = run.unit_top_images("layer4", 3, 10)
    indices, activations = top["image_index"].astype(int).tolist(), top["activation"].tolist()
    threshold = run.mask_threshold("layer4", 3)
    stored = stored_unit_views(run.path, "layer4", 3, indices, activations, threshold)
    assert len(stored) == 10 and all(v.heatmap is not None and v.mask is not None for v in stored)

    # Live, from the original probe folder and model of the fixture.
    live_sources = load_run(computed_run["run_dir"]).sources
    probe, target = probe_for_run(live_sources), target_for_run(live_sources)
    live = live_unit_views(target, probe, "layer4", 3, indices, activations, threshold)
    assert [v.probe_index for v in stored] == [v.probe_index for v in live] == indices
    assert [v.label for v in stored] == [v.label for v in live]
    assert [v.activation for v in stored] == [v.activation for v in live]

    # The stored maps are the live ones, up to float16 rounding.
    batch = torch.stack([target.preprocess(probe.load_image(i)) for i in indices])
    live_maps = layer_outputs(target.module, {"layer4": CHANNELS_FIRST}, batch)["layer4"][:, 3].numpy()
    stored_maps = np.load(run.path / "maps" / "layer4.npy")[3].astype(np.float32)
    np.testing.assert_allclose(stored_maps, live_maps, rtol=2e-3, atol=1e-3)
    # Drawn on the same thumbnail, live maps give the stored views (float16 rounding aside) ...
    vmax = float(live_maps.max())
    inside, mismatched = 0, 0
    for s, live_map in zip(stored, live_maps):
        expected_heatmap, expected_mask = unit_overlays(s.image, live_map, vmax, threshold)
        assert np.abs(np.asarray(s.heatmap, dtype=int) - np.asarray(expected_heatmap, dtype=int)).max() <= 2
        region = (np.asarray(expected_mask) == np.asarray(s.image)).all(axis=2)  # undimmed pixels
        inside += region.sum()
        mismatched += (region != (np.asarray(s.mask) == np.asarray(s.image)).all(axis=2)).sum()
    assert inside > 0 and mismatched <= 0.05 * inside
    # ... and they look like the live views: the differences are JPEG and resizing noise.
    for s, v in zip(stored, live):
        assert s.heatmap.size == s.image.size == (160, 160)
        drawn_live = np.asarray(v.heatmap.resize(s.heatmap.size, Image.BILINEAR), dtype=np.float32)
        assert np.abs(np.asarray(s.heatmap, dtype=np.float32) - drawn_live).mean() < 6


def test_layers_without_maps_and_runs_without_thumbnails(shared):
    run = load_run(shared["folders"][0])
    top = run.unit_top_images("fc", 0, 15)
    views = stored_unit_views(run.path, "fc", 0, top["image_index"].tolist(), top["activation"].tolist(), None)
    assert len(views) == 10  # the bundle keeps 10 images per unit
    assert all(v.heatmap is None and v.mask is None and v.image.size == (160, 160) for v in views)
    assert stored_unit_views(shared["folders"][1], "layer2", 0, [0], [1.0], None) is None


def test_export_draws_on_the_stored_maps_without_the_model(computed_run, monkeypatch):
    from dissect_core.engine import unit_views

    monkeypatch.setattr(unit_views, "target_for_run", lambda manifest: pytest.fail("the model was loaded"))
    data = export_bundle([load_run(computed_run["run_dir"])])
    entry = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("bundle.json"))["runs"][0]
    assert entry["images"] is True and entry["map_layers"] == ["layer4"]


def test_a_run_without_stored_maps_is_bundled_with_maps_recorded_now(computed_run, tmp_path):
    run_dir = shutil.copytree(computed_run["run_dir"], tmp_path / "older_run")
    shutil.rmtree(run_dir / "maps")  # as runs computed before maps were stored
    archive = zipfile.ZipFile(io.BytesIO(export_bundle([load_run(run_dir)], images_per_unit=5)))
    recorded = np.load(io.BytesIO(archive.read("runs/older_run/maps/layer4.npy"))).astype(np.float32)
    stored = np.load(computed_run["run_dir"] / "maps" / "layer4.npy").astype(np.float32)
    assert recorded.shape == (512, 5, 7, 7)
    np.testing.assert_allclose(recorded, stored[:, :5], rtol=2e-3, atol=1e-3)


# --------------------------------------------------------------------------- bad bundles

def make_zip(members: dict[str, bytes | str], bundle_json: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if bundle_json is not None:
            archive.writestr("bundle.json", json.dumps(bundle_json))
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def index(*folders: str) -> dict:
    return {"format": BUNDLE_FORMAT, "created": "2025-01-01T00:00:00+00:00",
            "runs": [{"label": f, "folder": f} for f in folders]}


def patch_declared_size(data: bytes, member: str, size: int) -> bytes:
    """Rewrite the uncompressed size that the central directory declares for ``member``."""
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + struct.unpack("<H", data[entry + 28:entry + 30])[0]] != member.encode():
        entry = data.index(b"PK\x01\x02", entry + 4)
    return data[:entry + 24] + struct.pack("<I", size) + data[entry + 28:]


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bundle.json", json.dumps(index("a")))
        archive.writestr("runs/a/descriptions.csv", REFERENCE_CSV)
        link = zipfile.ZipInfo("runs/a/top_images.csv")
        link.external_attr = (0o120777 << 16)  # S_IFLNK
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


GOOD = {"runs/a/descriptions.csv": REFERENCE_CSV}
BAD_BUNDLES = {
    "not a zip": (b"layer,unit,description,similarity\n", "is not a zip file"),
    "no bundle.json": (make_zip(GOOD), "has no bundle.json"),
    "unknown format": (make_zip(GOOD, {**index("a"), "format": "other/2"}), "has format 'other/2'"),
    "zip slip": (make_zip({**GOOD, "runs/../../evil.txt": "x"}, index("a")), "escaping path"),
    "absolute path": (make_zip({**GOOD, "/tmp/evil.txt": "x"}, index("a")), "absolute"),
    "outside runs": (make_zip({**GOOD, "evil.txt": "x"}, index("a")), "lies outside runs/"),
    "unlisted run": (make_zip({**GOOD, "runs/b/descriptions.csv": REFERENCE_CSV}, index("a")), "lies outside"),
    "escaping folder": (make_zip(GOOD, index("..")), "not a plain folder name"),
    "symlink": (symlink_zip(), "symbolic link"),
    "bad descriptions": (make_zip({"runs/a/descriptions.csv": "layer,unit,label\nx,0,dog\n"}, index("a")),
                         "in its run 'a', descriptions.csv looks like a CLIP-Dissect file but lacks"),
    "bad label quality": (make_zip({**GOOD, "runs/a/label_quality.csv": "layer,unit\nx,0\n"}, index("a")),
                          "in its run 'a', label_quality.csv"),
    "points without layers": (make_zip({**GOOD, "runs/a/label_quality_points.npz": b"PK"}, index("a")),
                              "label_quality_points.npz comes without label_quality_layers.csv"),
    "oversize declared": (patch_declared_size(make_zip({**GOOD, "runs/a/big.bin": "x" * 100}, index("a")),
                                              "runs/a/big.bin", 0xF000_0000), "would expand to 3.8 GB"),
    "size lies": (patch_declared_size(make_zip({**GOOD, "runs/a/args.txt": "x" * 100}, index("a")),
                                      "runs/a/args.txt", 10), "'runs/a/args.txt' cannot be read"),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_bad_bundles_are_refused_and_change_nothing(case, tmp_path):
    dest = tmp_path / "results"
    existing = dest / "resnet18_old"
    existing.mkdir(parents=True)
    (existing / "descriptions.csv").write_text(REFERENCE_CSV)
    before = listing(dest)
    data, message = BAD_BUNDLES[case]
    upload = io.BytesIO(data)
    upload.name = "bad.zip"
    with pytest.raises(InvalidInputError, match="bad.zip") as error:
        import_bundle(upload, dest)
    assert message in str(error.value)
    assert "Nothing was imported" in str(error.value) or case == "not a zip"
    assert listing(dest) == before


def test_too_many_members_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_format, "MAX_MEMBERS", 3)
    data = make_zip({**GOOD, "runs/a/x": "1", "runs/a/y": "2"}, index("a"))
    with pytest.raises(InvalidInputError, match="holds 4 files, more than the 3"):
        import_bundle(data, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_minimal_bundle_imports_into_a_folder_made_for_it(tmp_path):
    folders = import_bundle(make_zip(GOOD, index("a")), tmp_path / "new" / "results")
    assert [f.name for f in folders] == ["a"] and folders[0].parent.name.startswith("bundle_")
    assert load_run(folders[0]).descriptions["description"].tolist() == ["red", "dotted, striped", "nan"]


def test_other_methods_keep_their_method_and_category_through_a_bundle(tmp_path):
    from dissect_core.runs.formats import NETDISSECT
    from dissect_core.runs.run_folders import runs_from_files

    header = "unit,category,label,score\n"
    files = [("vgg_conv4.csv", (header + "1,scene,bar-s,0.2\n2,color,red-c,0.3\n").encode()),
             ("vgg_conv5.csv", (header + "1,object,cart,0.1\n").encode())]
    (run,), _ = runs_from_files(files)
    folders = import_bundle(export_bundle([run]), tmp_path / "imported")
    back = load_run(folders[0])
    assert back.method == NETDISSECT and back.label == "vgg · conv4, conv5 · NetDissect"
    pd.testing.assert_frame_equal(back.descriptions, run.descriptions)


def test_a_bundled_run_shared_again_keeps_its_images_and_maps(tmp_path):
    """The demo's runs are bundled runs (read-only, no probe set opened): sharing them from the
    app gives a bundle with their own thumbnails and maps; a run of the demo's training sweep
    passes on its sweep's shared thumbnails."""
    from dissect_core.engine.bundle_export import export_bundle
    from dissect_core.runs.bundle_format import import_bundle
    from dissect_core.runs.demo_runs import demo_runs, demo_sweep_runs
    from dissect_core.runs.run_folders import load_run
    from dissect_core.runs.unit_images import stored_unit_views

    trained, step = load_run(demo_runs()[0]), load_run(demo_sweep_runs()[-1])
    info = json.loads(zipfile.ZipFile(io.BytesIO(export_bundle([trained, step]))).read("bundle.json"))
    assert [entry["images"] for entry in info["runs"]] == [True, True]
    assert info["runs"][0]["map_layers"] == ["conv1", "conv2", "conv3"] and info["runs"][1]["map_layers"] == []
    for original, folder in zip((trained, step), import_bundle(export_bundle([trained, step]), tmp_path)):
        top = original.unit_top_images("conv2", 1, 10)
        views = stored_unit_views(folder, "conv2", 1, top["image_index"].tolist(), top["activation"].tolist(), None)
        assert [view.probe_index for view in views] == top["image_index"].tolist()
        assert all((view.heatmap is not None) == (original is trained) for view in views)
