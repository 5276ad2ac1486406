"""The paper's evaluation protocol (ref §7, §1.5, §1.8) and scoring of any method's frames:
test set (``testset``) -> generated frames (``frames``: from LSR or from an outputs folder,
one interface) -> scores (``scoring``), in one loop (``evaluate``).

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

Generated frames are cached as PNGs (``frames.LSRFrames``); a rerun only renders what is
missing. The cache is itself in the ``--outputs`` layout, so cached frames can be rescored as
they are. ``--outputs DIR`` scores frames made by any other method with the same code (layout:
``frames.OutputFrames``); frames must be the test frames' size (224x224).
"""

from __future__ import annotations

import os
import warnings

from thead.eval.frames import FrameSource, LSRFrames, OutputFrames, ground_truth, index_outputs
from thead.eval.options import EvalOptions
from thead.eval.scoring import EvalResult, MetricValues, PersonResult, RunAccumulator, RunKey, RunResult, Scorer
from thead.eval.testset import (
    HOW_TO_GET_VOXCELEB,
    TESTSET_ENV,
    TestPerson,
    TestSet,
    check_testset,
    load_testset,
    resolve_testset,
)
from thead.enroll import shot_indices
from thead.progress import SILENT, Progress


def evaluate(
    testset: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    options: EvalOptions = EvalOptions(),
    *,
    outputs: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Run the protocol with LSR ``weights`` (or score the frames in ``outputs``).

    ``progress``: test frames scored so far (stage "evaluating"; a run's missing frames count
    as done); the notes go into the result, not to ``progress``."""
    from thead.faces.landmarks import make_detector

    progress = progress or SILENT
    # 1. Check inputs before loading any network (an outputs folder is indexed here).
    root = resolve_testset(testset)
    ts = load_testset(root).select(options.people)
    check_testset(ts, options.shots, need_train=outputs is None)
    notes: list[str] = []
    frames: FrameSource | None = OutputFrames(outputs, ts, notes) if outputs is not None else None

    # 2. Networks: landmark detector, metrics, the model.
    with warnings.catch_warnings():  # "auto" falling back to dlib warns; the report notes it instead
        warnings.simplefilter("ignore")
        detector = make_detector(options.detector, options.device)
    if getattr(detector, "note", None):
        notes.append(detector.note)
    scorer = Scorer(options, detector)
    if frames is None:
        frames = LSRFrames(weights, options, detector, notes)
    runs = frames.runs

    # 3. Per person: ground truth once, then every run's frames, scored in batches.
    accs = {run: RunAccumulator() for run in runs}
    total, done = sum(len(p.test_frames[: options.max_frames]) for p in ts.people) * len(runs), 0
    progress.update(done, total, stage="evaluating")
    for person in ts.people:
        gt = ground_truth(person, detector, options, notes, contours=frames.needs_contours)
        for run in runs:
            sel, fakes = frames.frames(person, run, gt)
            if len(sel) < len(gt.ids):  # frames the run does not have
                done += len(gt.ids) - len(sel)
                progress.update(done, total, stage="evaluating")
            for start in range(0, len(sel), options.batch_size):
                chunk = sel[start : start + options.batch_size]
                scorer.score(
                    accs[run], person.key, [gt.ids[j] for j in chunk], [gt.images[j] for j in chunk],
                    [fakes[start + n] for n in range(len(chunk))], [gt.faces[j] for j in chunk],
                )
                done += len(chunk)
                progress.update(done, total, stage="evaluating")

    # 4. Rows.
    results = tuple(scorer.result(run, accs[run]) for run in runs if accs[run].per_person)
    if scorer.nmke is not None and scorer.nmke.fallbacks:
        notes.append(f"NMKE: no face detected in {scorer.nmke.fallbacks} generated frames; "
                     "landmarks taken in the ground truth's face box")
    return EvalResult(
        testset=str(root),
        source=frames.source,
        runs=results,
        notes=tuple(dict.fromkeys(scorer.notes + notes)),
        id_model=scorer.idsim.name if scorer.idsim is not None else None,
        landmarks=getattr(detector, "name", None),
        nmke_normalization=options.nmke_normalization,
        metrics=scorer.metrics,
    )


__all__ = [
    "EvalOptions", "EvalResult", "FrameSource", "HOW_TO_GET_VOXCELEB", "LSRFrames", "MetricValues", "OutputFrames",
    "PersonResult", "Progress", "RunKey", "RunResult", "Scorer", "TESTSET_ENV", "TestPerson", "TestSet",
    "check_testset", "evaluate", "index_outputs", "load_testset", "resolve_testset", "shot_indices",
]
