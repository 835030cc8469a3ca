"""Loading probe images for a pass over them: each image decoded once (Pillow) and preprocessed
for every model recorded in the pass, in batches; unreadable files come back as ``None`` and are
reported as skipped, never a crash.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dissect_core.choices.config import check_num_workers, default_num_workers
from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.probe_sets import ProbeSet


class ProbeDataset(Dataset):
    """Probe images, each decoded once and passed through every transform.

    Item ``i`` is ``(i, {key: tensor})``, or ``(i, None)`` when the file cannot be read.
    """

    def __init__(self, probe: ProbeSet, transforms: dict[str, Callable[[Image.Image], torch.Tensor]]):
        self.probe = probe
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, index: int) -> tuple[int, Optional[dict[str, torch.Tensor]]]:
        try:
            image = self.probe.load_image(index)
        except InvalidInputError:
            return index, None
        return index, {key: transform(image) for key, transform in self.transforms.items()}


@dataclass
class ProbeBatch:
    """A collated batch: the readable images' indices and tensors, and the skipped indices."""

    indices: torch.Tensor  # LongTensor of the images in ``tensors``, in order
    tensors: dict[str, torch.Tensor]  # one (B, …) tensor per transform key; {} if all were skipped
    skipped: list[int]

    def pin_memory(self) -> "ProbeBatch":
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return ProbeBatch(self.indices.pin_memory(), {k: v.pin_memory() for k, v in self.tensors.items()}, self.skipped)


def collate_probe_batch(items: Sequence[tuple[int, Optional[dict[str, torch.Tensor]]]]) -> ProbeBatch:
    good = [(index, tensors) for index, tensors in items if tensors is not None]
    skipped = [index for index, tensors in items if tensors is None]
    indices = torch.tensor([index for index, _ in good], dtype=torch.long)
    stacked = {key: torch.stack([tensors[key] for _, tensors in good]) for key in good[0][1]} if good else {}
    return ProbeBatch(indices, stacked, skipped)


def probe_loader(
    probe: ProbeSet,
    transforms: dict[str, Callable[[Image.Image], torch.Tensor]],
    batch_size: int,
    num_workers: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> DataLoader:
    """Batches of :class:`ProbeBatch` over the probe set, in order.

    For a CUDA ``device`` batches come in pinned memory, so their copies to the GPU
    overlap with the models' work; each worker keeps 4 batches decoded ahead.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, not {batch_size}.")
    check_num_workers(num_workers)
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        ProbeDataset(probe, transforms),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_probe_batch,
        pin_memory=device is not None and torch.device(device).type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
