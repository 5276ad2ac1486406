"""Shared fixtures: where the real sample data and parity vectors live.

Tests read ``../shared`` (beside the checkout) in place and skip with a clear reason when it
is absent, as in a user's fresh clone. ``THEAD_SHARED`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THEAD_SHARED", REPO.parent / "shared"))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set THEAD_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED, "shared data")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """Real VoxCeleb2 frames and clips in the authors' layouts (lsr-sample)."""
    return _need(SHARED / "data" / "lsr-sample", "the lsr-sample data")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The authors' reduced TF checkpoint and its reference vectors."""
    return _need(SHARED / "parity", "the parity vectors")


@pytest.fixture(autouse=True, scope="session")
def _offline():
    """No test downloads anything unless it says so (``monkeypatch.delenv("THEAD_OFFLINE")``
    with a fake server): e.g. ``--landmarks auto`` stays on dlib instead of probing FAN's host."""
    before = os.environ.get("THEAD_OFFLINE")
    os.environ["THEAD_OFFLINE"] = "1"
    yield
    if before is None:
        os.environ.pop("THEAD_OFFLINE", None)
    else:
        os.environ["THEAD_OFFLINE"] = before


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Two cores here; keep tests from oversubscribing when pytest runs beside other work.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread, for modules whose code runs its own threads beside rendering (the
    animate pipeline) or renders a few frames at a time: on 2 shared cores a second intra-op
    thread spins against them (measured 0.15 vs 0.97 s a frame with the reduced weights)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def parity_weights(parity_dir, tmp_path_factory) -> Path:
    """The authors' reduced parity checkpoint converted to thead weights (config + safetensors)."""
    from thead.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("weights") / "lsr-reduced"
    convert_checkpoint(parity_dir / "ckpt_reduced", out)
    return out


@pytest.fixture(scope="session")
def parity_vectors(parity_dir):
    """The official TF reference inputs/outputs (NHWC float32), as a dict of numpy arrays."""
    import numpy as np

    with np.load(parity_dir / "lsr_reduced_vectors.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def random_lsr_weights(tmp_path_factory) -> Path:
    """Random-initialised reduced-width LSR weights (config.json + model.safetensors), seed 0:
    a weights folder that is not the parity checkpoint."""
    from thead.config import LSRConfig
    from thead.model import LSR

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("weights") / "tiny"
    LSR(LSRConfig.reduced()).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def detector():
    """dlib's HOG detector + 68-point predictor (stateless between calls: shared per session)."""
    from thead.faces.landmarks import make_detector

    return make_detector("dlib")


@pytest.fixture(scope="module")
def encoders(parity_weights):
    """The parity checkpoint's two encoders only (what enrolment loads)."""
    from thead.model import ENCODE_NETWORKS, LSR

    return LSR.from_pretrained(parity_weights, networks=ENCODE_NETWORKS)


@pytest.fixture(scope="module")
def parity_model(parity_weights):
    """The whole parity model (all five networks), as ``LSR.from_pretrained`` loads it."""
    from thead.model import LSR

    return LSR.from_pretrained(parity_weights)


@pytest.fixture(scope="module")
def avatar_store(tmp_path_factory, sample_dir, parity_model):
    """An avatar store with "p17" (4 shots of id00017's train frames) and "astro" (the demo's
    portrait), enrolled with the parity model and dlib."""
    from thead.avatar import AvatarStore
    from thead.demo import astronaut
    from thead.enroll import EnrollOptions, enroll
    from thead.faces import make_detector, save_image

    store = AvatarStore(tmp_path_factory.mktemp("avatars"))
    det = make_detector("dlib")
    enroll(sample_dir / "fsth_eval_subset/train/id00017/OLguY5ofUrY/combined", "p17", EnrollOptions(num_shots=4),
           model=parity_model, store=store, detector=det)
    photo = tmp_path_factory.mktemp("photo") / "astronaut.png"
    save_image(photo, astronaut())
    enroll(photo, "astro", model=parity_model, store=store, detector=det)
    return store


@pytest.fixture
def hf_env(tmp_path, monkeypatch) -> Path:
    """HF_* variables pointed into ``tmp_path`` (tests/fake_hub.py ``isolate_hf_env``)."""
    from tests.fake_hub import isolate_hf_env

    return isolate_hf_env(tmp_path, monkeypatch)


@pytest.fixture
def hub_weights(random_lsr_weights) -> Path:
    """The weights folder ``fake_hub`` serves as ``FAKE_REPO``; a module overrides it to serve
    others."""
    return random_lsr_weights


@pytest.fixture
def fake_hub(hf_env, hub_weights, monkeypatch):
    """A fake Hub on 127.0.0.1 serving ``hub_weights`` as ``FAKE_REPO``, with HF_ENDPOINT at it."""
    from tests.fake_hub import FAKE_REPO, FakeHub, repo_files

    with FakeHub() as server:
        server.add_repo(FAKE_REPO, repo_files(hub_weights, FAKE_REPO))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


class Recorder:
    """A ``thead.progress.Progress`` that keeps what it receives: ``updates`` as (done, total,
    stage, info) in order, and ``notes``."""

    def __init__(self):
        self.updates: list[tuple[int, int | None, str, str]] = []
        self.notes: list[str] = []

    def update(self, done, total=None, *, stage="", info=""):
        self.updates.append((done, total, stage, info))

    def note(self, text):
        self.notes.append(text)

    def counts(self, stage: str | None = None) -> list[int]:
        return [u[0] for u in self.updates if stage is None or u[2] == stage]


@pytest.fixture
def recorder() -> Recorder:
    """A fresh ``Recorder`` to pass as an API's ``progress``."""
    return Recorder()
