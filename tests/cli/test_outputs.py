"""Nothing the user owns is destroyed: an output that is an input is refused (always), an
existing output is replaced only with --overwrite / -y."""

from __future__ import annotations

import os

import pytest

from thead.cli import main
from thead.errors import UsageError


@pytest.fixture
def driver(tmp_path):
    path = tmp_path / "driver.mp4"
    path.write_bytes(b"not really a video, but the user's file")
    return path


def _one_line(capsys, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], err


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"], ["-y"]])
def test_animate_output_equal_to_the_driver_is_refused(driver, capsys, overwrite):
    before = driver.read_bytes()
    assert main(["animate", "someone", "--driver", str(driver), "-o", str(driver), *overwrite]) == 2
    _one_line(capsys, "is the input")
    assert driver.read_bytes() == before


def test_the_same_file_by_another_name_is_refused(driver, tmp_path, capsys):
    link = tmp_path / "link.mp4"
    os.link(driver, link)
    assert main(["animate", "someone", "--driver", str(driver), "-o", str(link), "-y"]) == 2
    _one_line(capsys, "is the input")
    relative = os.path.relpath(driver)
    assert main(["motion", "extract", relative, "-o", str(driver.resolve()), "-y"]) == 2
    _one_line(capsys, "is the input")


def test_photo_driver_output_equal_to_the_photo_is_refused(tmp_path, capsys):
    photo = tmp_path / "face.png"
    photo.write_bytes(b"\x89PNG the user's photo")
    assert main(["animate", "someone", "--driver", str(photo), "-o", str(photo), "-y"]) == 2
    _one_line(capsys, "is the input")
    assert photo.read_bytes() == b"\x89PNG the user's photo"


@pytest.mark.parametrize("command", [["animate", "someone", "--driver", "{driver}"], ["demo"], ["motion", "extract", "{driver}"]])
def test_an_existing_output_needs_overwrite(tmp_path, driver, capsys, command):
    out = tmp_path / ("out.npz" if command[0] == "motion" else "out.mp4")
    out.write_bytes(b"an earlier result")
    args = [a.format(driver=driver) for a in command]
    assert main([*args, "-o", str(out)]) == 2
    _one_line(capsys, "already exists", "--overwrite")
    assert out.read_bytes() == b"an earlier result"


def test_library_animate_and_extract_refuse_the_driver_as_output(driver):
    from thead.animate import animate
    from thead.motion import extract_motion

    with pytest.raises(UsageError, match="is the input"):
        animate("nobody", driver, driver)
    npz = driver.with_suffix(".npz")
    npz.write_bytes(b"x")
    with pytest.raises(UsageError, match="is the input"):
        extract_motion(npz, npz)
    assert driver.read_bytes().startswith(b"not really")


# -- inputs that are not files ----------------------------------------------------------------

@pytest.mark.parametrize("command", [["animate", "someone", "--driver", "{fifo}", "-o", "{out}.mp4"],
                                     ["motion", "extract", "{fifo}", "-o", "{out}.npz"],
                                     ["enroll", "{fifo}", "--name", "someone"]])
def test_a_fifo_input_is_refused_not_waited_on(tmp_path, capsys, command):
    fifo = tmp_path / "driver.mp4"
    os.mkfifo(fifo)
    args = [a.format(fifo=fifo, out=tmp_path / "out") for a in command]
    assert main(args) == 2  # returns at once: nothing opens the pipe
    _one_line(capsys, "not a regular file")


def test_motion_extract_quiet_prints_no_python_warning(tmp_path, capsys, monkeypatch, sample_dir):
    import warnings

    import thead.motion
    from thead.faces import make_detector

    def noisy(kind="auto", **kw):
        warnings.warn("FAN landmarks unavailable (test); using dlib")
        return make_detector("dlib")

    monkeypatch.setattr(thead.motion, "make_detector", noisy)
    clip = sample_dir / "test_videos/id00061/mMOd25Ag7XY/00239.mp4"
    assert main(["motion", "extract", str(clip), "-o", str(tmp_path / "a.npz"), "--max-frames", "2", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["motion", "extract", str(clip), "-o", str(tmp_path / "b.npz"), "--max-frames", "2"]) == 0
    err = capsys.readouterr().err
    assert "note: FAN landmarks unavailable (test)" in err and "UserWarning" not in err and "warnings.warn" not in err
