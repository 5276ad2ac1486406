"""Fixtures of the training tests: the processed sample frames (with segmentation maps) and
their dataset index, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def processed(sample_dir) -> Path:
    """lsr-sample's processed FSTH subset: id00017's train and test clips, 32 frames each."""
    return sample_dir / "fsth_eval_subset_processed"


@pytest.fixture(scope="session")
def index_path(processed, tmp_path_factory) -> Path:
    """The dataset index of ``processed``, built by walking it (not read from a file)."""
    from thead.train.data import DatasetIndex

    path = tmp_path_factory.mktemp("index") / "index.npz"
    _, report = DatasetIndex.load_or_build(processed, path)
    assert report is not None and path.exists()
    return path
