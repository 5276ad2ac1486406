"""The test set of the paper's protocol (ref §7, §1.8): the FSTH layout (Zakharov et al.),
``<root>/train/<person>/<video>/combined/000NN_rgb.png`` each person's pool of source frames and
``<root>/test/<person>/<video>/combined/000NN_rgb.png`` the held-out frames; the K shots
(``thead.enroll.shot_indices``) and the input checks made before any network loads."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from thead.errors import DatasetError, ImageError

TESTSET_ENV = "THEAD_VOXCELEB_FSTH"
FRAME_SIZE = 224
RGB_PATTERN = "*_rgb*"
HOW_TO_GET_VOXCELEB = (
    f"the VoxCeleb2 few-shot test set is not configured: set {TESTSET_ENV} to its folder "
    "(FSTH layout: train/<person>/<video>/combined/000NN_rgb.png and test/...) or to a Hub dataset "
    "repo id; the 50-person split of Zakharov et al. (FSTH) is linked from the LSR release's README, "
    "or pass --testset PATH"
)


@dataclass(frozen=True)
class TestPerson:
    """One identity: its source pool (train) and held-out frames (test), sorted by name."""

    key: str  # the person id (``id00017``), or ``<id>_<video>`` when an id has several videos
    train_frames: tuple[Path, ...]
    test_frames: tuple[Path, ...]

    @property
    def test_ids(self) -> tuple[int, ...]:
        return tuple(frame_number(p) for p in self.test_frames)


@dataclass(frozen=True)
class TestSet:
    root: Path
    people: tuple[TestPerson, ...]

    def select(self, keys: tuple[str, ...]) -> TestSet:
        if not keys:
            return self
        known = {p.key: p for p in self.people}
        missing = [k for k in keys if k not in known]
        if missing:
            raise DatasetError(f"person {missing[0]} is not in the test set {self.root}")
        return TestSet(self.root, tuple(known[k] for k in keys))


def frame_number(path: Path) -> int:
    m = re.match(r"(\d+)", path.name)
    if m is None:
        raise DatasetError(f"{path} has no frame number in its name")
    return int(m.group(1))


def resolve_testset(spec: str | os.PathLike) -> Path:
    """``voxceleb`` -> ``$THEAD_VOXCELEB_FSTH`` (a folder or a Hub dataset repo id), else the
    authors' evaluation subset (``thead.release``: downloaded once into the cache); else a path."""
    if str(spec) != "voxceleb":
        return Path(spec)
    value = os.environ.get(TESTSET_ENV, "").strip()
    if not value:
        from thead.release import release_testset, testset_paths

        return testset_paths(release_testset())[0]
    if Path(value).is_dir() or "/" not in value or Path(value).is_absolute():
        return Path(value)
    try:  # a Hub dataset repo id
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(value, repo_type="dataset"))
    except Exception as e:  # offline, unknown repo, auth: one line, with the way out
        raise DatasetError(f"cannot fetch the test set {value} from the Hub ({type(e).__name__}); {HOW_TO_GET_VOXCELEB}") from None


def load_testset(root: str | os.PathLike) -> TestSet:
    """Index an FSTH-layout folder; raises ``DatasetError`` when it is missing or malformed."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"test set {root} does not exist")
    layout = f"expected {root}/train/<person>/<video>/combined/000NN_rgb.png and {root}/test/..."
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetError(f"{root} is not an FSTH test set ({layout})")
    test_dirs = sorted(d for d in (root / "test").glob("*/*/*") if d.is_dir() and any(d.glob(RGB_PATTERN)))
    if not test_dirs:
        raise DatasetError(f"{root}/test holds no frames ({layout})")
    per_id: dict[str, int] = {}
    for d in test_dirs:
        per_id[d.parts[-3]] = per_id.get(d.parts[-3], 0) + 1
    people = []
    for d in test_dirs:
        person, video, part = d.parts[-3:]
        train = root / "train" / person / video / part
        if not train.is_dir():
            candidates = sorted(x for x in (root / "train" / person).glob("*/*") if x.is_dir())
            if len(candidates) != 1:
                raise DatasetError(f"no train/ frames for {person}/{video} in {root}")
            train = candidates[0]
        key = person if per_id[person] == 1 else f"{person}_{video}"
        people.append(TestPerson(key, _frames(train), _frames(d)))
    return TestSet(root, tuple(people))


def _frames(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.glob(RGB_PATTERN) if p.is_file()))


def check_testset(testset: TestSet, shots: tuple[int, ...], *, need_train: bool = True) -> None:
    """Bad input before any work: too few source frames for K, frames of the wrong size."""
    k = max(shots)
    for person in testset.people:
        if need_train and len(person.train_frames) < k:
            raise DatasetError(
                f"person {person.key} has {len(person.train_frames)} source frames in train/, fewer than K={k}"
            )
        for path in (person.train_frames if need_train else ()) + person.test_frames:
            check_frame_size(path, (FRAME_SIZE, FRAME_SIZE))


def check_frame_size(path: Path, size: tuple[int, int]) -> None:
    try:
        with Image.open(path) as im:
            got = im.size
    except OSError as e:
        raise ImageError(f"{path} cannot be read as an image ({e})") from None
    if got != size:
        raise ImageError(f"{path} is {got[0]}x{got[1]}; frames must be {size[0]}x{size[1]}")
