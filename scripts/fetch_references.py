"""Fetch the original tool's outputs that the `reference` tests read, from their public
GitHub repositories at pinned commits, each file checked against its SHA-256.

    python scripts/fetch_references.py [DEST]

The tests look for the files in ``$DISSECT_REFERENCE_DIR`` when it is set, else in
``../shared/reference`` beside the checkout, else in a per-user cache folder
(``~/.cache/dissect/reference`` on Linux). Without DEST, the first of those that holds
every file is verified, and where none does they are fetched into the last. About 2 MB:
descriptions.csv and args.txt of six student runs of CLIP-Dissect (TML 2025, assignment 4,
and one course project), the CLIP-Dissect authors' own results with their NetDissect and
MILAN files, and the concept lists of CLIP-Dissect and Label-free CBM. They are not ours
to relicense, so they are fetched rather than committed. Fetching into a folder that
already holds them downloads nothing and verifies every file.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pooch

FETCH_COMMAND = "python scripts/fetch_references.py"
ENV_VAR = "DISSECT_REFERENCE_DIR"
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "reference"
DEFAULT_DEST = Path(pooch.os_cache("dissect")) / "reference"


@dataclass(frozen=True)
class Source:
    """Files of one GitHub repository at one commit: (path under DEST, path in the repository, SHA-256)."""

    repo: str
    commit: str
    files: tuple[tuple[str, str, str], ...]

    def url(self, path: str) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{quote(path)}"


# Each file at the commit that last changed it upstream; the hashes are those of the copies
# the reference tests were written against.
SOURCES = (
    Source("SamiraAbedini/TML25_A4_21", "a946ef4c99a3c3630d28c6e3b08ccff858e677b1", (
        ("clip_dissect_results/SamiraAbedini_TML25_A4_21/resnet18_imagenet_25_07_17_15_28/descriptions.csv",
         "results/resnet18_imagenet_25_07_17_15_28/descriptions.csv",
         "5dbd0680eebab25bd32f7e8cf96d14d01422175a0b6551e40fdadab0179be482"),
        ("clip_dissect_results/SamiraAbedini_TML25_A4_21/resnet18_imagenet_25_07_17_15_28/args.txt",
         "results/resnet18_imagenet_25_07_17_15_28/args.txt",
         "48195ab758384a76112853679f9e5d0bf6531e5f40b3a7707c04b90184364e28"),
        ("clip_dissect_results/SamiraAbedini_TML25_A4_21/resnet18_places_25_07_17_15_37/descriptions.csv",
         "results/resnet18_places_25_07_17_15_37/descriptions.csv",
         "dd9aa5591d622f9c4cb955c69adeba37a02f421079b3c89a5dfa3c588a62a744"),
        ("clip_dissect_results/SamiraAbedini_TML25_A4_21/resnet18_places_25_07_17_15_37/args.txt",
         "results/resnet18_places_25_07_17_15_37/args.txt",
         "1565b5b7e12dbde41e7df4165a689401d64d18c2ec1110e0e4e73290125661e5"),
    )),
    Source("Trustworthy-ML-Lab/CLIP-dissect", "21e7697feaea3bf7d7bc2d2cc8e4047d5f5fd502", (
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/CLIP_Dissect_results/resnet18_places_imagenet_broden.csv",
         "data/CLIP_Dissect_results/resnet18_places_imagenet_broden.csv",
         "9fb69f315fc98a5249ba236fc6d32f08f4950f75b9198266cd820047b26c5263"),
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/CLIP_Dissect_results/resnet50_imagenet_broden.csv",
         "data/CLIP_Dissect_results/resnet50_imagenet_broden.csv",
         "a0c70fd97000a8ca278a14f4adb0f5afdb6fef1b3dd19bd064cbd39699f0635f"),
        ("clip_dissect_data/20k.txt",
         "data/20k.txt",
         "4ed6e5336d7760d281f7e72df31827da880c861363e820d8c65666b0f10d9ac0"),
        ("clip_dissect_data/10k.txt",
         "data/10k.txt",
         "d6b3e04f1ac30be6525d41474166c0bff28486ecd8c48dcb0ab9c7c9cc05ed86"),
        ("clip_dissect_data/3k.txt",
         "data/3k.txt",
         "425845cf228cf91200e25cbf0361cc078502ce1cc2f9d4558b29abe78096afe1"),
        ("clip_dissect_data/broden_labels_clean.txt",
         "data/broden_labels_clean.txt",
         "603036d4b138c66455e1285bd915f6cdcdf4728df7a5563843d1f89c9babe64b"),
        ("clip_dissect_data/imagenet_labels.txt",
         "data/imagenet_labels.txt",
         "8b243a5b56f530010b42d64d8ef33c2660224447aded823f4d9de2cb1902a70e"),
        ("clip_dissect_data/categories_places365.txt",
         "data/categories_places365.txt",
         "2affba635eb657e7ca95f4e6cc69bd9fac29ef4c32aeb83cafdfcd06ec6a1ea6"),
    )),
    Source("Trustworthy-ML-Lab/CLIP-dissect", "c1565e179fd68b3d5c03c61e827e836e14a6cab7", (
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/NetDissect_results/resnet18_places365_layer1.csv",
         "data/NetDissect_results/resnet18_places365_layer1.csv",
         "2ece37b37e5ef6ea97ce343b7a3df0917bdeea16d58be0a68722c137e2d70f80"),
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/NetDissect_results/resnet18_places365_layer4.csv",
         "data/NetDissect_results/resnet18_places365_layer4.csv",
         "db68b39765b66583042e10a1185fd9bebcdd326b89d927ef8d1af8df000035ef"),
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/NetDissect_results/resnet18_places365_fc.csv",
         "data/NetDissect_results/resnet18_places365_fc.csv",
         "3e8f08587d31560fb88e143cc4084cfc36309a41f49b14e6ff593765fd59a6c2"),
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/MILAN_results/m_base_resnet18_places365.csv",
         "data/MILAN_results/m_base_resnet18_places365.csv",
         "aba3d716e4822f8c46804caac35387b48c109bc261bfd3e56cabaa3fb8d62381"),
        ("clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/MILAN_results/m_imagenet_resnet18_places365.csv",
         "data/MILAN_results/m_imagenet_resnet18_places365.csv",
         "a33c7fb48c5a10638b6191e61f022235fcc80c6a99df3cab02145eb80afc40bc"),
    )),
    Source("Usaid-Bhirya/TML25_A4_7", "251ded34e16311f2d362d44f73e220499efa5d96", (
        ("clip_dissect_results/Usaid-Bhirya_TML25_A4_7/resnet18_25_07_12_21_16/descriptions.csv",
         "Task1/results/resnet18_25_07_12_21_16/descriptions.csv",
         "5e5037b6ca9c27fa757c217cf5cc218869398db7912708d201e1ee3cc7da780d"),
        ("clip_dissect_results/Usaid-Bhirya_TML25_A4_7/resnet18_25_07_12_21_16/args.txt",
         "Task1/results/resnet18_25_07_12_21_16/args.txt",
         "40570757b7b66c3b33049e11d1d5b0daabc5efcc4cfc9768ceb9af0491d81603"),
        ("clip_dissect_results/Usaid-Bhirya_TML25_A4_7/resnet18_places_25_07_12_21_25/descriptions.csv",
         "Task1/results/resnet18_places_25_07_12_21_25/descriptions.csv",
         "290ef62aaccdefa79685b680387811d3dd250f4198d265078fc0e0eefb6fb14e"),
        ("clip_dissect_results/Usaid-Bhirya_TML25_A4_7/resnet18_places_25_07_12_21_25/args.txt",
         "Task1/results/resnet18_places_25_07_12_21_25/args.txt",
         "e933547bcaf8f7a539274d1fa0e782bc728c552a0f52e5adb98ae9ec90334aef"),
    )),
    Source("YongceLi/Profiling-Vision-Neural-Networks-with-CLIP-DISSECT", "7c421abb064f4ec56e81d7a7ec516bf855308535", (
        ("clip_dissect_results/YongceLi_Profiling-Vision-Neural-Networks-with-CLIP-DISSECT/resnet18/descriptions.csv",
         "resnet18/descriptions.csv",
         "c54c48fc46f5bd51ffbcb2c894a44cd7ca33342fc74c029995a600c6cf82bb0d"),
        ("clip_dissect_results/YongceLi_Profiling-Vision-Neural-Networks-with-CLIP-DISSECT/resnet18/args.txt",
         "resnet18/args.txt",
         "549b92c21809b7c10f1fc617ad7678788a5cf1d5b4481bce67b2e11a412a750b"),
    )),
    Source("ashishsubedi/TML25_A4_27", "91c026d56c7837da9385fe5bd0e7f5677f0323f1", (
        ("clip_dissect_results/ashishsubedi_TML25_A4_27/resnet18_25_07_16_18_08/descriptions.csv",
         "task1/CLIP-results/resnet18_25_07_16_18_08/descriptions.csv",
         "449e2ebba6315f2f5a54a82e88d79dc005bc1373454d64d73a3963bc269bbf7e"),
        ("clip_dissect_results/ashishsubedi_TML25_A4_27/resnet18_25_07_16_18_08/args.txt",
         "task1/CLIP-results/resnet18_25_07_16_18_08/args.txt",
         "8c33820582596fd4bd8b8b4c1712878f5fce01c311b211a1a0c60b9ebe42e0a2"),
        ("clip_dissect_results/ashishsubedi_TML25_A4_27/resnet18_places_25_07_16_17_57/descriptions.csv",
         "task1/CLIP-results/resnet18_places_25_07_16_17_57/descriptions.csv",
         "bd801817f695df23a708b8ef1eec9b79117e1d1f2a426a90f713c246622eea42"),
        ("clip_dissect_results/ashishsubedi_TML25_A4_27/resnet18_places_25_07_16_17_57/args.txt",
         "task1/CLIP-results/resnet18_places_25_07_16_17_57/args.txt",
         "2dd8bdb0f0d3b983aed34192458db9f62f845a56081eb0935ba77007b4d8ed4d"),
    )),
    Source("highgroundmaster/TML25_A4_12", "ce033d93d0121f06f43f2910d24057087d0fcd18", (
        ("clip_dissect_results/highgroundmaster_TML25_A4_12/resnet18_25_07_21_02_50/descriptions.csv",
         "Task-1/results/resnet18_25_07_21_02_50/descriptions.csv",
         "718a3c180cb1937e838b4288e5ac6e9a7483d526527c86568bf48cdaa4f55e90"),
        ("clip_dissect_results/highgroundmaster_TML25_A4_12/resnet18_25_07_21_02_50/args.txt",
         "Task-1/results/resnet18_25_07_21_02_50/args.txt",
         "355229822faea08cd82d57b406f8b1418cd083f074ebea4179fdf4d52fe31f62"),
        ("clip_dissect_results/highgroundmaster_TML25_A4_12/resnet18_places365_25_07_21_01_25/descriptions.csv",
         "Task-1/results/resnet18_places365_25_07_21_01_25/descriptions.csv",
         "ddbb2907b8621860699a088876512d4123a68910fca6d51f31d9620e0aeba642"),
        ("clip_dissect_results/highgroundmaster_TML25_A4_12/resnet18_places365_25_07_21_01_25/args.txt",
         "Task-1/results/resnet18_places365_25_07_21_01_25/args.txt",
         "a222f7b768c59f6fa431d8a1bce8104a9d5db27be2801efd987dbc44c21ce754"),
    )),
    Source("javedakhtar0129/TML25_A4_15", "a65803947bf9440e8fa30f772f3465b14992c38f", (
        ("clip_dissect_results/javedakhtar0129_TML25_A4_15/descriptions (1).csv",
         "task_01/results/descriptions (1).csv",
         "02d87251d50ecf4e26abb560ad070442bcbe071fdc34a187d1660cbe4e02bbed"),
        ("clip_dissect_results/javedakhtar0129_TML25_A4_15/descriptions (2).csv",
         "task_01/results/descriptions (2).csv",
         "8032278d71a761f4e601845255cb6e9bfacf7cd5e08a0375c1984f61df4e7ddb"),
    )),
    Source("Trustworthy-ML-Lab/Label-free-CBM", "bacf7bd18d4889f1279551da34b5055c93d2fe9c", (
        ("clip_dissect_data/from_Label-free-CBM/cifar100_classes.txt",
         "data/cifar100_classes.txt",
         "60ae3a3ac1355fcfec19c0ea3cb5fde15203ecf3b537cabcf6d5d54688ee9a4d"),
        ("clip_dissect_data/from_Label-free-CBM/categories_places365_clean.txt",
         "data/categories_places365_clean.txt",
         "6070e8cf4635e5e029cc4ed0d6e4d1cd52c4a33891016bf341057cc5f8c8ca2b"),
    )),)


def looked_in() -> list[Path]:
    """Where the tests look, in order: the environment variable alone when it is set."""
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR]).expanduser()]
    return [SHARED, DEFAULT_DEST]


def missing(folder: Path) -> list[str]:
    return [local for source in SOURCES for local, _, _ in source.files if not (folder / local).is_file()]


def find_reference_dir() -> Path | None:
    """The first folder the tests look in that holds every reference file, or None."""
    return next((folder for folder in looked_in() if not missing(folder)), None)


def not_found_message() -> str:
    folders = " or ".join(str(folder) for folder in looked_in())
    return (f"the reference outputs are not in {folders}; fetch them with `{FETCH_COMMAND}` "
            f"(or point {ENV_VAR} at a folder that holds them)")


def fetch(dest: Path) -> int:
    """Download every file missing from ``dest`` and verify all of them; returns how many."""
    count = 0
    for source in SOURCES:
        for local, path, sha256 in source.files:
            target = dest / local
            pooch.retrieve(source.url(path), known_hash=f"sha256:{sha256}", fname=target.name, path=target.parent)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", nargs="?", type=Path, default=None,
                        help="folder to fetch into (default: where the tests look, see above)")
    args = parser.parse_args(argv)
    args.dest = args.dest or find_reference_dir() or looked_in()[-1]
    try:
        count = fetch(args.dest)
    except (OSError, ValueError) as exc:  # a failed request (requests.RequestException is an OSError) or hash
        print(f"fetching the reference outputs failed: {exc}", file=sys.stderr)
        return 1
    print(f"{count} reference files in {args.dest.resolve()}, each matching its SHA-256")
    if args.dest.resolve() not in {folder.resolve() for folder in looked_in()}:
        print(f"the tests look elsewhere: run them with {ENV_VAR}={args.dest.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
