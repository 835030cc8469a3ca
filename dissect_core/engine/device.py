"""Choosing the torch device: CUDA when there is a GPU, the CPU otherwise."""
from __future__ import annotations

from typing import Optional

import torch

from dissect_core.common.errors import InvalidInputError


def resolve_device(name: Optional[str] = None) -> torch.device:
    """Turn a user's device name into a ``torch.device``.

    ``None`` or ``"auto"`` picks CUDA when PyTorch sees a GPU and the CPU otherwise.
    Asking for CUDA on a machine without one is an error naming the fix, rather than
    a crash deep inside the first forward pass.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"Unknown device {name!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'."
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"`device` {name} was requested but PyTorch sees no CUDA GPU on this machine "
                f"(torch {torch.__version__}). Use `device` cpu (or auto), or install a CUDA "
                "build of PyTorch on a machine with an NVIDIA GPU."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"`device` {name}: only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
    elif device.type != "cpu":
        raise InvalidInputError(f"Device type {device.type!r} is not supported: use cpu or cuda.")
    return device
