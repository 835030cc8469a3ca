"""The Unit explorer's words about a unit's label: its runner-up and margin, and the labels
of its top images in a labelled run (``dissect_core.runs.unit_evidence`` counts them)."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from dissect_app.text import md
from dissect_core.runs.unit_evidence import TopLabelCounts


def margin_note(figure: pd.Series, close: Optional[bool], labelled: bool) -> str:
    """What the runner-up is and, when ``close`` (by ``unit_evidence.MARGIN_RULE``; None:
    cannot tell), what a close margin means for it."""
    runner_up = md(figure["runner_up"])
    if labelled:  # labels are distinct classes with no text: there are no near-synonyms
        note = f"Runner-up {runner_up}, another of the probe's labels."
        kind_if_close = "the unit may respond to both (polysemantic)"
    elif figure["near_synonym"]:
        note = f"Runner-up {runner_up} (text cosine {figure['runner_up_cosine']:.2f}) is a near-synonym."
        kind_if_close = "a coin toss between equivalent words"
    else:
        note = f"Runner-up {runner_up} (text cosine {figure['runner_up_cosine']:.2f}) is a distinct concept."
        kind_if_close = "the unit may respond to both (polysemantic)"
    if close:
        note += f" The margin is close: {kind_if_close}."
    return note


def label_counts_note(counts: TopLabelCounts, similarity_fn: Optional[str]) -> list[str]:
    """Lines saying which top images were counted and whether they bear the label out."""
    label, score = md(counts.label), md(similarity_fn)
    if counts.top_k is None:
        lines = [f"{score} scores each label over all probe images; shown are the labels of the "
                 f"unit's top {counts.counted} images."]
    elif counts.counted < counts.top_k:
        lines = [f"The label was chosen from the unit's top {counts.top_k} images ({score}'s top\\_k); "
                 f"this run lists only its top {counts.counted}, so those are counted."]
    else:
        lines = [f"The label was chosen from these images: the unit's top {counts.top_k} ({score}'s top\\_k)."]
    if counts.unknown:
        lines.append(f"{counts.unknown} of them have no stored name, so no label to count.")
    if not counts.label_is_class:
        lines.append(f"The label {label} is not one of the classes counted here (a formula over them).")
        return lines
    lines.append(f"{counts.label_images} of them carry {label}.")
    if counts.majority != counts.label:
        lines.append(f"Most carry {md(counts.majority)} ({int(counts.counts['images'].iloc[0])}).")
        if similarity_fn in ("soft_wpmi", "wpmi"):
            lines.append("WPMI does not pick the most frequent label: it subtracts how likely each label is over "
                         "the layer's units, so it picks the label most distinctive of this unit among them.")
    return lines

