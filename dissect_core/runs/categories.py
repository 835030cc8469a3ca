"""A category for each concept: colour, texture, material, part, object, scene or other.

Sources, in the order they are tried (all offline):

1. Broden's own naming (Bau et al., Network Dissection, CVPR 2017): its colour labels end
   in ``-c`` (``red-c``) and its scene labels in ``-s`` (``kitchen-s``).
2. Broden's texture labels, the 47 classes of the Describable Textures Dataset (Cimpoi et
   al., CVPR 2014), and its material labels, the OpenSurfaces materials (Bell et al.,
   SIGGRAPH 2013), listed below.
3. WordNet 3.0 (Princeton University) through ``lexicon/wordnet_categories.tsv.gz``, which
   ``scripts/build_concept_categories.py`` builds from Debian's ``wordnet-base`` (the
   rules are in that script; WordNet's license is in ``lexicon/WORDNET_LICENSE``): the
   concept's most frequent noun sense, tried for the whole concept, its part before a
   Places-style qualifier ("forest-broadleaf"), each without a plural ``s``, then for its
   last word (the head of "shop window" is "window").

A concept found nowhere is ``other``. The concepts of a labelled run (its probe images'
own labels, ``Run.labelled``) are the data set's classes: they are all ``class``, never
looked up (WordNet took "T-shirt or top" for a material).
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import pandas as pd

CATEGORIES = ("colour", "texture", "material", "part", "object", "scene", "class", "other")
OWN_CLASS = "class"  # the category of a labelled run's concepts: the data set's own classes

DTD_TEXTURES = frozenset((
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved",
    "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
    "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled",
    "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven",
    "wrinkled", "zigzagged",
))
OPENSURFACES_MATERIALS = frozenset((
    "brick", "cardboard", "carpet", "ceramic", "concrete", "fabric", "food", "fur", "glass", "granite",
    "hair", "laminate", "leather", "metal", "mirror", "painted", "paper", "plastic-clear", "plastic-opaque",
    "rubber", "skin", "stone", "tile", "wallpaper", "wicker", "wood",
))
TABLE = Path(__file__).parent / "lexicon" / "wordnet_categories.tsv.gz"


@lru_cache(maxsize=1)
def _wordnet() -> dict[str, str]:
    with gzip.open(TABLE, "rt", encoding="utf-8") as handle:
        return dict(line.rstrip("\n").split("\t") for line in handle)


def categorise(concept: str) -> str:
    """The category of one concept (see the module docstring for the sources)."""
    text = concept.strip().lower()
    if text.endswith("-c"):
        return "colour"
    if text.endswith("-s"):
        return "scene"
    if text in DTD_TEXTURES:
        return "texture"
    if text in OPENSURFACES_MATERIALS:
        return "material"
    table = _wordnet()
    for key in _lookup_keys(text):
        if key in table:
            return table[key]
    return "other"


def _lookup_keys(text: str) -> list[str]:
    """The whole concept, its head before a Places-style qualifier ("forest-broadleaf"),
    each without a plural s, then the last word."""
    words = text.replace("_", " ").replace("-", " ").replace("/", " ")
    head = text.split("-")[0].split("/")[0].replace("_", " ").strip()
    keys = []
    for key in (words, head):
        keys += [key, key[:-1]] if key.endswith("s") else [key]
    keys.append(words.split(" ")[-1])
    return [key for key in dict.fromkeys(keys) if key]


def categorise_all(concepts: Iterable[str]) -> dict[str, str]:
    return {concept: categorise(concept) for concept in dict.fromkeys(concepts)}


def category_mix(descriptions: pd.DataFrame, own_classes: bool = False) -> pd.DataFrame:
    """Per layer (file order) and category: units whose label has that category, and their share.
    ``own_classes``: the labels are the data set's own classes (a labelled run), all ``class``."""
    if own_classes:
        frame = descriptions.assign(category=OWN_CLASS)
    else:
        frame = descriptions.assign(category=descriptions["description"].map(categorise_all(descriptions["description"])))
    counts = frame.groupby(["layer", "category"], sort=False).size().rename("units").reset_index()
    counts["share"] = counts["units"] / counts.groupby("layer", sort=False)["units"].transform("sum")
    layers = list(dict.fromkeys(descriptions["layer"]))
    counts["layer"] = pd.Categorical(counts["layer"], layers, ordered=True)
    counts["category"] = pd.Categorical(counts["category"], CATEGORIES, ordered=True)
    return counts.sort_values(["layer", "category"]).reset_index(drop=True).astype({"layer": str, "category": str})
