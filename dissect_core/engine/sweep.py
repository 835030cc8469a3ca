"""Sweeps: many models or checkpoints described with one setup, by ``dissect sweep SPEC``.

A spec is a TOML file whose keys are ``dissect describe``'s option names without the
dashes. ``[setup]`` holds what every model shares; each ``[[model]]`` table adds or
overrides keys for one model (usually ``target_model`` and ``target_checkpoint``)::

    [setup]
    d_probe = "probe/"
    concept_set = "concepts.txt"
    layer_rule = "stage_ends"          # or target_layers = "layer2,layer3,layer4"
    result_dir = "sweep_runs"
    [[model]]
    target_model = "resnet18"
    [[model]]
    target_model = "small_cnn"
    target_checkpoint = "checkpoints/step_*.pt"   # one run per file, in training-step order

Values are what the option takes on the command line (``target_layers`` is a
comma-separated string, ``download = true`` is the switch), except ``similarity_param``,
a table (``similarity_param = {top_k = 50}``); the defaults are describe's, except
``device``, which picks a GPU where there is one (describe's reference default is cuda). Keys of the sweep itself: ``layer_rule``
(``dissect_core.layer_rules``, instead of ``target_layers``), and in a ``[[model]]``
table ``name`` (the run's name and folder; ``{step}`` stands for a checkpoint's step)
and ``step_pattern`` (a regular expression whose group is the training step in a
checkpoint's file name; by default its last number). Relative paths start at the
working directory, as on the command line.

:func:`run_sweep` checks the whole spec before any work and reports every problem at
once, each with its line. Then the runs still missing are computed: the models that
share their settings in one pass over the probe images (each image decoded once, CLIP's
image and text features computed once; ``pipeline``'s stages), one run folder each in
``result_dir``, named after the model. A run is written in a hidden staging folder and
renamed into place when complete, so a sweep stopped at any point (Ctrl-C, a killed
process, a full disk) leaves finished runs whole and no half-written one; run again, it
computes only the runs that are missing (and reuses the cache for those).
``result_dir/sweep.json`` lists the sweep's runs in order: :func:`read_sweep` reads it.
"""
from __future__ import annotations

import dataclasses
import difflib
import glob
import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union

from dissect_core.choices.catalog import with_source_defaults
from dissect_core.choices.config import DescribeConfig
from dissect_core.choices.layouts import parse_layer_layouts
from dissect_core.common.errors import DissectError, InvalidInputError, about, name_settings
from dissect_core.common.files import atomic_write_text, file_sha256
from dissect_core.common.progress import ProgressFn, report
from dissect_core.engine.activations import record_probe_pass
from dissect_core.engine.cache import process_alive, stable_hash
from dissect_core.engine.layer_rules import LAYER_RULES, resolve_rule
from dissect_core.engine.models import get_layer, load_target_model
from dissect_core.engine.pipeline import (PER_MODEL_FIELDS, RunLog, check_config, check_inputs, encode_concepts,
                                          label_units, look_up_cache, record_probe_images, write_run_folder)
from dissect_core.runs.sweep_index import (ENTRY_FILE, SWEEP_FILE, SWEEP_FORMAT, SweepEntry, SweepRun,
                                           read_sweep)

STAGING_PREFIX = ".sweep-"  # hidden staging folders (find_runs skips dot folders)
SETUP, MODEL = "setup", "model"
# Keys of a spec that are not describe options: where each may appear.
SWEEP_KEYS = {"layer_rule": (SETUP, MODEL), "name": (MODEL,), "step_pattern": (SETUP, MODEL)}
# Describe options that make no sense in a spec, and why.
LEFT_OUT = {"quiet": "it is a switch of the command: pass --quiet to dissect sweep"}
# Options shared by the whole sweep: its index lives in result_dir, and one cache serves it.
SETUP_ONLY = ("result_dir", "activation_dir")
# Settings that do not change a run's results: a run made with other values of these is reused.
NOT_IN_IDENTITY = ("batch_size", "device", "num_workers", "download", "activation_dir", "result_dir")
_LAST_NUMBER = r"(\d+)(?!.*\d)"
_GLOB_CHARS = re.compile(r"[*?\[]")


# ----------------------------------------------------------------------------- the spec


@dataclass
class SweepModel:
    """One run of the sweep, as the spec gives it (before its model is loaded)."""

    position: int  # 0-based, in sweep order (the spec's, a glob's checkpoints by step)
    folder: str  # the run folder's name in result_dir
    config: DescribeConfig  # target_layers is () where layer_rule picks them
    layer_rule: Optional[str]
    step: Optional[int]
    line: int  # of its [[model]] table
    key_lines: dict[str, int]  # spec key -> line that set it (the model's own, else [setup]'s)
    identity: str = ""  # digest of what defines its results (settings, weights' and files' contents)

    def line_of(self, key: Optional[str]) -> int:
        return self.key_lines.get(key or "", self.line)


@dataclass
class SweepSpec:
    path: Path
    result_dir: Path
    models: list[SweepModel]


class SpecProblems:
    """Problems found in a spec, reported together (each with its line)."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        # Settings named in library messages (`pool_mode`) are said as the spec's keys.
        message = name_settings(message, {field.name: _spec_key(field.name)
                                          for field in dataclasses.fields(DescribeConfig)})
        if (line, message) not in self.items:  # a [setup] problem is found once per model
            self.items.append((line, message))

    def raise_if_any(self) -> None:
        if self.items:
            lines = [f"  line {line}: {message}" for line, message in sorted(self.items, key=lambda item: item[0])]
            raise InvalidInputError(f"The sweep spec {self.path} has {len(self.items)} problem(s); nothing was "
                                    "computed:\n" + "\n".join(lines))


def _key_lines(text: str) -> tuple[dict[str, int], list[tuple[int, dict[str, int]]]]:
    """Where each key is set: ``[setup]``'s keys, and each ``[[model]]`` table's header line and
    keys. tomllib reads the file; this only finds lines (keys of inline and sub-tables count as
    their table's key)."""
    setup: dict[str, int] = {}
    models: list[tuple[int, dict[str, int]]] = []
    current: Optional[dict[str, int]] = None
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.count('"""') % 2 or stripped.count("'''") % 2:
            in_string = not in_string
            continue
        if in_string or not stripped or stripped.startswith("#"):
            continue
        header = re.fullmatch(r"\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?", stripped)
        if header:
            name = header.group(1).strip()
            if stripped.startswith("[[") and name == MODEL:
                models.append((number, {}))
                current = models[-1][1]
            elif name == SETUP:
                current = setup
            elif name.startswith(f"{SETUP}."):
                setup.setdefault(name.split(".", 1)[1], number)
                current = None
            elif name.startswith(f"{MODEL}.") and models:
                models[-1][1].setdefault(name.split(".", 1)[1], number)
                current = None
            else:
                current = None
            continue
        key = re.match(r"\s*\"?([A-Za-z0-9_\-]+)\"?\s*=", line)
        if key and current is not None:
            current.setdefault(key.group(1), number)
    return setup, models


# Spec keys: DescribeConfig's fields, which are describe's option names (similarity_params is
# said --similarity_param; run_name is a model's ``name`` here).
_FIELDS = {field.name: field.default for field in dataclasses.fields(DescribeConfig)
           if field.name not in ("run_name", "similarity_params")}
_OPTIONAL_INTS = ("num_workers",)  # default None, else a whole number


def _setting(key: str, value: Any) -> tuple[str, Any]:
    """A spec value as the DescribeConfig field and value it stands for, as the command line
    reads the option; InvalidInputError for a value of the wrong kind."""
    if key == "similarity_param":
        if not isinstance(value, dict) or not all(isinstance(number, (int, float)) and not isinstance(number, bool)
                                                  for number in value.values()):
            raise InvalidInputError("similarity_param is a table of numbers, e.g. similarity_param = {top_k = 50}.")
        return "similarity_params", dict(value)
    default = _FIELDS[key]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidInputError(f"{key} is a switch: write {key} = true or false, not {value!r}.")
        return key, value
    if isinstance(default, int) or key in _OPTIONAL_INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{key} is a whole number, not {value!r}.")
        return key, value
    if not isinstance(value, str):
        shown = "a list" if isinstance(value, list) else "a table" if isinstance(value, dict) else repr(value)
        raise InvalidInputError(f"{key} is a string, not {shown}"
                                + (' (write a list as "a,b,c", as after --' + key + ")" if isinstance(value, list)
                                   else "") + ".")
    if key == "target_layers":
        return key, tuple(value.split(","))
    if key == "layer_layout":
        return key, parse_layer_layouts(value)
    return key, value


def read_spec(path: Union[str, Path]) -> SweepSpec:
    """The spec's runs, checked for everything that needs no model loaded: unknown keys, values,
    checkpoint globs, runs that would share a folder or a network. Every problem is reported
    at once (InvalidInputError), each with its line."""
    spec, problems = _read_spec(Path(path))
    problems.raise_if_any()
    return spec


def _read_spec(path: Path) -> tuple[SweepSpec, SpecProblems]:
    """The spec's runs that have no problem, and the problems of the others."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"The sweep spec {path} cannot be read: {error}.") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidInputError(f"The sweep spec {path} is not valid TOML: {error}.") from None
    problems = SpecProblems(path)
    setup_lines, model_lines = _key_lines(text)
    for key in sorted(set(spec) - {SETUP, MODEL}):
        problems.add(1, f"unknown table or key {key!r}: a spec has a [setup] table and [[model]] tables.")
    setup = spec.get(SETUP, {})
    tables = spec.get(MODEL, [])
    if not isinstance(setup, dict) or not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.add(1, "write [setup] as a table and each model as a [[model]] table.")
        problems.raise_if_any()
    if not tables:
        problems.add(1, "no [[model]] table: add one per model (target_model = ..., target_checkpoint = ...).")
    known = set(_FIELDS) | {"similarity_param"}
    checked_setup = _checked_keys(setup, SETUP, setup_lines, known, problems)
    models: list[SweepModel] = []  # the runs without a problem
    listed: list[SweepModel] = []  # and with, for the checks between runs
    layer_keys = ("layer_rule", "target_layers")
    if all(key in setup for key in layer_keys):
        problems.add(setup_lines.get("layer_rule", 1), "give target_layers or layer_rule, not both.")
    for number, table in enumerate(tables):
        line, own_lines = model_lines[number] if number < len(model_lines) else (1, {})
        keys = {**checked_setup, **_checked_keys(table, MODEL, own_lines, known, problems, line)}
        key_lines = {**setup_lines, **own_lines}
        own = [key for key in layer_keys if key in table]
        if len(own) == 2:
            problems.add(key_lines["layer_rule"], "give target_layers or layer_rule, not both.")
            continue
        if own:  # a model's own choice of layers replaces [setup]'s
            keys.pop(layer_keys[1 - layer_keys.index(own[0])], None)
        runs, failed = _expand(number, line, keys, key_lines, problems)
        listed += runs
        models += [] if failed else runs
    for position, model in enumerate(listed):  # sweep order: the tables', a glob's checkpoints by step
        model.position = position
    _check_distinct(listed, problems)
    result_dir = Path(models[0].config.result_dir if models else _FIELDS["result_dir"])  # set in [setup] only
    for model in models:
        model.identity = _identity(model)
    return SweepSpec(path, result_dir, models), problems


def _checked_keys(table: dict, where: str, lines: dict[str, int], known: set[str], problems: SpecProblems,
                  header: int = 1) -> dict[str, Any]:
    kept = {}
    for key, value in table.items():
        line = lines.get(key, header)
        if key in LEFT_OUT:
            problems.add(line, f"{key}: {LEFT_OUT[key]}.")
        elif key in SWEEP_KEYS:
            if where in SWEEP_KEYS[key]:
                kept[key] = value
            else:
                problems.add(line, f"{key} belongs in each [[model]] table, not in [{where}].")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known | set(SWEEP_KEYS)), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            problems.add(line, f"unknown key {key!r}.{hint} Keys are dissect describe's options without the "
                               "dashes, and layer_rule, name, step_pattern.")
        elif where == MODEL and key in SETUP_ONLY:
            problems.add(line, f"{key} is shared by the whole sweep: set it in [setup].")
        else:
            kept[key] = value
    return kept


def _expand(number: int, line: int, keys: dict[str, Any], key_lines: dict[str, int],
            problems: SpecProblems) -> tuple[list[SweepModel], bool]:
    """The runs of one [[model]] table (one, or one per checkpoint its glob matches), and
    whether a problem was found in it."""
    sweep_keys = {key: keys.pop(key) for key in list(keys) if key in SWEEP_KEYS}
    name, rule = sweep_keys.get("name"), sweep_keys.get("layer_rule")
    settings: dict[str, Any] = {}
    failed = False
    for key, value in keys.items():
        try:
            if key == "target_model" and isinstance(value, str) and "," in value:
                raise InvalidInputError("one target_model per [[model]] table: add a table for each model.")
            field, setting = _setting(key, value)
        except InvalidInputError as error:  # every wrong value is reported, the others still checked
            problems.add(key_lines.get(key, line), str(error))
            failed = True
        else:
            settings[field] = setting
    for key, value in (("name", name), ("layer_rule", rule), ("step_pattern", sweep_keys.get("step_pattern"))):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.add(key_lines.get(key, line), f"{key} must be a non-empty string, not {value!r}.")
            failed = True
    if "target_model" not in keys:
        problems.add(line, "this [[model]] table names no target_model (nor does [setup]).")
        failed = True
    pattern = settings.get("target_checkpoint")
    checkpoints: list[tuple[Optional[str], Optional[int]]] = [(pattern, None)]
    if pattern and _GLOB_CHARS.search(pattern):
        checkpoints = _glob_checkpoints(pattern, sweep_keys.get("step_pattern"),
                                        key_lines.get("target_checkpoint", line), key_lines, problems)
    if name and checkpoints and checkpoints[0][1] is not None and "{step}" not in name:
        problems.add(key_lines.get("name", line), "with a glob of checkpoints, put {step} in name so that "
                                                  "each checkpoint's run has its own name.")
        return [], True
    runs = []
    for checkpoint, step in checkpoints:
        label = name.replace("{step}", str(step)) if name and step is not None else name
        try:  # the concept source's defaults, as describe fills them
            config = with_source_defaults(DescribeConfig(**{
                **settings, "target_checkpoint": checkpoint, "run_name": label,
                **({"target_layers": ()} if rule is not None else {})}))
        except DissectError as error:
            problems.add(key_lines.get(error.setting or "", line), str(error))
            return runs, True
        model = config.target_model if isinstance(config.target_model, str) else "model"
        folder = label or (model + (f"_{Path(checkpoint).stem}" if checkpoint else ""))
        runs.append(SweepModel(number, _folder_name(folder), config, rule, step, line,
                               {**key_lines, "target_model": key_lines.get("target_model", line)}))
    failed |= not _checks_pass(runs, problems)
    return runs, failed


def _folder_name(name: str) -> str:
    """A run's name as a folder name: each run of other characters becomes one underscore
    ("small CNN · step 5" is small_CNN_step_5)."""
    return re.sub(r"[^\w.-]+", "_", name.strip()).lstrip(".") or "run"


def _glob_checkpoints(pattern: str, step_pattern: Optional[str], line: int, key_lines: dict[str, int],
                      problems: SpecProblems) -> list[tuple[Optional[str], Optional[int]]]:
    """The files the glob matches, in training-step order, each with its step."""
    try:
        steps = re.compile(step_pattern or _LAST_NUMBER)
    except re.error as error:
        problems.add(key_lines.get("step_pattern", line), f"step_pattern is not a regular expression: {error}.")
        return []
    if steps.groups != 1:
        problems.add(key_lines.get("step_pattern", line),
                     "step_pattern needs exactly one group, the step's digits, e.g. 'step(\\d+)'.")
        return []
    files = sorted(path for path in glob.glob(pattern, recursive=True) if Path(path).is_file())
    if not files:
        problems.add(line, f"target_checkpoint {pattern!r} matches no file (relative paths start at {Path.cwd()}).")
        return []
    found: dict[int, str] = {}
    for path in files:
        match = steps.search(Path(path).name)
        if match is None or not match.group(1).isdigit():
            problems.add(line, f"no training step in the file name {Path(path).name!r}: "
                               "name checkpoints with their step, or set step_pattern.")
            continue
        step = int(match.group(1))
        if step in found:
            problems.add(line, f"{Path(found[step]).name} and {Path(path).name} have the same step {step}.")
            continue
        found[step] = path
    return [(found[step], step) for step in sorted(found)]


def _checks_pass(models: Sequence[SweepModel], problems: SpecProblems) -> bool:
    """The library's own checks of each run's settings (registered names, numbers), and of its
    layer rule's name; False where one fails."""
    passed = True
    for model in models:
        if model.layer_rule is not None and model.layer_rule not in LAYER_RULES:
            problems.add(model.line_of("layer_rule"), f"unknown layer_rule {model.layer_rule!r}: use one of "
                                                      f"{', '.join(LAYER_RULES.names())}.")
            passed = False
        config = model.config
        if model.layer_rule is not None:  # its layers are checked once resolved
            config = dataclasses.replace(config, target_layers=("layer",))
        try:
            check_config(config)
        except DissectError as error:
            problems.add(model.line_of(_spec_key(error.setting)), str(error))
            passed = False
    return passed


def _spec_key(setting: Optional[str]) -> Optional[str]:
    """The spec key of a DescribeConfig field."""
    return "similarity_param" if setting == "similarity_params" else setting


def _check_distinct(models: Sequence[SweepModel], problems: SpecProblems) -> None:
    """Two runs may share neither a folder nor a network (one probe pass would record it twice)."""
    folders: dict[str, SweepModel] = {}
    networks: dict[tuple, SweepModel] = {}
    for model in models:
        other = folders.setdefault(model.folder, model)
        if other is not model:
            problems.add(model.line, f"this model's run and the one of line {other.line} would both be "
                                     f"{model.folder!r}: give them different names (name = ...).")
        checkpoint = model.config.target_checkpoint
        network = (model.config.target_model, str(Path(checkpoint).resolve()) if checkpoint else None)
        other = networks.setdefault(network, model)
        if other is not model:
            problems.add(model.line, f"the same network as line {other.line} ({network[0]}"
                                     f"{', ' + Path(checkpoint).name if checkpoint else ''}): list each once.")


def _identity(model: SweepModel) -> str:
    """A digest of what defines the run's results: its settings, the contents of its checkpoint
    and of the concept and label files it reads."""
    settings = {key: value for key, value in dataclasses.asdict(model.config).items()
                if key not in NOT_IN_IDENTITY}
    for key in ("target_checkpoint", "concept_set", "probe_labels"):
        value = settings.get(key)
        if isinstance(value, str) and Path(value).is_file():
            settings[key] = {"file": value, "sha256": file_sha256(value)}
    return stable_hash({"settings": settings, "layer_rule": model.layer_rule, "step": model.step})


# ----------------------------------------------------------------------------- the sweep's runs


def _finished_entry(folder: Path) -> Optional[dict]:
    """The sweep entry of a finished run folder, None where there is no folder."""
    if not folder.exists():
        return None
    try:
        return json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remove_stale_staging(result_dir: Path) -> None:
    """Staging folders that killed sweeps left behind (their process is gone)."""
    for folder in result_dir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- running


class SweepEngine(Protocol):
    """Where a sweep's heavy stages run: this process (:class:`LocalEngine`) or a Ray
    cluster (``ray_sweep.RayEngine``). Both give the same results."""

    def probe_pass(self, probe, **settings) -> Any:
        """``activations.record_probe_pass``'s work, with its arguments."""

    def score_layers(self, inputs, stored, log) -> None:
        """Put the similarity and quality of every layer in the cache (or leave them to
        ``pipeline.label_units``, which computes what the cache lacks)."""


class LocalEngine:
    """This process: the one-machine probe pass; ``label_units`` scores what the cache lacks."""

    def probe_pass(self, probe, **settings):
        return record_probe_pass(probe, **settings)

    def score_layers(self, inputs, stored, log) -> None:
        return None


@dataclass
class SweepResult:
    runs: list[SweepRun]  # in the spec's order
    computed: list[str]  # folders written by this call
    kept: list[str]  # folders that were finished already
    probe_passes: int = 0  # passes over the probe images (one per group of models that share settings)
    images_decoded: int = 0
    clip_batches: int = 0  # batches of probe images CLIP encoded
    concept_encodings: int = 0  # concept lists CLIP encoded (one per pass whose text features were not cached)
    warnings: list[str] = field(default_factory=list)


def run_sweep(spec_path: Union[str, Path], progress: Optional[ProgressFn] = None,
              engine: Optional[SweepEngine] = None) -> SweepResult:
    """Compute every run of the spec that is not finished yet (see the module docstring)."""
    spec, problems = _read_spec(Path(spec_path))
    engine = engine or LocalEngine()
    result_dir = spec.result_dir
    todo, kept, layers = _plan(spec, problems, progress)
    result_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(result_dir)
    entries = [SweepEntry(model.position, model.folder, model.config.run_name, _model_name(model),
                          model.config.target_checkpoint, model.step, model.layer_rule, layers[model.folder],
                          model.identity) for model in spec.models]
    atomic_write_text(result_dir / SWEEP_FILE, json.dumps(
        {"format": SWEEP_FORMAT, "spec": str(Path(spec_path).resolve()),
         "runs": [dataclasses.asdict(entry) for entry in entries]}, indent=2))
    result = SweepResult([], [], [model.folder for model in kept])
    by_folder = {entry.folder: entry for entry in entries}
    for group in _groups(todo):
        _run_group(group, by_folder, result_dir, engine, result, len(todo), progress)
    result.runs = read_sweep(result_dir)
    return result


def _model_name(model: SweepModel) -> str:
    target = model.config.target_model
    return target if isinstance(target, str) else target.name


def _plan(spec: SweepSpec, problems: SpecProblems, progress: Optional[ProgressFn]
          ) -> tuple[list[SweepModel], list[SweepModel], dict[str, list[str]]]:
    """Which runs are finished and which to compute; the latter's models loaded and their
    layers resolved. Raises for the problems found here and before, all at once."""

    todo, kept, layers = [], [], {}
    weights: dict[tuple[str, str], SweepModel] = {}
    for model in spec.models:
        folder = spec.result_dir / model.folder
        finished = _finished_entry(folder)
        if finished is not None:
            if finished.get("identity") == model.identity:
                kept.append(model)
                layers[model.folder] = list(finished.get("layers", []))
            else:
                problems.add(model.line, f"{folder} holds a run made with other settings or checkpoint (or not by "
                                         "this sweep): move it away, or pass another result_dir.")
            continue
        config = model.config
        try:
            with about("target_checkpoint" if config.target_checkpoint else "target_model"):
                loaded = load_target_model(config.target_model, config.target_checkpoint,
                                           weights_dir=config.data_dir, progress=progress)
        except DissectError as error:
            problems.add(model.line_of(error.setting), f"{model.folder}: the model cannot be loaded: {error}")
            continue
        other = weights.setdefault((loaded.name, loaded.weights_id), model)
        if other is not model:
            problems.add(model.line, f"the same weights as line {other.line}: list each network once.")
        try:
            if model.layer_rule is not None:
                resolved = resolve_rule(model.layer_rule, loaded.module, loaded.name)
            else:
                resolved = [layer.strip() for layer in config.target_layers if layer.strip()]
                with about("target_layers"):
                    for layer in resolved:
                        get_layer(loaded.module, layer)
        except DissectError as error:
            problems.add(model.line_of(error.setting or "layer_rule"), f"{model.folder}: {error}")
            continue
        model.config = dataclasses.replace(config, target_model=loaded, target_layers=tuple(resolved))
        layers[model.folder] = resolved
        todo.append(model)
    problems.raise_if_any()
    return todo, kept, layers


def _groups(models: Sequence[SweepModel]) -> list[list[SweepModel]]:
    """Models that share every setting but their own (pipeline.PER_MODEL_FIELDS) go in one pass."""

    groups: dict[str, list[SweepModel]] = {}
    for model in models:
        shared = {key: value for key, value in vars(model.config).items() if key not in PER_MODEL_FIELDS}
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(model)
    return list(groups.values())


def _run_group(group: Sequence[SweepModel], entries: dict[str, SweepEntry], result_dir: Path,
               engine: SweepEngine, result: SweepResult, total: int, progress: Optional[ProgressFn]) -> None:
    """One pass over the probe images for the group's models, then each one's run folder."""

    log = RunLog(progress)
    inputs = check_inputs([model.config for model in group], log)
    stored = look_up_cache(inputs, log)
    recorded = record_probe_images(inputs, stored, log, probe_pass=engine.probe_pass)
    if recorded is not None:
        result.probe_passes += 1
        result.images_decoded += recorded.images_decoded
        result.clip_batches += recorded.clip_batches
    result.concept_encodings += stored.text_features is None
    encode_concepts(inputs, stored, log)
    engine.score_layers(inputs, stored, log)
    for number, model in enumerate(group):
        log.start_model()
        labels = label_units(inputs, stored, number, log)
        staging = result_dir / f"{STAGING_PREFIX}{os.getpid()}-{model.folder}"
        staging.mkdir()
        try:
            write_run_folder(inputs, stored, number, labels, log, run_dir=staging)
            atomic_write_text(staging / ENTRY_FILE, json.dumps(dataclasses.asdict(entries[model.folder]), indent=2))
            os.rename(staging, result_dir / model.folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        result.computed.append(model.folder)
        result.warnings += [f"{model.folder}: {warning}" for warning in log.warnings]
        report(progress, "sweep runs", len(result.computed), total)
