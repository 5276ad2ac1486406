"""Fixtures of the eval tests: real sample frames (the dlib detector is tests/conftest.py's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def fsth(sample_dir) -> Path:
    """The FSTH-layout sample test set (3 people, 32 train + 32 test frames each)."""
    return sample_dir / "fsth_eval_subset"


@pytest.fixture(scope="session")
def frame(fsth) -> np.ndarray:
    from thead.faces.images import load_image

    return load_image(next((fsth / "test" / "id00017").glob("*/combined/00000_rgb.png")))


def frame_path(fsth: Path, split: str, person: str, index: int) -> Path:
    return next((fsth / split / person).glob(f"*/combined/{index:05d}_rgb.png"))
