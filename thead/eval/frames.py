"""Generated frames for the protocol: one interface, ``FrameSource``, with two implementations.

- ``LSRFrames``: rendered by LSR from each test frame's contour, K shots from the person's
  train frames (meta-learned, or after stage-C fine-tuning); cached as PNGs under
  ``<output_dir>/frames/<weights sha256[:12]>-<landmark detector>/<person>/K<KK>-<meta|ft>/000NN.png``,
  so a rerun renders only what is missing;
- ``OutputFrames``: read from an outputs folder made by any method (e.g. the authors'
  precomputed outputs), ``<DIR>/<person>/<run>/<NN>.png``.

Both answer, for a person, a run and the person's ground truth, which test frames they have and
those frames; the evaluation loop (``thead.eval.protocol.evaluate``) scores them the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from thead.errors import DatasetError, NoFaceError, WeightsError
from thead.eval.options import EvalOptions
from thead.eval.scoring import RunKey
from thead.enroll import shot_indices
from thead.eval.testset import FRAME_SIZE, TestPerson, TestSet, check_frame_size, frame_number

# ------------------------------------------------------------------------------ ground truth


@dataclass(frozen=True)
class GroundTruth:
    """A person's test frames, their faces (detected once) and contours, ``max_frames`` applied."""

    ids: list[int]
    images: list[np.ndarray]
    faces: list  # thead.faces Face, one per frame
    contours: list[np.ndarray] | None  # uint8 drawings (None in outputs mode)


def load_images(paths) -> list[np.ndarray]:
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


def ground_truth(person: TestPerson, detector, options: EvalOptions, notes: list[str], *, contours: bool) -> GroundTruth:
    paths = list(person.test_frames[: options.max_frames])
    images = load_images(paths)
    faces = _detect_all(detector, images, paths, notes, f"test/{person.key}")
    return GroundTruth(
        ids=[frame_number(p) for p in paths],
        images=images,
        faces=faces,
        contours=_contours(paths, faces, options) if contours else None,
    )


# -------------------------------------------------------------------------------- interface


class FrameSource(Protocol):
    """Where a run's generated frames come from."""

    #: What the report names as the frames' origin (weights and sha256, or a folder).
    source: str
    #: The table rows, in report order.
    runs: list[RunKey]
    #: Whether the ground truth needs contour drawings (the input of rendering).
    needs_contours: bool

    def frames(self, person: TestPerson, run: RunKey, gt: GroundTruth) -> tuple[list[int], list[np.ndarray]]:
        """(positions in ``gt`` that have a generated frame, those frames in that order); no
        positions when the run has none for this person."""
        ...


# ------------------------------------------------------------------------------------- LSR


class LSRFrames:
    """Generates (or reads back from the cache) a person's test frames with LSR."""

    needs_contours = True

    def __init__(self, weights, options: EvalOptions, detector, notes: list[str]):
        from thead.model import ENCODE_NETWORKS, LSR, NETWORKS, RENDER_NETWORKS

        self.weights = weights
        self.options = options
        self.detector = detector
        self.notes = notes
        # Loaded (and hashed) once: the encoders and G^l/G^s, and D when fine-tuned rows need it;
        # rendering goes through a prepared copy (``thead.renderer.Renderer``), so the base
        # stays trainable for those rows.
        networks = NETWORKS if options.finetune else ENCODE_NETWORKS + RENDER_NETWORKS
        self.model = LSR.from_pretrained(weights, device=options.device, networks=networks).eval()
        self._meta = None  # the meta-learned renderer, made at the first person and reused
        self.sha256 = self.model.weights_sha256 or "unknown"
        self.cache = options.output_dir / "frames" / f"{self.sha256[:12]}-{getattr(detector, 'name', 'landmarks')}"
        self._finetune_error: str | None = None
        self._train: tuple[str, dict[int, tuple[np.ndarray, np.ndarray]]] | None = None
        methods = ("meta", "ft") if options.finetune else ("meta",)
        self.runs = [RunKey(m, k) for m in methods for k in options.shots]
        self.source = f"{weights} (sha256 {self.sha256[:12]})"

    def frames(self, person: TestPerson, run: RunKey, gt: GroundTruth) -> tuple[list[int], list[np.ndarray]]:
        """All of the person's test frames; none when fine-tuning is unavailable (noted once)."""
        k, method = run.num_shots, run.method
        folder = self.cache / person.key / f"K{k:02d}-{method}"
        paths = [folder / f"{i:05d}.png" for i in gt.ids]
        missing = [j for j, p in enumerate(paths) if not p.is_file()]
        if missing:
            renderer = self._renderer_for(person, k, method)
            if renderer is None:
                return [], []
            self._render(renderer, gt, missing, paths)
        return list(range(len(gt.ids))), load_images(paths)

    def _train_frames(self, person: TestPerson, indices: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Train frames and their contours (the set's drawings, or detected and drawn), cached
        for the person being evaluated."""
        if self._train is None or self._train[0] != person.key:
            self._train = (person.key, {})
        cache = self._train[1]
        todo = [i for i in indices if i not in cache]
        if todo:
            paths = [person.train_frames[i] for i in todo]
            images = load_images(paths)
            need_faces = not self.options.dataset_contours or not all(_contour_file(p).is_file() for p in paths)
            faces = [None] * len(paths)
            if need_faces:
                faces = _detect_all(self.detector, images, paths, self.notes, f"train/{person.key}")
            for i, image, contour in zip(todo, images, _contours(paths, faces, self.options)):
                cache[i] = (image, contour)
        return [cache[i][0] for i in indices], [cache[i][1] for i in indices]

    def _latents(self, person: TestPerson, k: int):
        import torch

        from thead.faces.images import to_tensor

        images, contours = self._train_frames(person, shot_indices(len(person.train_frames), k))
        dev = self.options.device
        rgb = torch.stack([to_tensor(im) for im in images])[None].to(dev)
        con = torch.stack([to_tensor(c) for c in contours])[None].to(dev)
        with torch.inference_mode():
            return self.model.encode(rgb, con)

    def _renderer_for(self, person: TestPerson, k: int, method: str):
        from thead.renderer import Renderer

        if method != "meta":
            return self._finetuned(person, k)
        latents = self._latents(person, k)
        if self._meta is None:
            self._meta = Renderer.build(self.model, latents, device=self.options.device)
        else:
            self._meta = self._meta.with_latents(latents)
        return self._meta

    def _finetuned(self, person: TestPerson, k: int):
        """Stage C (ref §5.5) from the meta-learned weights, on all train frames as the release."""
        if self._finetune_error is not None:
            return None
        import torch

        from thead.avatar import PersonalWeights
        from thead.faces.images import to_tensor
        from thead.renderer import Renderer

        try:
            from thead.train.finetune import FinetuneOptions, finetune
        except ImportError as e:
            return self._no_finetune(f"thead.train.finetune is unavailable ({e})")
        latents = self._latents(person, k)
        images, contours = self._train_frames(person, list(range(len(person.train_frames))))
        rgb = torch.stack([to_tensor(im) for im in images])
        con = torch.stack([to_tensor(c) for c in contours])
        try:  # on personal copies: self.model stays the meta-learned base
            state = finetune(self.model, latents, rgb, con, FinetuneOptions(num_shots=k, device=self.options.device))
        except WeightsError as e:  # the loss networks (VGG19, VGG-Face) cannot be had offline
            return self._no_finetune(str(e))
        personal = PersonalWeights(state=state, base_weights_sha256=self.model.weights_sha256 or "", created="")
        return Renderer.build(self.model, latents, device=self.options.device, personal=personal)

    def _no_finetune(self, why: str):
        self._finetune_error = why
        self.notes.append(f"fine-tuned rows skipped: {why}")
        return None

    def _render(self, renderer, gt: GroundTruth, todo: list[int], paths: list[Path]) -> None:
        import torch

        from thead.faces.images import save_image, to_tensor

        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(todo), self.options.batch_size):
            batch = todo[start : start + self.options.batch_size]
            images = renderer.frames(torch.stack([to_tensor(gt.contours[j]) for j in batch]))
            for j, im in zip(batch, images):
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


class OutputFrames:
    """Frames made by any method, read from ``<folder>/<person>/<run>/<NN>.png``: ``<person>``
    the test set's person id (``id00017``), ``<run>`` either ``K<n>[-<method>]``/``<n>[-<method>]``
    (e.g. ``K1-ft``, ``8``) or any other name (then K is unknown), ``<NN>`` the test frame's
    number (``00005.png``, ``5.png`` and ``00005_anything.png`` all match
    ``test/.../00005_rgb.png``). The folder is indexed, and every frame's size checked, on
    construction: before any network loads."""

    needs_contours = False

    def __init__(self, folder: str | os.PathLike, testset: TestSet, notes: list[str]):
        self.notes = notes
        self.source = str(folder)
        self.index = index_outputs(Path(folder), testset, notes)
        self.runs = sorted(self.index, key=lambda r: (r.method, r.num_shots or 0))

    def frames(self, person: TestPerson, run: RunKey, gt: GroundTruth) -> tuple[list[int], list[np.ndarray]]:
        """The test frames the run has for the person (a note when some are missing)."""
        frames = self.index[run].get(person.key, {})
        sel = [j for j, i in enumerate(gt.ids) if i in frames]
        if len(sel) < len(gt.ids):
            self.notes.append(f"outputs: {run.label} has {len(sel)} of {len(gt.ids)} frames of {person.key}")
        return sel, load_images([frames[gt.ids[j]] for j in sel])
