"""The paper's evaluation protocol (ref §7, §1.5, §1.8) and scoring of any method's frames.

Test set (FSTH layout, Zakharov et al.): ``<root>/train/<person>/<video>/combined/000NN_rgb.png``
is each person's pool of source frames and ``<root>/test/<person>/<video>/combined/000NN_rgb.png``
the held-out frames. For every person and K:

1. the K shots are train frames ``floor(linspace(0, N, K, endpoint=False))`` (N = frames in
   train, 32 in FSTH; the same shots for all test frames);
2. every test frame is generated from its own landmarks: landmarks detected on the test frame ->
   the contour drawing (or the set's ``000NN_contour.png`` when present, the authors' own) ->
   ``model.render``; with ``finetune``, also after stage-C fine-tuning (ref §5.5) on all train
   frames, as the release does;
3. each generated frame is scored against its test frame. Means are over all frames of all
   people (the authors average pairs, not people); FID is over the whole set of a run.

Generated frames are cached as PNGs under ``<output_dir>/frames/<weights sha256[:12]>-<landmark
detector>/<person>/K<KK>-<meta|ft>/000NN.png``; a rerun only renders what is missing. That
folder is itself in the ``--outputs`` layout below, so cached frames can be rescored as they are.

``--outputs DIR`` scores frames made by any other method with the same code. Layout:
``<DIR>/<person>/<run>/<NN>.png`` — ``<person>`` the test set's person id (``id00017``),
``<run>`` either ``K<n>[-<method>]``/``<n>[-<method>]`` (e.g. ``K1-ft``, ``8``) or any other
name (then K is unknown), ``<NN>`` the test frame's number (``00005.png``, ``5.png`` and
``00005_anything.png`` all match ``test/.../00005_rgb.png``). Frames must be the test frames'
size (224x224).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from thead.errors import DatasetError, ImageError, NoFaceError, WeightsError
from thead.eval.options import METRICS, EvalOptions, MetricName

TESTSET_ENV = "THEAD_VOXCELEB_FSTH"
FRAME_SIZE = 224
RGB_PATTERN = "*_rgb*"
HOW_TO_GET_VOXCELEB = (
    f"the VoxCeleb2 few-shot test set is not configured: set {TESTSET_ENV} to its folder "
    "(FSTH layout: train/<person>/<video>/combined/000NN_rgb.png and test/...) or to a Hub dataset "
    "repo id; the 50-person split of Zakharov et al. (FSTH) is linked from the LSR release's README, "
    "or pass --testset PATH"
)


# ----------------------------------------------------------------------------------- test set


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


def shot_indices(num_frames: int, num_shots: int) -> list[int]:
    """``floor(linspace(0, N, K, endpoint=False))`` (ref §1.8): N=32, K=4 -> [0, 8, 16, 24]."""
    return np.floor(np.linspace(0, num_frames, num_shots, endpoint=False)).astype(int).tolist()


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


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricValues:
    """One value per metric; None where it was not computed (skipped, or not per person: FID)."""

    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    idsim: float | None = None
    nmke: float | None = None
    fid: float | None = None

    def get(self, name: MetricName) -> float | None:
        return getattr(self, name)


@dataclass(frozen=True)
class RunKey:
    """A table row: a method (``meta``, ``ft`` or a label from ``--outputs``) at K shots."""

    method: str
    num_shots: int | None

    @property
    def label(self) -> str:
        return self.method if self.num_shots is None else f"{self.method} K={self.num_shots}"


@dataclass(frozen=True)
class PersonResult:
    person: str
    num_frames: int
    values: MetricValues


@dataclass(frozen=True)
class RunResult:
    run: RunKey
    num_frames: int
    values: MetricValues
    people: tuple[PersonResult, ...]


@dataclass(frozen=True)
class EvalResult:
    """Everything the report shows: rows, per-person breakdowns, and one-line notes."""

    testset: str
    source: str  # weights (path and sha256) or the outputs folder
    runs: tuple[RunResult, ...]
    notes: tuple[str, ...]
    id_model: str | None
    landmarks: str | None
    nmke_normalization: str
    metrics: tuple[MetricName, ...]  # the metrics that were computed


class Progress(Protocol):
    """What the CLI's progress bar implements (the API prints nothing itself)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


# -------------------------------------------------------------------------------- scoring


@dataclass
class _RunAccumulator:
    """Per-frame values of one run, grouped by person, plus its FID feature statistics."""

    per_person: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fid_real: object | None = None
    fid_fake: object | None = None

    def add(self, person: str, name: str, values: np.ndarray) -> None:
        self.per_person.setdefault(person, {}).setdefault(name, []).extend(float(v) for v in values)


class Scorer:
    """The metrics of one evaluation; metrics whose weights are unavailable are skipped with a
    note (never a made-up number)."""

    def __init__(self, options: EvalOptions, detector=None):
        from thead.eval.nmke import LandmarkError

        self.options = options
        self.notes: list[str] = []
        wanted = set(options.metrics)
        self.lpips = self._try("lpips", wanted, self._make_lpips)
        self.idsim = self._try("idsim", wanted, self._make_idsim)
        self.inception = self._try("fid", wanted, self._make_inception)
        self.nmke = LandmarkError(detector, options.nmke_normalization) if "nmke" in wanted and detector else None
        self.metrics: tuple[MetricName, ...] = tuple(
            m for m in METRICS if m in wanted and (m in ("psnr", "ssim") or getattr(self, _ATTR[m]) is not None)
        )
        # The real frames are the same in every run: their embeddings are computed once.
        self._real_features: dict[tuple[str, int], np.ndarray] = {}
        self._real_identities: dict[tuple[str, int], np.ndarray] = {}

    def _try(self, name: MetricName, wanted: set, make):
        if name not in wanted:
            return None
        try:
            return make()
        except WeightsError as e:  # incl. WeightsUnavailable (offline, not cached)
            self.notes.append(f"{_LABEL[name]} skipped: {e}")
        return None

    def _make_lpips(self):
        from thead.eval.lpips import LPIPS

        return LPIPS.pretrained(allow_download=self.options.allow_download).to(self.options.device)

    def _make_idsim(self):
        from thead.eval.idsim import make_embedder

        o = self.options
        try:
            return make_embedder(o.id_model, alignment=o.id_alignment, device=o.device, allow_download=o.allow_download)
        except WeightsError as e:
            hint = " (--id-model dlib works offline)" if o.id_model == "vggface" else ""
            raise type(e)(f"{e}{hint}") from None

    def _make_inception(self):
        from thead.eval.fid import InceptionFeatures

        return InceptionFeatures.pretrained(device=self.options.device, allow_download=self.options.allow_download)

    def score(self, acc: _RunAccumulator, person: str, test_ids: list[int], reals: list[np.ndarray],
              fakes: list[np.ndarray], faces: list) -> None:
        """Score one batch of (real, generated) frames of ``person`` into ``acc``."""
        from thead.eval.metrics import images_to_tensor, psnr, ssim

        real_t, fake_t = images_to_tensor(reals), images_to_tensor(fakes)
        if "psnr" in self.metrics:
            acc.add(person, "psnr", psnr(real_t, fake_t).numpy())
        if "ssim" in self.metrics:
            acc.add(person, "ssim", ssim(real_t, fake_t).numpy())
        if self.lpips is not None:
            from thead.eval.lpips import lpips_uint8

            acc.add(person, "lpips", lpips_uint8(self.lpips, real_t, fake_t).numpy())
        landmarks = [f.landmarks for f in faces]
        if self.idsim is not None:
            from thead.eval.idsim import cosine_similarity

            def embed_reals(ims, idx):
                return self.idsim.embed(ims, [landmarks[i] for i in idx])

            real = self._cached(self._real_identities, person, test_ids, reals, embed_reals)
            acc.add(person, "idsim", cosine_similarity(real, self.idsim.embed(fakes, landmarks)))
        if self.nmke is not None:
            acc.add(person, "nmke", self.nmke(fakes, landmarks, [f.box for f in faces]))
        if self.inception is not None:
            from thead.eval.fid import FeatureStats

            real = self._cached(self._real_features, person, test_ids, reals, lambda ims, idx: self.inception(ims))
            fake = self.inception(fakes)
            if acc.fid_real is None:
                acc.fid_real, acc.fid_fake = FeatureStats(real.shape[1]), FeatureStats(fake.shape[1])
            acc.fid_real.add(real)
            acc.fid_fake.add(fake)

    @staticmethod
    def _cached(cache: dict, person: str, test_ids: list[int], images: list[np.ndarray], compute) -> np.ndarray:
        """Rows of ``compute(images, positions)`` for the frames not in ``cache`` yet, then all
        rows from the cache."""
        todo = [j for j, i in enumerate(test_ids) if (person, i) not in cache]
        if todo:
            for j, row in zip(todo, compute([images[j] for j in todo], todo)):
                cache[(person, test_ids[j])] = row
        return np.stack([cache[(person, i)] for i in test_ids])

    def result(self, run: RunKey, acc: _RunAccumulator) -> RunResult:
        people = []
        totals: dict[str, list[float]] = {}
        for person, values in acc.per_person.items():
            for name, vals in values.items():
                totals.setdefault(name, []).extend(vals)
            n = len(next(iter(values.values())))
            people.append(PersonResult(person, n, MetricValues(**{k: _mean(v) for k, v in values.items()})))
        fid = None
        if acc.fid_real is not None:
            from thead.eval.fid import fid_from_stats

            try:
                fid = fid_from_stats(acc.fid_real, acc.fid_fake)
            except ValueError as e:
                self.notes.append(f"FID for {run.label} skipped: {e}")
        n = len(next(iter(totals.values()))) if totals else 0
        return RunResult(run, n, MetricValues(fid=fid, **{k: _mean(v) for k, v in totals.items()}), tuple(people))


_ATTR = {"lpips": "lpips", "idsim": "idsim", "fid": "inception", "nmke": "nmke"}
_LABEL = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "idsim": "ID-SIM", "nmke": "NMKE", "fid": "FID"}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# ------------------------------------------------------------------------------ ground truth


@dataclass(frozen=True)
class _GroundTruth:
    """A person's test frames, their faces (detected once) and contours, ``max_frames`` applied."""

    ids: list[int]
    images: list[np.ndarray]
    faces: list  # thead.faces Face, one per frame
    contours: list[np.ndarray] | None  # uint8 drawings (None in outputs mode)


def _load_images(paths) -> list[np.ndarray]:
    from thead.faces.images import load_image

    return [load_image(p) for p in paths]


def _detect_all(detector, images: list[np.ndarray], paths, notes: list[str], what: str) -> list:
    """One face per frame; a frame without a face borrows its nearest neighbour's (the authors'
    preprocessing pads failed frames with earlier ones, ref §1.3)."""
    faces = [found[0] if found else None for found in detector.detect_batch(images)]
    ok = [i for i, f in enumerate(faces) if f is not None]
    if not ok:
        raise NoFaceError(f"no face found in any {what} frame ({paths[0].parent})")
    for i, f in enumerate(faces):
        if f is None:
            j = min(ok, key=lambda j: abs(j - i))
            faces[i] = faces[j]
            notes.append(f"no face in {paths[i]}; used the landmarks of {paths[j].name}")
    return faces


def _contour_file(path: Path) -> Path:
    """``000NN_rgb.png`` -> ``000NN_contour.png`` (the FSTH processed layout, ref §1.2)."""
    return path.with_name(path.name.replace("_rgb", "_contour", 1))


def _contours(paths, faces, options: EvalOptions) -> list[np.ndarray]:
    from thead.faces.contour import draw_contour
    from thead.faces.images import load_image

    out = []
    for path, face in zip(paths, faces):
        given = _contour_file(path)
        if options.dataset_contours and given.is_file():
            out.append(load_image(given))
        else:
            out.append(draw_contour(face.landmarks, FRAME_SIZE))
    return out


def _ground_truth(person: TestPerson, detector, options: EvalOptions, notes: list[str], *, contours: bool) -> _GroundTruth:
    paths = list(person.test_frames[: options.max_frames])
    images = _load_images(paths)
    faces = _detect_all(detector, images, paths, notes, f"test/{person.key}")
    return _GroundTruth(
        ids=[frame_number(p) for p in paths],
        images=images,
        faces=faces,
        contours=_contours(paths, faces, options) if contours else None,
    )


# ------------------------------------------------------------------------------- generation


class _LSRFrames:
    """Generates (or reads back from the cache) a person's test frames with LSR."""

    def __init__(self, weights, options: EvalOptions, detector, notes: list[str]):
        from thead.model import LSR, NETWORKS

        self.weights = weights
        self.options = options
        self.detector = detector
        self.notes = notes
        inference = tuple(n for n in NETWORKS if n != "discriminator")
        self.model = LSR.from_pretrained(weights, device=options.device, networks=inference).for_inference_()
        self.sha256 = self.model.weights_sha256 or "unknown"
        self.cache = options.output_dir / "frames" / f"{self.sha256[:12]}-{getattr(detector, 'name', 'landmarks')}"
        self._finetune_error: str | None = None
        self._train: tuple[str, dict[int, tuple[np.ndarray, np.ndarray]]] | None = None

    def frames(self, person: TestPerson, k: int, method: str, gt: _GroundTruth) -> list[np.ndarray] | None:
        folder = self.cache / person.key / f"K{k:02d}-{method}"
        paths = [folder / f"{i:05d}.png" for i in gt.ids]
        missing = [j for j, p in enumerate(paths) if not p.is_file()]
        if missing:
            model = self._model_for(person, k, method)
            if model is None:
                return None
            self._render(model, person, k, gt, missing, paths)
        return _load_images(paths)

    def _train_frames(self, person: TestPerson, indices: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Train frames and their contours (the set's drawings, or detected and drawn), cached
        for the person being evaluated."""
        if self._train is None or self._train[0] != person.key:
            self._train = (person.key, {})
        cache = self._train[1]
        todo = [i for i in indices if i not in cache]
        if todo:
            paths = [person.train_frames[i] for i in todo]
            images = _load_images(paths)
            need_faces = not self.options.dataset_contours or not all(_contour_file(p).is_file() for p in paths)
            faces = [None] * len(paths)
            if need_faces:
                faces = _detect_all(self.detector, images, paths, self.notes, f"train/{person.key}")
            for i, image, contour in zip(todo, images, _contours(paths, faces, self.options)):
                cache[i] = (image, contour)
        return [cache[i][0] for i in indices], [cache[i][1] for i in indices]

    def _latents(self, model, person: TestPerson, k: int):
        import torch

        from thead.faces.images import to_tensor

        images, contours = self._train_frames(person, shot_indices(len(person.train_frames), k))
        dev = self.options.device
        rgb = torch.stack([to_tensor(im) for im in images])[None].to(dev)
        con = torch.stack([to_tensor(c) for c in contours])[None].to(dev)
        with torch.inference_mode():
            return model.encode(rgb, con)

    def _model_for(self, person: TestPerson, k: int, method: str):
        if method == "meta":
            return self.model, self.model.prepare(self._latents(self.model, person, k))
        return self._finetuned(person, k)

    def _finetuned(self, person: TestPerson, k: int):
        """Stage C (ref §5.5) from the meta-learned weights, on all train frames as the release."""
        if self._finetune_error is not None:
            return None
        import torch

        from thead.faces.images import to_tensor
        from thead.model import LSR

        try:
            from thead.train.finetune import FinetuneOptions, finetune
        except ImportError as e:
            return self._no_finetune(f"thead.train.finetune is unavailable ({e})")
        base = LSR.from_pretrained(self.weights, device=self.options.device)
        latents = self._latents(base, person, k)
        images, contours = self._train_frames(person, list(range(len(person.train_frames))))
        rgb = torch.stack([to_tensor(im) for im in images])
        con = torch.stack([to_tensor(c) for c in contours])
        try:
            state = finetune(base, latents, rgb, con, FinetuneOptions(num_shots=k, device=self.options.device))
        except WeightsError as e:  # the loss networks (VGG19, VGG-Face) cannot be had offline
            return self._no_finetune(str(e))
        base.load_state_dict(state, strict=False)
        base.for_inference_()
        return base, base.prepare(latents)

    def _no_finetune(self, why: str):
        self._finetune_error = why
        self.notes.append(f"fine-tuned rows skipped: {why}")
        return None

    def _render(self, model_state, person: TestPerson, k: int, gt: _GroundTruth, todo: list[int], paths: list[Path]) -> None:
        import torch

        from thead.eval.metrics import to_uint8
        from thead.faces.images import save_image, to_tensor

        model, state = model_state
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        dev = self.options.device
        for start in range(0, len(todo), self.options.batch_size):
            batch = todo[start : start + self.options.batch_size]
            contour = torch.stack([to_tensor(gt.contours[j]) for j in batch]).to(dev)
            with torch.inference_mode():
                image = to_uint8(model.render(contour, state).image).permute(0, 2, 3, 1).cpu().numpy()
            for j, im in zip(batch, image):
                save_image(paths[j], np.ascontiguousarray(im))


# --------------------------------------------------------------------------------- outputs


def _parse_run(name: str, label: str) -> RunKey:
    m = re.fullmatch(r"[Kk]?(\d+)(?:[-_](.+))?", name)
    if m:
        return RunKey(m.group(2) or label, int(m.group(1)))
    return RunKey(name, None)


def index_outputs(folder: Path, testset: TestSet, notes: list[str]) -> dict[RunKey, dict[str, dict[int, Path]]]:
    """``<folder>/<person>/<run>/<NN>.png`` -> run -> person -> test frame number -> path."""
    if not folder.is_dir():
        raise DatasetError(f"outputs folder {folder} does not exist")
    people = {p.key for p in testset.people}
    runs: dict[RunKey, dict[str, dict[int, Path]]] = {}
    for person_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
        if person_dir.name not in people:
            notes.append(f"outputs: {person_dir.name} is not a person of the test set; ignored")
            continue
        for run_dir in sorted(d for d in person_dir.iterdir() if d.is_dir()):
            frames = {}
            for p in sorted(run_dir.iterdir()):
                if p.suffix.lower() in (".png", ".jpg", ".jpeg") and re.match(r"\d+", p.name):
                    check_frame_size(p, (FRAME_SIZE, FRAME_SIZE))
                    frames[frame_number(p)] = p
            if frames:
                runs.setdefault(_parse_run(run_dir.name, folder.name), {})[person_dir.name] = frames
    if not runs:
        raise DatasetError(f"{folder} holds no frames (expected {folder}/<person>/<run>/000NN.png)")
    return runs


# ------------------------------------------------------------------------------------ main


def evaluate(
    testset: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    options: EvalOptions = EvalOptions(),
    *,
    outputs: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Run the protocol with LSR ``weights`` (or score the frames in ``outputs``)."""
    from thead.faces.landmarks import make_detector

    progress = progress or _NoProgress()
    # 1. Check inputs before loading any network.
    root = resolve_testset(testset)
    ts = load_testset(root).select(options.people)
    check_testset(ts, options.shots, need_train=outputs is None)
    notes: list[str] = []
    out_runs = index_outputs(Path(outputs), ts, notes) if outputs is not None else None

    # 2. Networks: landmark detector, metrics, the model.
    with warnings.catch_warnings():  # "auto" falling back to dlib warns; the report notes it instead
        warnings.simplefilter("ignore")
        detector = make_detector(options.detector, options.device)
    if getattr(detector, "note", None):
        notes.append(detector.note)
    scorer = Scorer(options, detector)
    if outputs is None:
        generator = _LSRFrames(weights, options, detector, notes)
        methods = ("meta", "ft") if options.finetune else ("meta",)
        runs = [RunKey(m, k) for m in methods for k in options.shots]
        source = f"{weights} (sha256 {generator.sha256[:12]})"
    else:
        generator = None
        runs = sorted(out_runs, key=lambda r: (r.method, r.num_shots or 0))
        source = str(outputs)

    # 3. Per person: ground truth once, then every run.
    accs = {run: _RunAccumulator() for run in runs}
    progress.start("evaluating", sum(len(p.test_frames[: options.max_frames]) for p in ts.people) * len(runs))
    for person in ts.people:
        gt = _ground_truth(person, detector, options, notes, contours=generator is not None)
        for run in runs:
            if generator is not None:
                fakes = generator.frames(person, run.num_shots, run.method, gt)
                if fakes is None:  # fine-tuning unavailable: noted once
                    progress.advance(len(gt.ids))
                    continue
                sel = list(range(len(gt.ids)))
            else:
                frames = out_runs[run].get(person.key, {})
                sel = [j for j, i in enumerate(gt.ids) if i in frames]
                if len(sel) < len(gt.ids):
                    notes.append(f"outputs: {run.label} has {len(sel)} of {len(gt.ids)} frames of {person.key}")
                    progress.advance(len(gt.ids) - len(sel))
                if not sel:
                    continue
                fakes = _load_images([frames[gt.ids[j]] for j in sel])
            for start in range(0, len(sel), options.batch_size):
                chunk = sel[start : start + options.batch_size]
                scorer.score(
                    accs[run], person.key, [gt.ids[j] for j in chunk], [gt.images[j] for j in chunk],
                    [fakes[start + n] for n in range(len(chunk))], [gt.faces[j] for j in chunk],
                )
                progress.advance(len(chunk))

    # 4. Rows.
    results = tuple(scorer.result(run, accs[run]) for run in runs if accs[run].per_person)
    if scorer.nmke is not None and scorer.nmke.fallbacks:
        notes.append(f"NMKE: no face detected in {scorer.nmke.fallbacks} generated frames; "
                     "landmarks taken in the ground truth's face box")
    return EvalResult(
        testset=str(root),
        source=source,
        runs=results,
        notes=tuple(dict.fromkeys(scorer.notes + notes)),
        id_model=scorer.idsim.name if scorer.idsim is not None else None,
        landmarks=getattr(detector, "name", None),
        nmke_normalization=options.nmke_normalization,
        metrics=scorer.metrics,
    )


__all__ = [
    "EvalOptions", "EvalResult", "MetricValues", "PersonResult", "Progress", "RunKey", "RunResult", "Scorer",
    "TestPerson", "TestSet", "check_testset", "evaluate", "index_outputs", "load_testset", "resolve_testset",
    "shot_indices",
]
