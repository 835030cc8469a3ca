"""Shared fixtures. The reference outputs live in ../shared beside the checkout;
tests that read them skip cleanly where that folder is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture
def reference_dir() -> Path:
    """``../shared/reference``: the original tool's outputs and concept lists."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not present beside the checkout")
    return SHARED_REFERENCE

