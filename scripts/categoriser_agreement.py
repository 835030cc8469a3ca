"""How often the concept categoriser agrees with NetDissect-Lite's own categories of Broden labels.

    python scripts/categoriser_agreement.py [REFERENCE_DIR]

REFERENCE_DIR holds the reference outputs (default: where the tests find them, see
scripts/fetch_references.py, which fetches them); the labels are read from
clip_dissect_results/Trustworthy-ML-Lab_CLIP-dissect/NetDissect_results/*.csv. Prints the
agreement with Broden's labels as they are and with their -c/-s suffixes removed (so that
WordNet alone decides), with the date, commit and machine for docs/method.md.
"""
from __future__ import annotations

import csv
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dissect_core.runs.categories import categorise  # noqa: E402
from fetch_references import find_reference_dir, not_found_message  # noqa: E402 (this folder)

NETDISSECT = Path("clip_dissect_results") / "Trustworthy-ML-Lab_CLIP-dissect" / "NetDissect_results"


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else find_reference_dir()
    if root is None:
        print(f"Give the reference folder as the argument: {not_found_message()}.", file=sys.stderr)
        return 2
    folder = root / NETDISSECT
    if not folder.is_dir():
        print(f"No NetDissect results in {folder}: give the reference folder as the argument.", file=sys.stderr)
        return 2
    truth: dict[str, str] = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                truth[row["label"]] = {"color": "colour"}.get(row["category"], row["category"])
    as_is = sum(categorise(label) == category for label, category in truth.items())
    bare = sum(categorise(label.removesuffix("-c").removesuffix("-s")) == category
               for label, category in truth.items())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    print(f"{datetime.now(timezone.utc):%Y-%m-%d} · commit {commit} · {platform.machine()}")
    print(f"labels as they are: {as_is} of {len(truth)} agree ({100 * as_is / len(truth):.1f} %)")
    print(f"-c/-s suffixes removed (WordNet alone): {bare} of {len(truth)} ({100 * bare / len(truth):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
