"""Fixtures of the CLI tests that render: a THEAD_HOME per module with avatar 'p17' enrolled
through the CLI from the real id00017 frames and the authors' reduced parity weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_animate import TRAIN_17


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """THEAD_HOME for this module (empty until ``enrolled``)."""
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THEAD_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def enrolled(home, parity_weights, sample_dir) -> str:
    """Avatar 'p17' enrolled with ``thead enroll`` (2 shots, dlib landmarks) into ``home``."""
    import thead.cli.avatar  # noqa: F401  (registers the commands)
    from thead.cli import main

    code = main(["enroll", str(sample_dir / TRAIN_17), "--name", "p17", "--shots", "2", "--weights", str(parity_weights),
                 "--landmarks", "dlib", "--quiet"])
    assert code == 0
    return "p17"
