"""``thead.progress`` through the real APIs and the command line: one protocol, updates that
only go up and reach the total, notes that arrive, a bar on a terminal and nothing with --quiet."""

from __future__ import annotations

import shutil

import pytest

from tests.test_animate import CLIP_17, TRAIN_17, probe
from tests.test_motion_driver import write_clip
from thead.progress import SILENT, Progress

FRAMES = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def sideways(sample_dir, tmp_path_factory):
    """8 real frames of id00017 turned a quarter (no rotation tag): the driver notes the roll."""
    return write_clip(sample_dir / CLIP_17, tmp_path_factory.mktemp("side") / "side.mp4", count=FRAMES, turn=1)


@pytest.fixture(scope="module")
def store(parity_weights, sample_dir, tmp_path_factory):
    from thead.avatar import AvatarStore
    from thead.enroll import EnrollOptions, enroll

    store = AvatarStore(tmp_path_factory.mktemp("home") / "avatars")  # $THEAD_HOME/avatars for the CLI test
    enroll(sample_dir / TRAIN_17, "p17", EnrollOptions(num_shots=2, landmarks="dlib", device="cpu"), weights=parity_weights, store=store)
    return store


def _one_count_to(recorder, total: int) -> list[int]:
    done = recorder.counts()
    assert done == sorted(done) and done[-1] == total, done  # monotone, and it reaches the total
    assert {u[1] for u in recorder.updates} == {total}
    return done


def test_the_default_and_the_cli_bar_and_the_page_job_are_progress():
    from thead.cli._progress import Bar
    from thead.ui.jobs import Jobs

    assert isinstance(SILENT, Progress) and isinstance(Bar("x", quiet=True), Progress)
    with Jobs().run("s") as job:
        assert isinstance(job, Progress)
    assert not isinstance(lambda done, total: None, Progress)  # the old callback shape is not one


def test_animate_reports_each_frame_and_the_drivers_notes(tmp_path, parity_weights, store, sideways, recorder):
    from thead.animate import AnimateOptions, animate

    out = tmp_path / "out.mp4"
    result = animate("p17", sideways, out, AnimateOptions(device="cpu").with_driver(landmarks="dlib"), weights=parity_weights,
                     store=store, progress=recorder)
    assert _one_count_to(recorder, FRAMES) == list(range(1, FRAMES + 1))  # one update per frame written
    assert result.num_frames == FRAMES and probe(out)[0] == FRAMES
    assert any("rolled" in n for n in recorder.notes), recorder.notes


def test_extract_motion_reports_each_frame_and_the_drivers_notes(tmp_path, sideways, detector, recorder):
    from thead.motion import DriverOptions, extract_motion

    template, missing = extract_motion(sideways, tmp_path / "m.npz", DriverOptions(), detector=detector, progress=recorder)
    assert _one_count_to(recorder, FRAMES) == list(range(1, FRAMES + 1))
    assert template.num_frames == FRAMES and missing == 0
    assert any("rolled" in n for n in recorder.notes), recorder.notes


def test_prepare_counts_clips_and_the_failures_so_far(tmp_path, sample_dir, recorder):
    from thead.prep import PrepOptions, prepare

    src = tmp_path / "src" / "id00017" / "OLguY5ofUrY"
    src.mkdir(parents=True)
    shutil.copy(sample_dir / CLIP_17, src / "00001.mp4")
    (src / "00002.mp4").write_text("not a video")
    report = prepare(tmp_path / "src", tmp_path / "out", PrepOptions(k=2, segmaps=False, landmarks="dlib"), recorder)
    assert _one_count_to(recorder, 2) == [0, 1, 2]
    assert [u[3] for u in recorder.updates] == ["", "", "1 failed"]  # the failures so far, as the info
    assert len(report.clips) == 1 and len(report.failures) == 1
    # the same run again: the finished clip counts at once (resumed), the failure is retried
    again = type(recorder)()
    prepare(tmp_path / "src", tmp_path / "out", PrepOptions(k=2, segmaps=False, landmarks="dlib"), again)
    assert [u[3] for u in again.updates] == ["", "", "1 failed"]


def test_cli_bar_on_a_terminal_and_nothing_with_quiet(tmp_path, parity_weights, store, sideways, capsys, monkeypatch):
    from thead.cli import main
    from thead.cli._app import err_console

    def args(out, *extra):
        return ["animate", "p17", "--driver", str(sideways), "-o", str(out), "--weights", str(parity_weights),
                "--landmarks", "dlib", "--device", "cpu", *extra]

    monkeypatch.setenv("THEAD_HOME", str(store.root.parent))
    monkeypatch.setattr(err_console, "_force_terminal", True)  # as if stderr were an (interactive) terminal
    monkeypatch.setattr(err_console, "is_interactive", True)
    capsys.readouterr()
    assert main(args(tmp_path / "quiet.mp4", "--quiet")) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")  # no bar, no note, no summary
    assert probe(tmp_path / "quiet.mp4")[0] == FRAMES

    assert main(args(tmp_path / "shown.mp4")) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{FRAMES}/{FRAMES}" in err and "fps" in err  # the bar: count and rate
    assert "note: the driver's face is rolled" in err and f"wrote {tmp_path / 'shown.mp4'}" in err
