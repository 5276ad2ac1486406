"""Fixtures for the faces tests: dlib landmarks on the real sample data, computed once per
session with tests/conftest.py's detector (detection over the 192 sample frames takes a few seconds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

IDS = ("id00017/OLguY5ofUrY", "id00061/mMOd25Ag7XY", "id00081/vvLu_7TpP8c")


@pytest.fixture(scope="session")
def fsth_frames(sample_dir) -> list[Path]:
    """The 192 sample frames: 3 identities x (train, test) x 32, VoxCeleb2's 224x224 crops."""
    frames = sorted((sample_dir / "fsth_eval_subset").glob("*/*/*/combined/*_rgb.png"))
    if len(frames) != 192:
        pytest.skip(f"expected 192 sample frames, found {len(frames)}")
    return frames


@pytest.fixture(scope="session")
def fsth_faces(fsth_frames, detector) -> dict[Path, list]:
    """dlib faces per sample frame (largest first)."""
    from thead.faces import load_image

    return {p: detector.detect(load_image(p)) for p in fsth_frames}


@pytest.fixture(scope="session")
def processed_pairs(sample_dir) -> list[tuple[Path, Path]]:
    """(rgb, authors' contour) for the 64 processed frames of id00017."""
    rgbs = sorted((sample_dir / "fsth_eval_subset_processed").glob("*/*/*/combined/*_rgb.png"))
    if not rgbs:
        pytest.skip("no processed sample frames")
    return [(p, p.with_name(p.name.replace("_rgb", "_contour"))) for p in rgbs]


def decode_clip(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="session")
def clip_tracks(sample_dir, detector) -> dict[str, np.ndarray]:
    """Raw dlib landmark tracks float [T, 68, 2] of the id00017 and id00061 sample clips."""
    from thead.faces import LandmarkTracker

    tracks = {}
    for ident in IDS[:2]:
        clip = next((sample_dir / "test_videos" / ident).glob("*.mp4"))
        tracker = LandmarkTracker(detector)
        faces = [tracker(frame) for frame in decode_clip(clip)]
        assert all(f is not None for f in faces)
        tracks[ident] = np.stack([f.landmarks for f in faces])
    return tracks
