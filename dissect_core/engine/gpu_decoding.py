"""Decoding JPEG probe images on the device (``--decoder torchvision``): batches decoded with
``torchvision.io.decode_jpeg`` and the models' preprocessing done as tensor operations; other
images take Pillow's path (``probe_loading``).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator, Optional

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import functional as F

from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.probe_loading import (
    ProbeBatch,
    ProbeDataset,
    check_num_workers,
    default_num_workers,
)
from dissect_core.engine.probe_sets import ProbeSet


def _convert_step(step: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """One step of a PIL-based transform as the same operation on a uint8 (C, H, W) tensor."""
    if isinstance(step, T.Resize):
        return lambda x: F.resize(x, step.size, step.interpolation, step.max_size, step.antialias)
    if isinstance(step, T.CenterCrop):
        return lambda x: F.center_crop(x, step.size)
    if isinstance(step, T.Grayscale):
        return lambda x: F.rgb_to_grayscale(x, step.num_output_channels)
    if isinstance(step, T.ToTensor):  # open_clip's MaybeToTensor too: uint8 [0, 255] → float [0, 1]
        return lambda x: x.float().div_(255)
    if isinstance(step, T.PILToTensor):
        return lambda x: x
    if isinstance(step, T.Normalize):
        return lambda x: F.normalize(x, step.mean, step.std)
    # open_clip's RGB conversions (MaybeConvertMode("RGB"), or _convert_to_rgb in older
    # releases): the decoded image is RGB already.
    if getattr(step, "__name__", None) == "_convert_to_rgb" or (
            type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB"):
        return lambda x: x
    raise InvalidInputError(
        f"The preprocessing step {step!r} has no tensor version here, so images cannot be decoded on the "
        "device for this model; use the 'pil' decoder."
    )


def tensor_preprocess(preprocess: Callable[[Image.Image], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The steps of a model's PIL preprocessing as tensor operations on an RGB uint8
    (3, H, W) image, on whatever device the image is.

    Understood: a ``transforms.Compose`` of Resize, CenterCrop, Grayscale, ToTensor,
    PILToTensor, Normalize and open_clip's RGB conversions (the preprocessing of the
    named models, torchvision checkpoints' fallback, the small CNN and open_clip's
    evaluation transforms), and torchvision's weight presets (``ImageClassification``:
    resize, centre crop, scale to [0, 1], normalise — which already run on tensors).
    Anything else raises InvalidInputError naming the step. Between steps the image
    stays uint8, as a PIL image does; resizing a tensor rounds like Pillow but its
    filters are not bit-identical (see :func:`device_probe_loader`).
    """
    steps = getattr(preprocess, "transforms", None)
    if steps is None and all(hasattr(preprocess, name) for name in ("resize_size", "crop_size", "mean", "std")):
        steps = [T.Resize(preprocess.resize_size, preprocess.interpolation, antialias=preprocess.antialias),
                 T.CenterCrop(preprocess.crop_size), T.ToTensor(), T.Normalize(preprocess.mean, preprocess.std)]
    if steps is None:  # a single step (e.g. a bare ToTensor); refused below if it has no tensor version
        steps = [preprocess]
    converted = [_convert_step(step) for step in steps]

    def run(image: torch.Tensor) -> torch.Tensor:
        for step in converted:
            image = step(image)
        return image

    return run


class _EncodedProbeDataset(Dataset):
    """Item ``i``: ``(i, uint8 tensor of the file's bytes)`` for a JPEG that the main
    process decodes, else what :class:`ProbeDataset` gives (Pillow in the worker)."""

    def __init__(self, probe: ProbeSet, transforms: dict[str, Callable[[Image.Image], torch.Tensor]]):
        self.pil = ProbeDataset(probe, transforms)

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        data = self.pil.probe.read_jpeg(index)
        if data is None:
            return self.pil[index]
        return index, torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[Optional[torch.Tensor]]:
    """RGB uint8 images on ``device``, one call for the batch; None where a file fails."""
    if not encoded:  # a batch without JPEGs (all PNGs, say): decode_jpeg refuses an empty list
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they still work.
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one damaged file fails the whole call: find which, one by one
            decoded: list[Optional[torch.Tensor]] = []
            for data in encoded:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
            return decoded


def device_probe_loader(
    probe: ProbeSet,
    transforms: dict[str, Callable[[Image.Image], torch.Tensor]],
    batch_size: int,
    num_workers: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> Iterator[ProbeBatch]:
    """Like :func:`probe_loader`, but JPEG files are decoded on ``device``.

    Loader workers only read the files; the main process decodes each batch's JPEGs in
    one ``torchvision.io.decode_jpeg`` call on ``device`` (nvJPEG on a GPU,
    libjpeg-turbo on the CPU) and applies :func:`tensor_preprocess` of each transform
    there. Other images (PNG, CMYK JPEGs, CIFAR's arrays) take the Pillow path of
    :func:`probe_loader` in the workers, and so does a JPEG ``decode_jpeg`` rejects;
    files Pillow cannot read either are skipped, as there. Batches hold their tensors
    on ``device``. Preprocessing steps without a tensor version are refused up front.

    The pixels are not bit-identical to the Pillow path's: tensor resizing and Pillow
    round differently. Measured on the CPU on synthetic JPEGs (tests/test_probe_data.py)
    the preprocessed values differ by at most a few 1/255 steps (README, Performance), so
    runs with either decoder are kept apart in the cache. On the CPU this path is slower
    than Pillow's (tensor resizing there is); it is meant for a GPU
    (``benchmarks/check_cuda.py`` times both).
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, not {batch_size}.")
    check_num_workers(num_workers)
    device = torch.device(device) if device is not None else torch.device("cpu")
    on_device = {key: tensor_preprocess(transform) for key, transform in transforms.items()}
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(
        _EncodedProbeDataset(probe, transforms),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=list,
        prefetch_factor=4 if workers > 0 else None,
    )
    pil = ProbeDataset(probe, transforms)

    def batches() -> Iterator[ProbeBatch]:
        for items in loader:
            encoded = [(at, data) for at, (_, data) in enumerate(items) if isinstance(data, torch.Tensor)]
            decoded = dict(zip((at for at, _ in encoded), _decode_jpegs([data for _, data in encoded], device)))
            good: list[tuple[int, dict[str, torch.Tensor]]] = []
            skipped: list[int] = []
            for at, (index, item) in enumerate(items):
                if at in decoded:
                    image = decoded[at]
                    item = ({key: convert(image) for key, convert in on_device.items()} if image is not None
                            else pil[index][1])  # rejected by decode_jpeg: Pillow decides
                if item is None:
                    skipped.append(index)
                else:
                    good.append((index, {key: tensor.to(device) for key, tensor in item.items()}))
            tensors = {key: torch.stack([item[key] for _, item in good]) for key in transforms} if good else {}
            yield ProbeBatch(torch.tensor([index for index, _ in good], dtype=torch.long), tensors, skipped)

    return batches()
