"""Scoring generated frames against the test frames: the metrics of one evaluation
(``Scorer``), per-frame values accumulated per run and person, and the result rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from thead.errors import WeightsError
from thead.eval.options import METRICS, EvalOptions, MetricName


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


@dataclass
class RunAccumulator:
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

    def score(self, acc: RunAccumulator, person: str, test_ids: list[int], reals: list[np.ndarray],
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

    def result(self, run: RunKey, acc: RunAccumulator) -> RunResult:
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
