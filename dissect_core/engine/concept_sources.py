"""Where each probe image's concept vector comes from.

CLIP-Dissect scores a unit against concepts through an image × concept matrix P:
the cosine between each probe image's CLIP image feature and each concept's CLIP
text feature. Two sources fill P, registered in ``choices.catalog.CONCEPT_SOURCES``:

* ``clip`` (the method's own): concepts from a concept set, P from CLIP.
* ``labels``: for a probe set whose images carry labels (class sub-folders, as
  in an ImageFolder; or a CSV mapping each image to its labels), the concepts are
  the label names and P is the label indicator. Everything downstream — the
  similarity functions, top images, activation maps, the cache and the run folder —
  is unchanged. Use it for labelled data sets of your own, or to score units against
  image-level labels as Network Dissection's image-level categories do. A concept set
  given with it holds formulas over the labels (``Sandal OR Sneaker``; see
  ``dissect_core.engine.label_formulas`` and :func:`formula_probe`).

Labelled runs that name no similarity function score with ``auprc``
(``choices.catalog.LABELS_SIMILARITY_FN``, ``dissect_core.engine.label_scores``): on hard labels soft-WPMI
at λ = 1 picks the label most distinctive of a unit among its layer rather than the one
its top images carry; docs/labelled_scores.md compares the choices on the demo.

How the indicator is scaled, and why. The similarity functions L2-normalise every
row of the image and text features before taking P = I·Tᵀ (see
``dissect_core.engine.similarity``). The labels source gives image ``i`` the feature
row 1/√kᵢ on each of its kᵢ labels and 0 elsewhere, and concept ``c`` the unit
vector e_c, so P[i, c] = 1/√kᵢ when image ``i`` carries label ``c`` and 0
otherwise; a single-label image has cosine exactly 1 with its label, like a
perfect CLIP match, and 0 with every other label (any other scale of the
indicator would be undone by that normalisation). soft-WPMI's softmax over
concepts, Q = softmax(a·P) with the reference's a = 10, then gives a single-label
image's own label e¹⁰/(e¹⁰ + C − 1): 0.9996 with C = 10 concepts and still 0.96
with 1,000, so Q is close to the label distribution itself and a unit's score
counts, with soft-WPMI's rank weights, how many of its top images carry each
label; each top image without the label costs log(1 − p_j), −6.2 to −3.5 down the
ranks, so scores are on another scale than CLIP runs'. An image with k labels splits
the mass between them (about 1/k each while a/√k stays large against log C); raise
``a`` for many labels per image. The cosine functions use P's columns, the label
indicators, directly.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dissect_core.choices.concept_sets import MAX_CONCEPT_CHARS, ConceptSet
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.runs.unit_evidence import FOLDER_LABELS, image_class

if TYPE_CHECKING:  # the registry is read by the CLI and app without importing torch
    import torch

    from dissect_core.engine.probe_sets import ProbeSet

LABELS_CSV_COLUMNS = ("image", "label")
# The source of a labelled probe's own concepts (ConceptSet.source) from a CSV (from class
# sub-folders: runs.unit_evidence.FOLDER_LABELS).
CSV_LABELS = "labels CSV "
# A file this large is not a labels CSV of a probe set (Broden's 63k images need ~3 MB).
MAX_LABELS_CSV_BYTES = 200 * 1024**2


@dataclass(frozen=True)
class LabelledProbe:
    """A probe set's labels as CLIP-Dissect inputs.

    ``image_features`` (N×d, non-negative) and ``text_features`` (C×d, each row one-hot)
    take the places of the CLIP image and text features: image i carries concept c when
    its feature is positive in the column where c's is 1. ``fingerprint`` identifies the
    label assignment for cache keys.
    """

    concepts: ConceptSet
    image_features: torch.Tensor
    text_features: torch.Tensor
    fingerprint: str
    warnings: tuple[str, ...] = ()  # what the run should point out (a formula no image satisfies)

    def indicator(self) -> torch.Tensor:
        """(images × concepts) bool: which images carry which concept."""
        return self.image_features[:, self.text_features.argmax(dim=1)] > 0




def folder_labels(probe: ProbeSet) -> list[list[str]]:
    """Each image's label: the name of its top-level class sub-folder (ImageFolder layout)."""
    classes = (image_class(probe.item_label(index)) for index in range(len(probe)))
    return [[label] if label is not None else [] for label in classes]


def read_labels_csv(path: str | Path, probe: ProbeSet) -> list[list[str]]:
    """Each image's labels from a CSV with columns ``image,label``, one row per pair.

    ``image`` is the image's path relative to the probe folder (``Unit explorer``
    shows the same names); an image with several labels has several rows.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(
            f"The labels file {path.name}", looked_in=str(path),
            how_to_fix="Give a CSV with the columns image,label (one row per image and label).",
        )
    if path.stat().st_size > MAX_LABELS_CSV_BYTES:
        raise InvalidInputError(f"{path.name} is larger than {MAX_LABELS_CSV_BYTES // 1024**2} MB: not a labels CSV.")
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    reader = csv.reader(io.StringIO(text))
    header = [cell.strip() for cell in next(reader, [])]
    if tuple(header[:2]) != LABELS_CSV_COLUMNS:
        raise InvalidInputError(
            f"{path.name} must start with the header 'image,label' (one row per image and label), "
            f"not {','.join(header) or 'nothing'}."
        )
    index_of = {probe.item_label(i): i for i in range(len(probe))}
    labels: list[list[str]] = [[] for _ in range(len(probe))]
    unknown = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[1].strip():
            raise InvalidInputError(f"{path.name}, line {line}: expected 'image,label', got {','.join(row)!r}.")
        image, label = row[0].strip(), row[1].strip()
        if len(label) > MAX_CONCEPT_CHARS:
            raise InvalidInputError(
                f"{path.name}, line {line}: a label of {len(label)} characters is too long "
                f"(at most {MAX_CONCEPT_CHARS})."
            )
        if image not in index_of:
            unknown.append(image)
        elif label not in labels[index_of[image]]:
            labels[index_of[image]].append(label)
    if unknown:
        raise InvalidInputError(
            f"{path.name} names {len(unknown)} image(s) that are not in the probe set {probe.name}, "
            f"e.g. {unknown[0]!r}. Image names are paths relative to the probe folder, such as "
            f"{probe.item_label(0)!r}."
        )
    return labels


def labelled_probe(probe: ProbeSet, labels_csv: Optional[str] = None) -> LabelledProbe:
    """The probe's labels as concepts and an indicator matrix (scaling: module docstring).

    Labels come from ``labels_csv`` when given, else from the images' class
    sub-folders. Every image needs at least one label.
    """
    labels = read_labels_csv(labels_csv, probe) if labels_csv else folder_labels(probe)
    unlabelled = [i for i, image_labels in enumerate(labels) if not image_labels]
    if unlabelled:
        where = f"in {Path(labels_csv).name}" if labels_csv else "(they lie directly in the probe folder, not in a class sub-folder)"
        raise InvalidInputError(
            f"{len(unlabelled)} of {len(probe)} probe images have no label {where}, e.g. "
            f"{probe.item_label(unlabelled[0])!r}. With the labels concept source every image needs one: put "
            "each image in a sub-folder named after its class, or list it in a labels CSV (image,label)."
        )
    import torch

    names = sorted({label for image_labels in labels for label in image_labels})
    column = {name: c for c, name in enumerate(names)}
    indicator = torch.zeros(len(labels), len(names), dtype=torch.float32)
    for row, image_labels in enumerate(labels):
        indicator[row, [column[label] for label in image_labels]] = 1.0 / len(image_labels) ** 0.5
    digest = hashlib.sha256()
    for index, image_labels in enumerate(labels):
        digest.update(f"{probe.item_label(index)}\t{chr(31).join(image_labels)}\n".encode("utf-8"))
    source = f"{CSV_LABELS}{Path(labels_csv).name}" if labels_csv else FOLDER_LABELS
    concepts = ConceptSet(name=f"labels of {probe.name}", concepts=tuple(names), source=source)
    return LabelledProbe(concepts, indicator, torch.eye(len(names)), digest.hexdigest())




def is_own_labels(concept_source: str) -> bool:
    """Whether a labelled run's concepts, by their ``ConceptSet.source``, are its labels
    themselves rather than a list of formulas over them."""
    return concept_source == FOLDER_LABELS or concept_source.startswith(CSV_LABELS)


def formula_probe(labelled: LabelledProbe, formulas: ConceptSet) -> LabelledProbe:
    """The probe with ``formulas`` (label formulas, ``dissect_core.engine.label_formulas``) as its concepts.

    Each formula is evaluated per image from the image's labels. The features are scaled as
    the labels' are (module docstring): an image satisfying k formulas has 1/√k on each. An
    image satisfying none gets a feature of its own that no concept shares (cosine 0 with
    every concept), so soft-WPMI's softmax spreads it evenly and it counts for none.
    """
    import torch

    from dissect_core.engine.label_formulas import parse_formulas

    parsed = parse_formulas(formulas, labelled.concepts.concepts)
    has = labelled.indicator()
    column = {name: c for c, name in enumerate(labelled.concepts.concepts)}
    truth = torch.stack([formula.evaluate(lambda name: has[:, column[name]]) for formula in parsed], dim=1)
    held = truth.sum(dim=1, keepdim=True)
    image_features = torch.cat([truth.float() / held.clamp(min=1).float().sqrt(), (held == 0).float()], dim=1)
    text_features = torch.cat([torch.eye(len(parsed)), torch.zeros(len(parsed), 1)], dim=1)
    never = [formula.text for formula, count in zip(parsed, truth.sum(dim=0).tolist()) if count == 0]
    warnings = (f"{len(never)} concept(s) of {formulas.name} hold for no probe image, e.g. {never[0]!r}: "
                "they score lowest for every unit.",) if never else ()
    digest = hashlib.sha256(f"{labelled.fingerprint}\n{formulas.sha256}".encode("utf-8")).hexdigest()
    return LabelledProbe(formulas, image_features, text_features, digest, labelled.warnings + warnings)
