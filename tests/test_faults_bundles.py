"""Fault catalogue, bundles and run folders: every file of a bundle is untrusted.

A hand-made valid bundle (every file kind of the layout) is spoiled one member at
a time; each bad bundle is refused with a message naming the problem, and the
results folder is left exactly as it was. Imported runs are read-only: nothing
opens a probe set or model from their manifests. Run folders that fail to load
are listed as damaged or incomplete, and every other run keeps loading.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dissect_core.runs import bundle_format
from dissect_core.runs.bundle_format import BUNDLE_FORMAT, BUNDLE_VERSION, BundleAlreadyImported, import_bundle
from dissect_core.common.errors import InvalidInputError, NewerFormatError
from dissect_core.engine.unit_views import probe_for_run, target_for_run
from dissect_core.runs.unit_images import stored_unit_views
from dissect_core.runs.manifest import FORMAT_VERSION, CacheKeys, ConceptSetRecord, ProbeRecord, RunManifest
from dissect_core.runs.analysis import only_stable
from dissect_core.cli import main
from dissect_core.engine.pipeline import config_from_run
from dissect_core.runs.quality_tables import LAYER_COLUMNS, QUALITY_COLUMNS
from dissect_core.runs.run_folders import find_runs, load_run

from standins import make_image_folder

DESCRIPTIONS = "layer,unit,description,similarity\nlayer4,0,dog,0.5\nlayer4,1,cat,0.25\nfc,0,sky,0.1\n"
TOP_CONCEPTS = ("layer,unit,rank,concept,score\nlayer4,0,0,dog,0.5\nlayer4,0,1,cat,0.4\n"
                "layer4,1,0,cat,0.25\nfc,0,0,sky,0.1\n")
TOP_IMAGES = ("layer,unit,rank,image_index,activation\nlayer4,0,0,7,2.5\nlayer4,0,1,3,2.0\n"
              "layer4,1,0,3,1.5\nlayer4,1,1,9,1.0\nfc,0,0,7,0.5\n")
UNIT_STATS = "layer,unit,mask_threshold\nlayer4,0,0.75\nlayer4,1,nan\nfc,0,nan\n"


def jpeg(size=(32, 32), colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


def manifest(**changes) -> dict:
    """A valid run manifest (as JSON fields) naming this machine's folders, changed by ``changes``."""
    record = json.loads(RunManifest(
        created="2026-01-01T00:00:00+00:00", target_model="resnet18", target_checkpoint=None,
        target_weights_sha256="0" * 64, target_source="torchvision", layers=["layer4", "fc"],
        clip_model="ViT-B-16:openai", clip_weights="openai", precision="fp32",
        probe=ProbeRecord("broden", {"kind": "folder", "root": "/etc"}, "0" * 64, 10, 0, [], {}),
        concept_set=ConceptSetRecord("20k", "/etc/passwd", "0" * 64, 3, 0, 0), similarity_fn="soft_wpmi",
        similarity_params={}, pool_mode="avg", device="cpu",
        config={"activation_dir": "/var/lib/cache", "data_dir": "/"}, cache_keys=CacheKeys({}, "", "", {}),
        reused_from_cache=[], warnings=[], versions={}, timings_s={},
    ).to_json())
    record.update(changes)
    return record


def good_members() -> dict[str, bytes]:
    maps = np.random.default_rng(0).random((2, 2, 7, 7)).astype(np.float16)
    return {
        "runs/a/descriptions.csv": DESCRIPTIONS.encode(),
        "runs/a/args.txt": json.dumps({"target_model": "resnet18", "target_layers": ["layer4", "fc"]}).encode(),
        "runs/a/manifest.json": json.dumps(manifest()).encode(),
        "runs/a/top_concepts.csv": TOP_CONCEPTS.encode(),
        "runs/a/top_images.csv": TOP_IMAGES.encode(),
        "runs/a/unit_stats.csv": UNIT_STATS.encode(),
        "runs/a/thumbnails/3.jpg": jpeg(),
        "runs/a/thumbnails/7.jpg": jpeg(colour=(0, 90, 200)),
        "runs/a/thumbnails/9.jpg": jpeg(colour=(0, 200, 0)),
        "runs/a/thumbnails/labels.json": json.dumps({"3": "x/3.jpg", "7": "x/7.jpg", "9": "x/9.jpg"}).encode(),
        "runs/a/thumbnails/views.json": json.dumps({"images_per_unit": 2, "thumbnail_px": 32}).encode(),
        "runs/a/maps/layer4.npy": npy(maps),
    }


def make_bundle(members: dict[str, bytes], runs=None, compression=zipfile.ZIP_DEFLATED,
                bundle_format: str = BUNDLE_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("bundle.json", json.dumps(
            {"format": bundle_format, "created": "2026-01-01T00:00:00+00:00",
             "runs": runs or [{"label": "resnet18 · broden", "folder": "a", "images": True}]}))
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def spoiled(**replacements: bytes | None) -> bytes:
    members = good_members()
    for short, data in replacements.items():
        name = "runs/a/" + short.replace("__", "/").replace("_dot_", ".")
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    return make_bundle(members)


def upload(data: bytes, name: str = "shared.zip") -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture
def results(tmp_path) -> Path:
    dest = tmp_path / "results"
    (dest / "resnet18_old").mkdir(parents=True)
    (dest / "resnet18_old" / "descriptions.csv").write_text(DESCRIPTIONS)
    return dest


def test_the_valid_bundle_imports(results):
    (folder,) = import_bundle(upload(make_bundle(good_members())), results / "imported")
    run = load_run(folder)
    assert run.imported and run.layers == ["layer4", "fc"]
    assert run.top_images["image_index"].tolist() == [7, 3, 3, 9, 7]
    views = stored_unit_views(folder, "layer4", 0, [7, 3], [2.5, 2.0], 0.75)
    assert [v.probe_index for v in views] == [7, 3] and all(v.heatmap is not None for v in views)


def csv_with(text: str, old: str, new: str) -> bytes:
    assert old in text
    return text.replace(old, new, 1).encode()


BAD = {
    # side tables
    "top_concepts columns": (dict(top_concepts_dot_csv=b"layer,unit,concept\nlayer4,0,dog\n"),
                             "top_concepts.csv has the columns 'layer,unit,concept'"),
    "top_concepts unknown unit": (dict(top_concepts_dot_csv=csv_with(TOP_CONCEPTS, "layer4,1,0", "layer4,5,0")),
                                  "unit 5 of layer 'layer4' is not in the run's descriptions.csv"),
    "top_concepts score text": (dict(top_concepts_dot_csv=csv_with(TOP_CONCEPTS, "0.4", "high")),
                                "score 'high' is not a finite number"),
    "top_concepts not UTF-8": (dict(top_concepts_dot_csv=TOP_CONCEPTS.replace("cat", "c\xe4t").encode("latin-1")),
                               "top_concepts.csv is not UTF-8"),
    "top_concepts BOM": (dict(top_concepts_dot_csv=b"\xef\xbb\xbf" + TOP_CONCEPTS.encode()), "byte-order mark"),
    "top_concepts empty concept": (dict(top_concepts_dot_csv=csv_with(TOP_CONCEPTS, ",cat,0.4", ", ,0.4")),
                                   "line 3: the concept is empty"),
    "top_images index 1e30": (dict(top_images_dot_csv=csv_with(TOP_IMAGES, ",7,2.5", ",1e30,2.5")),
                              "image_index '1e30' is not a whole number"),
    "top_images negative index": (dict(top_images_dot_csv=csv_with(TOP_IMAGES, ",7,2.5", ",-1,2.5")),
                                  "image_index '-1' is not a whole number"),
    "top_images non-ASCII digit": (dict(top_images_dot_csv=csv_with(TOP_IMAGES, "layer4,1,0", "layer4,\u0661,0")),
                                   "unit '\u0661' is not a whole number"),
    "top_images huge unit": (dict(top_images_dot_csv=csv_with(TOP_IMAGES, "layer4,1,0", "layer4,9999999999,0")),
                             "is not a whole number from 0 to"),
    "top_images duplicate rank": (dict(top_images_dot_csv=csv_with(TOP_IMAGES, "layer4,0,1,3", "layer4,0,0,3")),
                                  "appears twice"),
    "top_images infinite activation": (dict(top_images_dot_csv=csv_with(TOP_IMAGES, "2.5", "inf")),
                                       "activation 'inf' is not a finite number"),
    "unit_stats unreadable": (dict(unit_stats_dot_csv=b'layer,unit,mask_threshold\n"layer4,0,1\n'),
                              "unit_stats.csv"),
    # JSON files
    "manifest not JSON": (dict(manifest_dot_json=b"{'target_model': 1}"), "manifest.json is not valid JSON"),
    "manifest a list": (dict(manifest_dot_json=b"[1, 2]"), "manifest.json holds a JSON list, not a run manifest object"),
    "manifest probe a list": (dict(manifest_dot_json=json.dumps(manifest(probe=[1])).encode()),
                              "probe: expected an object"),
    "manifest layers numbers": (dict(manifest_dot_json=json.dumps(manifest(layers=[1, 2])).encode()),
                                "layers[0] should be str"),
    "manifest n_images text": (dict(manifest_dot_json=json.dumps(manifest(probe={**manifest()["probe"], "n_images": "10"})).encode()),
                               "n_images should be int"),
    "manifest NaN": (dict(manifest_dot_json=b'{"timings_s": {"load": NaN}}'), "NaN is not a JSON number"),
    "manifest deep": (dict(manifest_dot_json=(b'{"a":' * 40 + b"1" + b"}" * 40)), "nests deeper than"),
    "manifest huge string": (dict(manifest_dot_json=json.dumps({"target_source": "x" * 30_000}).encode()),
                             "holds a text of 30,000 characters"),
    "args nested object": (dict(args_dot_txt=b'{"target_model": {"a": 1}}'), "is not plain text or a number"),
    # names
    "layer escaping": (dict(descriptions_dot_csv=b"layer,unit,description,similarity\n../../x,0,dog,0.5\n",
                            top_concepts_dot_csv=None, top_images_dot_csv=None, unit_stats_dot_csv=None,
                            thumbnails__3_dot_jpg=None, thumbnails__7_dot_jpg=None, thumbnails__9_dot_jpg=None,
                            thumbnails__labels_dot_json=None, thumbnails__views_dot_json=None,
                            maps__layer4_dot_npy=None),
                       "descriptions.csv: the layer '../../x' is not a plain module name"),
    "layer hidden": (dict(descriptions_dot_csv=csv_with(DESCRIPTIONS, "fc,0", ".fc,0")), "descriptions.csv: the layer '.fc' is not a plain"),
    # maps
    "map of unknown layer": (dict(maps__layer3_dot_npy=npy(np.zeros((2, 2, 7, 7), np.float16))),
                             "maps of the layer 'layer3'"),
    "map pickled objects": (dict(maps__layer4_dot_npy=npy(np.array([{"x": 1}], dtype=object))),
                            "maps/layer4.npy is not a readable .npy array"),
    "map wrong shape": (dict(maps__layer4_dot_npy=npy(np.zeros((2, 7, 7), np.float16))), "holds an array of type"),
    "map too few units": (dict(maps__layer4_dot_npy=npy(np.zeros((1, 2, 7, 7), np.float16))), "units ≥ 2"),
    "map infinite": (dict(maps__layer4_dot_npy=npy(np.full((2, 2, 7, 7), np.inf, np.float16))), "not finite"),
    "map not npy": (dict(maps__layer4_dot_npy=b"\x93NUMPY garbage"), "is not a readable .npy array"),
    # thumbnails
    "thumbnail is a PNG": (dict(thumbnails__3_dot_jpg=Image.new("RGB", (8, 8)).tobytes()),
                           "thumbnails/3.jpg is not a readable JPEG"),
    "thumbnail too large": (dict(thumbnails__3_dot_jpg=jpeg(size=(64, 20))), "larger than the bundle's thumbnail"),
    "thumbnail truncated": (dict(thumbnails__3_dot_jpg=jpeg()[:200]), "thumbnails/3.jpg is not a readable JPEG"),
    "thumbnail of another image": (dict(thumbnails__4_dot_jpg=jpeg()), "a thumbnail of image 4"),
    "labels of unknown image": (dict(thumbnails__labels_dot_json=b'{"5": "x"}'), "labels.json must map"),
    "views not numbers": (dict(thumbnails__views_dot_json=b'{"images_per_unit": "ten", "thumbnail_px": 32}'),
                          "views.json must give images_per_unit"),
    "views missing": (dict(thumbnails__views_dot_json=None), "no top_images.csv or thumbnails/views.json"),
    # layer names that are paths, wherever the bundle names a layer
    "manifest layer is a path": (dict(manifest_dot_json=json.dumps(manifest(layers=["layer4", "../../x"])).encode()),
                                 "manifest.json: layers[1]: the layer '../../x' is not a plain module name"),
    "manifest layout key is a path": (dict(manifest_dot_json=json.dumps(manifest(layouts={"/etc/x": "conv"})).encode()),
                                      "manifest.json: layouts (a key): the layer '/etc/x' is not a plain"),
    "descriptions layer has a NUL": (dict(descriptions_dot_csv=csv_with(DESCRIPTIONS, "fc,0", "f\0c,0")),
                                     "descriptions.csv: the layer 'f\\x00c' is not a plain module name"),
    # members
    "unknown member": (dict(run_dot_sh=b"#!/bin/sh\nrm -rf /\n"), "'runs/a/run.sh' is not a file a bundle holds"),
    "nested unknown member": (dict(maps__sub__x_dot_npy=b"x"), "is not a file a bundle holds"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_member_is_refused_and_nothing_is_written(results, case):
    replacements, message = BAD[case]
    before = listing(results)
    with pytest.raises(InvalidInputError) as error:
        import_bundle(upload(spoiled(**replacements)), results / "imported")
    assert message in str(error.value)
    assert "'shared.zip' is not a valid results bundle" in str(error.value)
    assert "Nothing was imported" in str(error.value)
    assert listing(results) == before


def test_older_bundles_and_manifests_still_import(results):
    members = {**good_members(), "runs/a/manifest.json": json.dumps(manifest(format="dissect_core-run/2")).encode()}
    data = make_bundle(members, bundle_format="dissect_core-bundle/1")
    (folder,) = import_bundle(upload(data), results / "imported")
    run = load_run(folder)
    assert run.imported and run.manifest.format_version == 2 and run.layers == ["layer4", "fc"]


@pytest.mark.parametrize("where", ["bundle.json", "manifest.json"])
def test_a_newer_bundle_asks_for_a_newer_dissect_and_writes_nothing(results, where):
    if where == "bundle.json":
        data = make_bundle(good_members(), bundle_format=f"dissect_core-bundle/{BUNDLE_VERSION + 1}")
        words = [f"bundle format version {BUNDLE_VERSION + 1}", f"reads versions 1 to {BUNDLE_VERSION}"]
    else:
        newer = json.dumps(manifest(format=f"dissect_core-run/{FORMAT_VERSION + 1}")).encode()
        data = make_bundle({**good_members(), "runs/a/manifest.json": newer})
        words = ["cannot be imported by this dissect: in its run 'a', manifest.json",
                 f"run format version {FORMAT_VERSION + 1}"]
    before = listing(results)
    with pytest.raises(NewerFormatError) as error:
        import_bundle(upload(data), results / "imported")
    for text in [*words, "'shared.zip'", "made by a newer dissect", "Upgrade dissect", "Nothing was imported"]:
        assert text in str(error.value)
    assert "not a valid results bundle" not in str(error.value)
    assert listing(results) == before


# --------------------------------------------------------------------------- quality files against the labels

# DESCRIPTIONS' units: layer4 0 (dog), 1 (cat); fc 0 (sky). Unit 1 of layer4 is unstable.
QUALITY_ROWS = [("layer4", 0, "dog", 0.9), ("layer4", 1, "cat", 0.3), ("fc", 0, "sky", 1.0)]


def quality_members(rows=QUALITY_ROWS, layer_units=(("layer4", 2), ("fc", 1)), point_units=(2, 1)) -> dict:
    units = "".join(f"{layer},{unit},{label},0.5,{stability},0.4,0.3,0.5,{label},0.1,cow,0.2,False\n"
                    for layer, unit, label, stability in rows)
    layers = "".join(f"{layer},{count},0.5,0.4,2,1,2\n" for layer, count in layer_units)
    points = io.BytesIO()
    arrays = {}
    for number, count in enumerate(point_units):
        arrays |= {f"images_{number}": np.arange(3), f"activation_{number}": np.ones((3, count), np.float16),
                   f"similarity_{number}": np.ones((3, count), np.float16)}
    np.savez_compressed(points, **arrays)
    return {"runs/a/label_quality.csv": (",".join(QUALITY_COLUMNS) + "\n" + units).encode(),
            "runs/a/label_quality_layers.csv": (",".join(LAYER_COLUMNS) + "\n" + layers).encode(),
            "runs/a/label_quality_points.npz": points.getvalue()}


def test_quality_figures_that_fit_the_labels_are_imported_whole(results):
    (folder,) = import_bundle(upload(make_bundle({**good_members(), **quality_members()})), results / "imported")
    run = load_run(folder)
    assert run.notes == [] and list(run.layer_quality["layer"]) == ["layer4", "fc"]
    assert run.quality_points("fc")[1].shape == (3, 1)
    assert only_stable(run.descriptions, run.label_quality, 0.8)["unit"].tolist() == [0, 0]


DOCTORED = {
    "a unit too many": (dict(rows=[*QUALITY_ROWS, ("layer4", 2, "cow", 1.0)]),
                        "label_quality.csv has figures for 3 units, where the run labels 2"),
    "other labels": (dict(rows=[("layer4", 0, "dog", 0.9), ("layer4", 1, "cow", 0.3), ("fc", 0, "sky", 1.0)]),
                     "label_quality.csv scores other labels than the run's for 1 of its 2 units"),
    "layers file count": (dict(layer_units=(("layer4", 5), ("fc", 1))),
                          "label_quality_layers.csv counts 5 units, where the run labels 2"),
    "points columns": (dict(point_units=(4, 1)), "label_quality_points.npz holds 4 columns for it, where the run labels 2 units"),
}


@pytest.mark.parametrize("case", list(DOCTORED))
def test_quality_figures_that_do_not_fit_the_labels_are_left_out_with_a_note(results, case):
    changes, why = DOCTORED[case]
    data = make_bundle({**good_members(), **quality_members(**changes)})
    (folder,) = import_bundle(upload(data), results / "imported")
    run = load_run(folder)
    # Every label is there; layer4's figures are gone, fc's kept, and a note says which and why.
    assert run.descriptions["description"].tolist() == ["dog", "cat", "sky"]
    assert run.notes == [f"Label-quality figures of layer layer4 left out: {why}. Its labels are shown; "
                         "recompute the run for its figures."]
    assert set(run.label_quality["layer"]) == {"fc"} and list(run.layer_quality["layer"]) == ["fc"]
    assert run.quality_points("layer4") is None and run.quality_points("fc")[1].shape == (3, 1)
    assert why in run.quality_absent_reason("layer4") and run.quality_absent_reason("fc") is None
    # Stable-only views keep layer4's units: their stability is unknown, not low.
    assert only_stable(run.descriptions, run.label_quality, 0.8)["unit"].tolist() == [0, 1, 0]
    runs, problems = find_runs(results)
    assert problems == [] and len(runs) == 2


def test_a_quality_scatter_damaged_in_a_run_folder_costs_only_the_figures(results):
    (folder,) = import_bundle(upload(make_bundle({**good_members(), **quality_members()})), results / "imported")
    points = folder / "label_quality_points.npz"
    points.write_bytes(points.read_bytes()[:300])
    run = load_run(folder)
    assert run.descriptions["description"].tolist() == ["dog", "cat", "sky"] and run.layer_quality.empty
    assert [note.split(":")[0] for note in run.notes] == [
        "Label-quality figures of layer layer4 left out", "Label-quality figures of layer fc left out"]
    assert "label_quality_points.npz holds no readable array for it" in run.notes[0]


def test_quality_figures_of_a_layer_the_run_lacks_are_left_out(results, capsys):
    data = make_bundle({**good_members(), **quality_members(
        rows=[*QUALITY_ROWS, ("layer9", 0, "dog", 1.0)], layer_units=(("layer4", 2), ("fc", 1), ("layer9", 1)),
        point_units=(2, 1, 1))})
    run = load_run(import_bundle(upload(data), results / "imported")[0])
    assert run.notes == ["Label-quality figures of layer layer9 left out: the run has no layer of that name. "
                         "Its labels are shown; recompute the run for its figures."]
    assert list(run.layer_quality["layer"]) == ["layer4", "fc"]
    assert run.quality_points("fc")[1].shape == (3, 1)  # numbered in the file's layer order
    assert main(["evaluate", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "  fc: 1 units" in out and "layer9:" not in out and f"Note: {run.notes[0]}" in out


def test_bundle_labels_are_bounded(results):
    data = make_bundle(good_members(), runs=[{"label": "x" * 500, "folder": "a"}])
    with pytest.raises(InvalidInputError, match="is not a text of 1 to 200 characters"):
        import_bundle(upload(data), results)


def test_an_expansion_ratio_bomb_is_refused_from_its_declared_sizes(results, monkeypatch):
    monkeypatch.setattr(bundle_format, "RATIO_FLOOR_BYTES", 1024**2)
    members = {**good_members(), "runs/a/top_images.csv": TOP_IMAGES.encode() + b" " * (8 * 1024**2)}
    data = make_bundle(members)
    assert len(data) < 100_000
    before = listing(results)
    with pytest.raises(InvalidInputError, match=r"would expand to 8\.0 MB from .* more than the"):
        import_bundle(upload(data), results / "imported")
    assert listing(results) == before


def test_the_imports_of_a_results_folder_share_a_quota(results):
    import_bundle(upload(make_bundle(good_members()), "one.zip"), results / "imported")
    used = sum(p.stat().st_size for p in (results / "imported").rglob("*") if p.is_file())
    before = listing(results)
    second = make_bundle({**good_members(), "runs/a/thumbnails/9.jpg": jpeg(colour=(1, 2, 3))})
    with pytest.raises(InvalidInputError, match=r"over their limit of .* Delete imported runs"):
        import_bundle(upload(second, "two.zip"), results / "imported", quota_bytes=int(used * 1.5))
    assert listing(results) == before


def test_the_same_bundle_twice_is_recognised_and_not_written_again(results):
    data = make_bundle(good_members())
    (first,) = import_bundle(upload(data, "one.zip"), results / "imported")
    before = listing(results)
    with pytest.raises(BundleAlreadyImported, match="was imported before") as error:
        import_bundle(upload(data, "renamed.zip"), results / "imported")
    assert error.value.folders == [first]
    assert listing(results) == before
    runs, problems = find_runs(results)
    assert len(runs) == 2 and problems == []


# --------------------------------------------------------------------------- imported runs are read-only

@pytest.fixture
def imported_run(results, tmp_path):
    # The bundle's manifest names folders of this machine: a real image folder and a cache.
    make_image_folder(tmp_path / "server_images", 4)
    spec = {"kind": "folder", "root": str(tmp_path / "server_images")}
    members = good_members()
    members["runs/a/manifest.json"] = json.dumps(manifest(
        probe={**manifest()["probe"], "spec": spec}, imported=None,
        config={"activation_dir": str(tmp_path / "server_cache"), "result_dir": str(tmp_path / "elsewhere")},
    )).encode()
    (folder,) = import_bundle(upload(make_bundle(members)), results / "imported")
    return load_run(folder), tmp_path


def test_an_imported_run_never_opens_server_files_named_in_its_manifest(imported_run):
    run, tmp_path = imported_run
    assert run.imported and run.manifest.imported["bundle"] == "shared.zip"
    with pytest.raises(InvalidInputError, match="imported from a results bundle: it is read-only"):
        probe_for_run(run.sources)
    with pytest.raises(InvalidInputError, match="read-only"):
        target_for_run(run.sources)
    with pytest.raises(InvalidInputError, match="read-only"):
        config_from_run(run, concept_set="english_20k")
    assert not (tmp_path / "server_cache").exists() and not (tmp_path / "elsewhere").exists()


def test_stored_views_refuse_a_layer_name_that_is_a_path(imported_run):
    run, _ = imported_run
    with pytest.raises(InvalidInputError, match="the layer '../../../etc/x' is not a plain module name"):
        stored_unit_views(run.path, "../../../etc/x", 0, [7, 3], [1.0, 1.0], None)


# --------------------------------------------------------------------------- damaged and incomplete run folders

@pytest.mark.parametrize("file, data, reason", [
    ("top_concepts.csv", b"junk\x00\xff", "top_concepts.csv is not UTF-8"),
    ("top_images.csv", b"layer,unit\n", "top_images.csv has the columns"),
    ("manifest.json", b'{"probe": "broden"}', "which is not a dissect_core run manifest"),
    ("args.txt", b"\xff", "args.txt is not a JSON object of run arguments"),
    ("descriptions.csv", b"", "descriptions.csv is empty"),
    ("manifest.json", json.dumps(manifest(layers=["layer4", "/etc/x"])).encode(),
     "manifest.json: layers[1]: the layer '/etc/x' is not a plain module name"),
    ("descriptions.csv", DESCRIPTIONS.replace("fc,0", "../fc,0").encode(),
     "descriptions.csv: the layer '../fc' is not a plain module name"),
])
def test_a_run_damaged_after_import_is_listed_with_its_reason(results, file, data, reason):
    (folder,) = import_bundle(upload(make_bundle(good_members())), results / "imported")
    (folder / file).write_bytes(data)
    runs, problems = find_runs(results)
    assert [run.path.name for run in runs] == ["resnet18_old"]  # the others keep working
    ((path, why),) = problems
    assert path == folder / "descriptions.csv" and reason in why


def test_an_interrupted_import_is_listed_as_incomplete_and_removed_by_the_next(results):
    staging = results / "imported" / ".importing-999999999-abc"  # a process that is gone
    (staging / "a").mkdir(parents=True)
    (staging / "a" / "descriptions.csv").write_text(DESCRIPTIONS)
    runs, problems = find_runs(results)
    assert [run.path.name for run in runs] == ["resnet18_old"]
    assert problems[0][1].startswith("Incomplete: a bundle import")
    import_bundle(upload(make_bundle(good_members())), results / "imported")
    assert not staging.exists()
    runs, problems = find_runs(results)
    assert len(runs) == 2 and problems == []


def test_a_run_folder_being_written_is_listed_as_incomplete(results):
    from dissect_core.runs.run_folders import INCOMPLETE_FILE

    (results / "resnet18_old" / INCOMPLETE_FILE).touch()
    runs, problems = find_runs(results)
    assert runs == []
    assert "is incomplete: it stopped while its files were being written" in problems[0][1]
