"""What a run's stored files say for or against one unit's label, without torch.

* **Close margins.** A unit's margin is the score gap between its label and the runner-up.
  Scores are on each similarity function's own scale (CLIP-Dissect's soft-WPMI near 0–1 with
  CLIP, tens of nats with a labelled probe's hard labels), so no fixed gap can say "close".
  :func:`close_margin` measures the margin against the unit's own spread of scores over its
  listed top concepts (``top_concepts.csv``): :data:`MARGIN_RULE`.
* **Label counts.** A labelled run (``Run.labelled``) with the labels of an ImageFolder
  layout names each image's label in its path: the top-level class sub-folder. Counting them
  over the unit's top images (``top_images.csv``, up to the similarity function's ``top_k``:
  the images the label was chosen from) shows how far the images bear the label out.
  Image names come from a bundle's ``thumbnails/labels.json`` (:func:`stored_image_names`)
  or from the run's probe set where it is on this machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import LABELS_FILE, read_json_object, thumbnails_dir

MARGIN_CLOSE_SHARE = 0.2
MARGIN_RULE = (
    f"A margin counts as close when it is at most {MARGIN_CLOSE_SHARE:.0%} of the spread of the unit's "
    "top-concept scores (best minus last listed): the runner-up then sits nearer the label than the other "
    "top concepts do, whatever the score's scale."
)
# ConceptSetRecord.source of a labelled run whose labels are its probe's class sub-folders
# (dissect_core.engine.concept_sources writes it).
FOLDER_LABELS = "class sub-folders"


def close_margin(scores: Sequence[float]) -> Optional[bool]:
    """Whether the margin of a unit whose top concepts scored ``scores`` (best first) is
    close by :data:`MARGIN_RULE`; None when it cannot tell: fewer than three scores (the
    spread would be the margin itself) or a score that is not finite."""
    if len(scores) < 3 or not all(math.isfinite(score) for score in scores):
        return None
    margin, spread = scores[0] - scores[1], scores[0] - scores[-1]
    return margin <= MARGIN_CLOSE_SHARE * spread


def unit_close_margin(run: Run, layer: str, unit: int) -> Optional[bool]:
    """:func:`close_margin` over the unit's listed top concepts; None without them."""
    return close_margin(run.unit_top_concepts(layer, unit)["score"].astype(float).tolist())


def image_class(name: str) -> Optional[str]:
    """The label an ImageFolder layout gives the image at relative path ``name``: its
    top-level sub-folder; None for an image directly in the probe folder."""
    parts = name.split("/")
    return parts[0] if len(parts) > 1 else None


def stored_image_names(run_dir: Optional[Path]) -> dict[int, str]:
    """Probe image names by index from a bundled run's ``thumbnails/labels.json``; {} without one."""
    thumbnails = thumbnails_dir(run_dir)
    if thumbnails is None:
        return {}
    names = read_json_object(thumbnails / LABELS_FILE)
    return {int(key): value for key, value in names.items() if key.isdigit() and isinstance(value, str)}


@dataclass(frozen=True)
class TopLabelCounts:
    """The labels of a unit's top images, beside the unit's own label."""

    label: str  # the unit's label
    label_is_class: bool  # False: the run's concepts are other texts (formulas over the classes)
    top_k: Optional[int]  # how many top images the label was chosen from; None: all probe images
    counted: int  # the unit's top images counted: those the run lists, at most top_k
    unknown: int  # of those, images whose name is not known here (not counted in ``counts``)
    counts: pd.DataFrame  # ``label``, ``images``: most frequent first, ties in label order

    @property
    def label_images(self) -> int:
        """How many of the counted images carry the unit's label."""
        rows = self.counts[self.counts["label"] == self.label]
        return int(rows["images"].iloc[0]) if not rows.empty else 0

    @property
    def majority(self) -> Optional[str]:
        """The label most of the counted images carry (the first in label order on a tie)."""
        return str(self.counts["label"].iloc[0]) if not self.counts.empty else None


def top_label_counts(run: Run, layer: str, unit: int,
                     name_of: Callable[[int], Optional[str]]) -> Optional[TopLabelCounts]:
    """The labels among the unit's top images, for a labelled run whose probe labels are its
    class sub-folders (no labels CSV); None for other runs, or when the run lists no top images.

    ``name_of`` gives a probe image's relative path (None when unknown). Counted are the
    unit's top images as ``top_images.csv`` lists them, at most ``Run.similarity_top_k``.
    """
    if not run.labelled or run.manifest.config.get("probe_labels") or run.top_images is None:
        return None
    label_rows = run.descriptions[(run.descriptions["layer"] == layer) & (run.descriptions["unit"] == unit)]
    if label_rows.empty:
        return None
    top_k = run.similarity_top_k
    listed = run.unit_top_images(layer, unit, top_k if top_k is not None else len(run.top_images))
    if listed.empty:
        return None
    names = [name_of(int(index)) for index in listed["image_index"]]
    classes = [image_class(name) for name in names if name is not None]
    known = pd.Series([label for label in classes if label is not None], dtype=str)
    counts = known.value_counts().rename_axis("label").reset_index(name="images")
    counts = counts.sort_values(["images", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return TopLabelCounts(
        label=str(label_rows["description"].iloc[0]), label_is_class=run.manifest.concept_set.source == FOLDER_LABELS,
        top_k=top_k, counted=len(listed),
        unknown=len(listed) - len(known), counts=counts,
    )
