"""A sweep's runs, in order: what ``dissect sweep`` (``dissect_core.engine.sweep``) writes
beside its run folders, read without torch (the sweep page reads it).

``result_dir/sweep.json`` lists the sweep's runs in the spec's order (the checkpoints of a
glob by training step): folder, name, model, checkpoint, step, layer rule and the layers
it resolved to. Each finished run folder holds ``sweep_entry.json``, its own entry, with
the digest of what defines its results (``identity``): a sweep run again keeps a run
whose identity matches, and computes the others.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from dissect_core.common.errors import DissectError, InvalidInputError
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import DESCRIPTIONS_FILE, SWEEP_FILE, load_run

ENTRY_FILE = "sweep_entry.json"  # in each finished run folder: its entry
SWEEP_FORMAT = "dissect_core-sweep/1"


@dataclass(frozen=True)
class SweepEntry:
    """One run of a sweep, as ``sweep.json`` lists it."""

    position: int  # 0-based, in sweep order
    folder: str  # the run folder's name in result_dir
    name: Optional[str]  # the run's name, where the spec gave one
    target_model: str
    target_checkpoint: Optional[str]
    step: Optional[int]  # training step of a checkpoint matched by a glob
    layer_rule: Optional[str]
    layers: list[str]  # as resolved for this model
    identity: str


@dataclass
class SweepRun:
    """A run of a sweep: its entry, and the run once it is finished (else why it is missing)."""

    entry: SweepEntry
    run: Optional[Run]
    missing: Optional[str] = None


def read_sweep(result_dir: Union[str, Path]) -> list[SweepRun]:
    """The runs of the sweep written into ``result_dir``, in sweep order: finished ones
    loaded, the others with why they are missing."""
    runs = []
    for entry in read_sweep_entries(result_dir):
        folder = Path(result_dir) / entry.folder
        if not (folder / DESCRIPTIONS_FILE).is_file():
            runs.append(SweepRun(entry, None, "not computed yet"))
            continue
        try:
            runs.append(SweepRun(entry, load_run(folder)))
        except DissectError as error:
            runs.append(SweepRun(entry, None, str(error)))
    return runs


def read_sweep_entries(result_dir: Union[str, Path]) -> list[SweepEntry]:
    """``sweep.json`` of ``result_dir``: the sweep's entries in order, without loading runs."""
    path = Path(result_dir) / SWEEP_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != SWEEP_FORMAT:
            raise ValueError(f"format {record.get('format')!r}, not {SWEEP_FORMAT}")
        entries = [SweepEntry(**entry) for entry in record["runs"]]
        for entry in entries:  # a run folder's name, never a path elsewhere
            if not isinstance(entry.folder, str) or Path(entry.folder).name != entry.folder or entry.folder in ("", ".", ".."):
                raise ValueError(f"run folder {entry.folder!r} is not a folder name")
    except FileNotFoundError:
        raise InvalidInputError(f"{result_dir} holds no sweep ({SWEEP_FILE} is missing): run dissect sweep "
                                "with this folder as result_dir.") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"{path} cannot be read as a sweep ({error}): run dissect sweep again.") from None
    return entries
