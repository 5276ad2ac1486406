"""The page's job lock, cancelling, error sentences and weights line (no Gradio, no browser)."""

from __future__ import annotations

import threading
import time

import pytest

from thead.errors import ImageError, WeightsError
from thead.ui.jobs import Cancelled, Jobs, one_sentence, weights_line


def test_one_job_at_a_time_and_cancel_reaches_only_its_own_session():
    jobs, order, reports = Jobs(), [], []
    started = threading.Event()

    def first():
        with jobs.run("a", unit="frames") as job:
            order.append("a starts")
            started.set()
            try:
                while True:  # a render: progress after each frame
                    job.update(1, 10)
                    time.sleep(0.01)
            except Cancelled:
                order.append("a cancelled")

    def second():
        with jobs.run("b", lambda f, s: reports.append(s)):
            order.append("b starts")

    t1 = threading.Thread(target=first)
    t1.start()
    started.wait(5)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.2)
    assert order == ["a starts"]  # b waits for a
    assert not jobs.cancel("nobody")
    assert jobs.cancel("a")
    t1.join(5)
    t2.join(5)
    assert order == ["a starts", "a cancelled", "b starts"]
    assert reports == ["waiting for the job before this one to stop"]
    assert not jobs.cancel("a")  # finished jobs are forgotten


def test_progress_reports_count_and_time_left_and_keeps_notes():
    seen = []
    jobs = Jobs()
    with jobs.run("s", lambda f, s: seen.append((f, s)), unit="frames") as job:
        job.started -= 10.0  # as if 10 s had passed
        job.update(5, 20)
        job.update(3, None, stage="render", info="ignored by the page")
        job.note("the driver's face is rolled 30°")
    assert seen[-2][0] == 0.25 and seen[-2][1].startswith("5/20 frames") and "30 s left" in seen[-2][1]
    assert seen[-1] == (None, "3 frames · 10 s so far")
    assert job.notes == ["the driver's face is rolled 30°"]


def test_errors_are_one_sentence():
    assert one_sentence(ImageError("x.jpg is not an image (unrecognised format)")) == "X.jpg is not an image (unrecognised format)."
    assert one_sentence(Cancelled()) == "Cancelled; nothing was saved."
    text = one_sentence(KeyError("boom\nsecond line"))
    assert text.startswith("Unexpected KeyError") and "\n" not in text


def test_weights_line_names_the_folder_and_its_hash(parity_weights, monkeypatch):
    from thead.hub import file_sha256

    line = weights_line(str(parity_weights))
    assert str(parity_weights) in line and "--weights" in line and file_sha256(parity_weights / "model.safetensors")[:12] in line
    monkeypatch.setenv("THEAD_WEIGHTS", str(parity_weights))
    assert "$THEAD_WEIGHTS" in weights_line(None)
    with pytest.raises(WeightsError):
        weights_line(str(parity_weights.parent))  # not a weights folder: the CLI's own error
