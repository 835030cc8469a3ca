"""Every prerequisite of a dissection, checked at once, in seconds, before any work.

:func:`check_prerequisites` looks at what a run will need (the device, the concept set,
the probe images, each target model's weights, the CLIP weights, writable folders with
room) without importing torch, building a model or listing a data set, and returns one
:class:`Prerequisite` per item: there, absent but fetched when the run starts, or missing
with the fix. ``describe`` refuses to start while any is missing and names them all in
one message (:class:`MissingPrerequisitesError`); ``dissect doctor`` prints the checklist.

An import-linter contract keeps this module free of torch, torchvision and open_clip
(importing torch alone takes seconds). So the checks read what the loaders would find on
disk: the same folders, the torch hub and Hugging Face caches. A file that is there but
damaged is still found when it is loaded.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

from dissect_core.choices.catalog import CLIP_ALIASES, IMAGENET_VAL_ENV, NAMED_MODELS, PROBE_SETS
from dissect_core.choices.concept_sets import ConceptSet, load_concept_set
from dissect_core.choices.catalog import with_source_defaults
from dissect_core.choices.config import DescribeConfig, check_num_workers
from dissect_core.common.errors import DissectError, InvalidInputError, MissingResourceError, about
from dissect_core.engine import downloads
from dissect_core.runs.side_tables import check_layer_name

OK, DOWNLOAD, MISSING = "ok", "download", "missing"

# Where the loaders look (engine.datasets, which imports torchvision, names them too;
# tests/test_prerequisites.py checks that both agree).
BRODEN_IMAGES = ("broden1_224", "images")
CIFAR_DIR = "cifar-100-python"
BRODEN_URL = "http://netdissect.csail.mit.edu/data/broden1_224.zip"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
TORCHVISION_URL = "https://download.pytorch.org/models/"
# The Hugging Face repos of the reference's CLIP names (OpenAI's weights), as open_clip's
# pretrained table lists them (tests/test_prerequisites.py checks them against it).
OPENAI_CLIP_REPOS = {
    "RN50": "timm/resnet50_clip.openai", "RN101": "timm/resnet101_clip.openai",
    "RN50x4": "timm/resnet50x4_clip.openai", "RN50x16": "timm/resnet50x16_clip.openai",
    "RN50x64": "timm/resnet50x64_clip.openai", "ViT-B-32": "timm/vit_base_patch32_clip_224.openai",
    "ViT-B-16": "timm/vit_base_patch16_clip_224.openai", "ViT-L-14": "timm/vit_large_patch14_clip_224.openai",
}
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's order
# Less free space than this fails at once; the exact need is checked once the models are
# loaded (pipeline._check_room), from their layer widths.
MIN_FREE_BYTES = 256 * 1024**2
# One connection try per download host, all at once: offline, this fails in well under it.
REACH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Prerequisite:
    """One thing a run needs, and whether it is here."""

    item: str  # "probe set", "target weights resnet18", ...
    status: str  # OK, DOWNLOAD (absent here; fetched when the run starts) or MISSING
    detail: str  # what was found, or what is wrong (a full sentence for a missing item)
    fix: str = ""  # what to do, for a missing item
    setting: Optional[str] = None  # the DescribeConfig field it is about
    url: str = ""  # where a DOWNLOAD item comes from
    error: Optional[DissectError] = field(default=None, compare=False)  # the loader's own error, if it gave one

    @property
    def missing(self) -> bool:
        return self.status == MISSING

    def message(self) -> str:
        return f"{self.detail} {self.fix}".strip()


class MissingPrerequisitesError(InvalidInputError):
    """Some prerequisites are missing: the message names each with its fix."""

    def __init__(self, items: Sequence[Prerequisite]):
        self.items = list(items)
        if len(self.items) == 1:
            only = self.items[0]
            text = only.message()
            if only.setting and f"`{only.setting}`" not in text:
                text = f"`{only.setting}`: {text}"  # as errors.about() names the setting
        else:
            text = f"{len(self.items)} things this run needs are missing:\n" + "\n".join(
                f"- {item.item}: {item.message()}" for item in self.items)
        super().__init__(text)
        settings = {item.setting for item in self.items}
        self.setting = settings.pop() if len(settings) == 1 else None


def check_settings(config: DescribeConfig) -> list[str]:
    """The checks of plain settings (the layer list, counts): the layers, stripped, or an
    ``InvalidInputError`` about the first bad setting. The pipeline checks the names that
    need its registries' code (models, similarity parameters) after these."""
    layers = [layer.strip() for layer in config.target_layers if layer.strip()]
    with about("target_layers"):
        if not layers:
            raise InvalidInputError(
                "No target layers given: set `target_layers` to module paths such as layer2,layer3,layer4.")
        if len(set(layers)) != len(layers):
            raise InvalidInputError(f"A layer of `target_layers` is listed twice: {','.join(layers)}.")
        for layer in layers:  # each names files of the run folder (maps/<layer>.npy)
            check_layer_name(layer, "`target_layers`", "Give module paths such as layer4 or features.0 "
                             "(dissect_core.engine.models.layer_names lists a model's).")
    for name in ("batch_size", "top_images"):
        value = getattr(config, name)
        if value < 1:
            raise InvalidInputError(f"`{name}` must be at least 1, not {value}.")
    if config.top_maps < 0:
        raise InvalidInputError(f"`top_maps` must be 0 or more, not {config.top_maps}.")
    with about("num_workers"):
        check_num_workers(config.num_workers)
    return layers


def require_prerequisites(configs: Sequence[DescribeConfig]) -> list[Prerequisite]:
    """The checklist, or :class:`MissingPrerequisitesError` naming every missing item.
    A bad plain setting (:func:`check_settings`) is said first: it is a typo to fix before
    anything else matters."""
    for config in configs:
        check_settings(config)
    items = check_prerequisites(configs)
    missing = [item for item in items if item.missing]
    if len(missing) == 1 and missing[0].error is not None:
        with about(missing[0].setting):  # alone, the loader's own error says it best (and keeps its type)
            raise missing[0].error
    if missing:
        raise MissingPrerequisitesError(missing)
    return items


def check_prerequisites(configs: Sequence[DescribeConfig], network: bool = True) -> list[Prerequisite]:
    """One :class:`Prerequisite` per thing the runs of ``configs`` need (one probe pass:
    they share everything but the target model). With ``network``, each download host is
    tried once (all at once, :data:`REACH_TIMEOUT_S`): an unreachable one makes its
    downloads missing, with the manual fix."""
    if not configs:
        return []
    configs = [with_source_defaults(each) for each in configs]  # a concept set of None: the source's own
    config = configs[0]
    items = [_device(config.device)]
    if config.concept_source == "clip":
        items.append(_concept_set(config.concept_set))
    items += _probe(config)
    if config.concept_source != "clip" and config.probe_labels:
        labels = Path(config.probe_labels).expanduser()
        items.append(Prerequisite("probe labels", OK, str(labels.resolve()), setting="probe_labels") if labels.is_file()
                     else Prerequisite("probe labels", MISSING, f"The labels CSV {labels.resolve()} does not exist.",
                                       "Check the `probe_labels` path (a CSV with the columns image,label).",
                                       setting="probe_labels"))
    items += [_target(each) for each in configs]
    if config.concept_source == "clip":
        items.append(_clip(config.clip_model))
    items.append(_folder("cache", config.activation_dir, "activation_dir"))
    items.append(_folder("run folder", config.result_dir, "result_dir"))
    return _reach(items) if network else items


# ----------------------------------------------------------------------------- the items


def _device(name: Optional[str]) -> Prerequisite:
    if name is None or name == "auto":
        count, _ = cuda_devices()
        return Prerequisite("device", OK, f"{'CUDA' if count else 'the CPU'} (auto)", setting="device")
    kind, _, index = str(name).partition(":")
    if kind == "cpu":
        return Prerequisite("device", OK, "the CPU", setting="device")
    if kind != "cuda" or (index and not index.isdigit()):
        return Prerequisite("device", MISSING, f"Unknown device {name!r}.", "Use 'cpu', 'cuda', 'cuda:N' or 'auto'.",
                            setting="device")
    count, why = cuda_devices()
    wanted = int(index or 0)
    if wanted < count:
        return Prerequisite("device", OK, f"CUDA device {wanted} of {count}", setting="device")
    detail = (f"`device` {name} was requested but PyTorch sees no CUDA GPU on this machine ({why})." if not count
              else f"`device` {name}: only {count} CUDA device(s) are visible.")
    return Prerequisite("device", MISSING, detail, "Use `device` cpu (or auto), or install a CUDA build of PyTorch "
                        "on a machine with an NVIDIA GPU.", setting="device")


def cuda_devices() -> tuple[int, str]:
    """How many CUDA GPUs PyTorch would see, and why none, asked of the NVIDIA driver
    (``cuInit``, ``cuDeviceGetCount``) rather than of torch, whose import takes seconds.
    Both honour ``CUDA_VISIBLE_DEVICES``."""
    if "torch" in sys.modules:  # already paid for: ask it
        torch = sys.modules["torch"]
        return (torch.cuda.device_count(), f"torch {torch.__version__}") if torch.cuda.is_available() \
            else (0, f"torch {torch.__version__}")
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return 0, "PyTorch is not installed"
    if "+cpu" in version:
        return 0, f"torch {version} is a CPU-only build"
    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            driver = ctypes.CDLL(library)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0, f"torch {version}; the NVIDIA driver finds no usable GPU"
        return count.value, f"torch {version}"
    return 0, f"torch {version}; no NVIDIA driver is installed"


def _concept_set(concept_set) -> Prerequisite:
    if isinstance(concept_set, ConceptSet):
        return Prerequisite("concept set", OK, f"{concept_set.name} ({len(concept_set):,} concepts)")
    try:
        concepts = load_concept_set(concept_set)
    except DissectError as error:
        return _from_error("concept set", error, "concept_set")
    return Prerequisite("concept set", OK, f"{concepts.name}: {len(concepts):,} concepts", setting="concept_set")


def _probe(config: DescribeConfig) -> list[Prerequisite]:
    key, data_dir = config.d_probe.strip(), Path(config.data_dir).expanduser()
    if key not in PROBE_SETS:
        path = Path(key).expanduser()
        if path.is_dir():
            return [Prerequisite("probe set", OK, f"the folder {path.resolve()}", setting="d_probe")]
        if os.sep in key or "/" in key or key.startswith((".", "~")):
            return [Prerequisite("probe set", MISSING, f"The image folder {path.resolve()} does not exist.",
                                 "Give an existing folder of images as `d_probe`.", setting="d_probe")]
        return [Prerequisite("probe set", MISSING, f"Unknown probe set {key!r}.",
                             f"Use one of {', '.join(PROBE_SETS.names())}, or the path of a folder of images.",
                             setting="d_probe")]
    items = []
    if key in ("imagenet_val", "imagenet_broden"):
        root = config.imagenet_val_dir or os.environ.get(IMAGENET_VAL_ENV)
        fix = ("ImageNet cannot be downloaded (it needs a licence from image-net.org): pass its validation "
               f"folder (one subfolder per class) as `imagenet_val_dir` or in ${IMAGENET_VAL_ENV}.")
        if not root:
            items.append(Prerequisite("probe set (ImageNet)", MISSING, "The ImageNet validation images are missing "
                                      f"(`imagenet_val_dir` and ${IMAGENET_VAL_ENV} are not set).", fix,
                                      setting="imagenet_val_dir"))
        elif not Path(root).expanduser().is_dir():
            items.append(Prerequisite("probe set (ImageNet)", MISSING, f"The ImageNet validation folder {root} "
                                      "does not exist.", fix, setting="imagenet_val_dir"))
        else:
            items.append(Prerequisite("probe set (ImageNet)", OK, f"{Path(root).expanduser().resolve()}",
                                      setting="imagenet_val_dir"))
    if key in ("broden", "imagenet_broden"):
        items.append(_data_set("probe set (Broden)", data_dir.joinpath(*BRODEN_IMAGES), BRODEN_URL, config.download,
                               "broden", "about 1 GB", data_dir))
    if key.startswith("cifar100"):
        items.append(_data_set("probe set (CIFAR-100)", data_dir / CIFAR_DIR, CIFAR_URL, config.download, key, "161 MB",
                               data_dir))
    return items


def _data_set(item: str, folder: Path, url: str, download: bool, name: str, size: str,
              data_dir: Path) -> Prerequisite:
    fetch = f"`dissect download {name} --data_dir {data_dir}`"
    if folder.is_dir():
        return Prerequisite(item, OK, str(folder.resolve()), setting="d_probe")
    if download:
        return Prerequisite(item, DOWNLOAD, f"{folder.resolve()} is absent: it is downloaded ({size}) "
                            "when the run starts.", f"Fetch it on a machine with a network with {fetch} and copy "
                            f"{folder.parent.resolve()} here.", setting="d_probe", url=url)
    return Prerequisite(item, MISSING, f"The probe set {name} is missing (looked in {folder.resolve()}).",
                        f"Pass `download` to fetch it ({size}), or fetch it beforehand with {fetch}.",
                        setting="d_probe")


def _target(config: DescribeConfig) -> Prerequisite:
    model = config.target_model
    if not isinstance(model, str):
        return Prerequisite(f"target weights {model.name}", OK, "given as a loaded model", setting="target_model")
    name, item = model.strip(), f"target weights {model.strip()}"
    if config.target_checkpoint:
        path = Path(config.target_checkpoint).expanduser()
        if path.is_file():
            return Prerequisite(item, OK, str(path.resolve()), setting="target_checkpoint")
        return Prerequisite(item, MISSING, f"The checkpoint {path.resolve()} does not exist.",
                            "Check the `target_checkpoint` path.", setting="target_checkpoint")
    if name in NAMED_MODELS:
        named = NAMED_MODELS.get(name).value
        path = Path(config.data_dir).expanduser() / named.weights_file
        if path.is_file():
            return Prerequisite(item, OK, str(path.resolve()), setting="target_model")
        return Prerequisite(item, DOWNLOAD, f"{path.resolve()} is absent: it is downloaded when the run starts.",
                            f"Download {named.weights_url} and save it as {path.resolve()}, or pass a copy as "
                            "`target_checkpoint`.", setting="target_model", url=named.weights_url)
    if name == "small_cnn":
        return Prerequisite(item, MISSING, "small_cnn has no default weights.",
                            "Pass a checkpoint of it as `target_checkpoint` (the demo's are in "
                            "dissect_core/demo_data/weights/).", setting="target_checkpoint")
    # A torchvision architecture: its ImageNet weights in torch's hub cache, as torchvision names them.
    checkpoints = _torch_hub_dir() / "checkpoints"
    found = sorted(checkpoints.glob(f"{name}-*.pth")) if checkpoints.is_dir() else []
    if found:
        return Prerequisite(item, OK, str(found[0]), setting="target_model")
    return Prerequisite(item, DOWNLOAD, f"No {name}-*.pth in {checkpoints}: it is downloaded (torchvision's "
                        "ImageNet weights) when the run starts.", f"Copy {name}'s file from another machine's torch hub cache into "
                        f"{checkpoints}, or pass your own weights as `target_checkpoint`.", setting="target_model",
                        url=TORCHVISION_URL)


def _torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (its default: ``$TORCH_HOME/hub``)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub"


def _clip(clip_model) -> Prerequisite:
    if not isinstance(clip_model, str):
        return Prerequisite("CLIP weights", OK, f"{clip_model.name}, given as a loaded model", setting="clip_model")
    arch_text, _, source = clip_model.strip().partition(":")
    source = source.strip()
    if source and (os.sep in source or "/" in source or source.startswith((".", "~"))):
        path = Path(source).expanduser()
        if path.is_file():
            return Prerequisite("CLIP weights", OK, str(path.resolve()), setting="clip_model")
        return Prerequisite("CLIP weights", MISSING, f"The CLIP checkpoint {path.resolve()} does not exist.",
                            "Check the file path after the colon in `clip_model` ARCH:/path/to/checkpoint.",
                            setting="clip_model")
    arch = CLIP_ALIASES.get(arch_text.strip()).value if arch_text.strip() in CLIP_ALIASES else arch_text.strip()
    repo = OPENAI_CLIP_REPOS.get(arch) if source.lower() in ("", "openai") else None
    if repo is None:  # another ARCH:TAG: open_clip's table (which imports torch) resolves it when CLIP loads
        return Prerequisite("CLIP weights", OK, f"{clip_model}: looked up when CLIP loads", setting="clip_model")
    from huggingface_hub import constants, try_to_load_from_cache

    for filename in CLIP_FILES:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Prerequisite("CLIP weights", OK, cached, setting="clip_model")
    return Prerequisite("CLIP weights", DOWNLOAD, f"{repo} is not in the Hugging Face cache "
                        f"{constants.HF_HUB_CACHE}: it is downloaded when the run starts.",
                        f"Download {constants.ENDPOINT}/{repo}/resolve/main/{CLIP_FILES[0]} and pass it as "
                        f"`clip_model` {arch}-quickgelu:/path/to/{CLIP_FILES[0]}, or copy a Hugging Face cache that "
                        f"holds it into {constants.HF_HUB_CACHE}.", setting="clip_model",
                        url=f"{constants.ENDPOINT}/{repo}/resolve/main/{CLIP_FILES[0]}")


def _folder(what: str, folder, setting: str) -> Prerequisite:
    """Writable (the folder, or the nearest existing folder above it, which the run makes
    it in) and with room; nothing is created here."""
    folder = Path(folder).expanduser().resolve()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path(folder.anchor))
    fix = f"Fix its permissions, or pass another `{setting}`."
    if not existing.is_dir():
        return Prerequisite(what, MISSING, f"Cannot write the {what} in {folder}: {existing} is a file, not a folder.", fix,
                            setting=setting)
    try:
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError("Permission denied")
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        return Prerequisite(what, MISSING, f"Cannot write the {what} in {folder}: {exc.strerror or exc}.", fix,
                            setting=setting)
    if free < MIN_FREE_BYTES:
        return Prerequisite(what, MISSING, f"Not enough free disk space for the {what} in {folder}: "
                            f"{free / 1024**2:,.0f} MB are free.", f"Free some space, or pass another `{setting}`.",
                            setting=setting)
    return Prerequisite(what, OK, f"{folder} ({free / 1024**3:,.1f} GB free)", setting=setting)


def _from_error(item: str, error: DissectError, setting: str) -> Prerequisite:
    if isinstance(error, MissingResourceError):
        return Prerequisite(item, MISSING, f"{error.what} is missing (looked in {error.looked_in}).",
                            error.how_to_fix, setting=setting, error=error)
    return Prerequisite(item, MISSING, str(error), setting=setting, error=error)


def _reach(items: list[Prerequisite]) -> list[Prerequisite]:
    """Downloads from an unreachable host become missing items with the manual fix."""
    hosts = sorted({urlsplit(item.url).hostname or "" for item in items if item.status == DOWNLOAD})
    if not hosts:
        return items
    urls = {urlsplit(item.url).hostname: item.url for item in items if item.status == DOWNLOAD}
    with ThreadPoolExecutor(len(hosts)) as pool:
        reachable = dict(zip(hosts, pool.map(lambda host: downloads.is_reachable(urls[host], REACH_TIMEOUT_S),
                                             hosts)))
    result = []
    for item in items:
        host = urlsplit(item.url).hostname or ""
        if item.status == DOWNLOAD and not reachable[host]:
            absent = item.detail.partition(": it is downloaded")[0]
            item = Prerequisite(item.item, MISSING, f"{absent}, and {host} cannot be reached to download it "
                                "(offline?).", item.fix, setting=item.setting, url=item.url)
        result.append(item)
    return result
