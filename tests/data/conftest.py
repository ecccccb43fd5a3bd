"""Fixtures building tiny Cloud-Robotics-layout datasets in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_tiny_dataset


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Two small resolutions (64x48, 32x24), 3 frames per split, with depth and sidecars."""
    return make_tiny_dataset(tmp_path / "ds", resolutions=("64x48", "32x24"), n=3)


@pytest.fixture
def tiny_res(tiny: Path) -> Path:
    """The 64x48 resolution directory of ``tiny``."""
    return tiny / "64x48"
