"""``thead enroll / animate / demo / avatars / motion`` through the CLI on real clips, with the
authors' reduced parity weights: outputs, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
from fractions import Fraction
from pathlib import Path

import pytest

import thead.cli.avatar  # noqa: F401  (registers the commands)
from thead.cli import main
from tests.test_animate import CLIP_61, TRAIN_17, probe, trim_clip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def clip(sample_dir, tmp_path_factory):
    """12 real frames of id00061 with their audio."""
    return trim_clip(sample_dir / CLIP_61, tmp_path_factory.mktemp("clip") / "c61.mp4", 12)


def _animate(name, driver, out, weights, *extra):
    return main(["animate", name, "--driver", str(driver), "-o", str(out), "--weights", str(weights), "--landmarks", "dlib",
                 "--quiet", *extra])


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], err
    return err[0]


def test_enroll_list_show_animate_extract_rm(tmp_path, capsys, enrolled, parity_weights, clip):
    capsys.readouterr()
    assert main(["avatars", "list"]) == 0
    assert "p17" in capsys.readouterr().out
    assert main(["avatars", "show", "p17"]) == 0
    shown = capsys.readouterr().out
    assert "weights sha256" in shown and "shots (K): 2" in shown
    # a video driver: the driver's frame count, fps and audio
    assert _animate("p17", clip, tmp_path / "out.mp4", parity_weights) == 0
    assert probe(tmp_path / "out.mp4") == (12, Fraction(25), (224, 224), True)
    # a motion template: extracted once, then used without the video (no audio), side by side
    assert main(["motion", "extract", str(clip), "-o", str(tmp_path / "m.npz"), "--landmarks", "dlib", "--quiet"]) == 0
    assert _animate("p17", tmp_path / "m.npz", tmp_path / "t.mp4", parity_weights, "--compare", "--max-frames", "5") == 0
    assert probe(tmp_path / "t.mp4") == (5, Fraction(25), (448, 224), False)
    # not quiet: progress on stderr, a one-line summary
    assert main(["animate", "p17", "--driver", str(tmp_path / "m.npz"), "-o", str(tmp_path / "s.mp4"), "--weights",
                 str(parity_weights), "--max-frames", "2"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "out.mp4", "s.mp4", "t.mp4"]


def test_remove(home, capsys, parity_weights, sample_dir):
    photo = sample_dir / TRAIN_17 / "00000_rgb.png"
    assert main(["enroll", str(photo), "--name", "tmp1", "--weights", str(parity_weights), "--landmarks", "dlib", "--quiet"]) == 0
    assert main(["avatars", "rm", "tmp1"]) == 0
    assert not (home / "avatars" / "tmp1.safetensors").exists()
    capsys.readouterr()
    assert main(["avatars", "rm", "tmp1"]) == 1
    _one_error_line(capsys, "no avatar named 'tmp1'")


def test_bad_inputs_are_one_line_and_leave_nothing(tmp_path, capsys, enrolled, parity_weights, clip):
    out = tmp_path / "out.mp4"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    cases = [
        (["ghost", clip, out], "no avatar named 'ghost'"),
        (["p17", tmp_path / "missing.mp4", out], "does not exist"),
        (["p17", corrupt, out], "corrupt.mp4"),
        (["p17", clip, tmp_path / "no" / "such" / "folder" / "out.mp4"], "does not exist"),
        (["p17", clip, tmp_path / "out.avi"], ".mp4"),
    ]
    if sys.platform.startswith("linux"):
        cases.append((["p17", clip, Path("/sys/thead-out.mp4")], "not writable"))  # even for root
    for (name, driver, target), words in cases:
        capsys.readouterr()
        code = _animate(name, driver, target, parity_weights)
        assert code not in (0, 130), (name, driver, target)
        _one_error_line(capsys, words)
        assert not Path(target).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.mp4"]
    capsys.readouterr()
    assert main(["enroll", str(tmp_path), "--name", "../x", "--weights", str(parity_weights)]) == 2
    _one_error_line(capsys, "invalid avatar name")


def test_driver_without_audio_gives_silent_output(tmp_path, sample_dir, enrolled, parity_weights):
    silent = trim_clip(sample_dir / CLIP_61, tmp_path / "silent.mp4", 4, audio=False)
    assert _animate("p17", silent, tmp_path / "out.mp4", parity_weights) == 0
    assert probe(tmp_path / "out.mp4") == (4, Fraction(25), (224, 224), False)


def test_disk_full_during_encoding(tmp_path, capsys, monkeypatch, enrolled, parity_weights, clip):
    from thead.video import VideoWriter

    def full(self, packets):
        for _ in packets:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VideoWriter, "_mux", full)
    capsys.readouterr()
    assert _animate("p17", clip, tmp_path / "out.mp4", parity_weights, "--max-frames", "4") == 1
    _one_error_line(capsys, "disk full")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_rendering_leaves_nothing(tmp_path, capsys, monkeypatch, enrolled, parity_weights, clip):
    from thead.model import LSR

    render, calls = LSR.render, []

    def interrupted(self, contour, state):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return render(self, contour, state)

    monkeypatch.setattr(LSR, "render", interrupted)
    assert _animate("p17", clip, tmp_path / "out.mp4", parity_weights) == 130
    assert list(tmp_path.iterdir()) == []
    assert not any(t.name.startswith("thead-") and t.is_alive() for t in threading.enumerate())


def test_demo(tmp_path, home, capsys, parity_weights):
    out = tmp_path / "demo.mp4"
    assert main(["demo", "-o", str(out), "--weights", str(parity_weights), "--seconds", "0.4", "--quiet"]) == 0
    assert probe(out) == (10, Fraction(25), (224, 224), False)
    assert (home / "avatars" / "astronaut.safetensors").is_file()


def test_demo_without_the_fused_kernels_says_so_in_one_note(tmp_path, home, capsys, parity_weights, monkeypatch):
    monkeypatch.setenv("THEAD_FUSED_KERNELS", "0")  # as on a machine without a C compiler
    out = tmp_path / "demo.mp4"
    assert main(["demo", "-o", str(out), "--weights", str(parity_weights), "--seconds", "0.2"]) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if "fused CPU kernels" in ln]
    assert notes == ["note: fused CPU kernels unavailable, rendering without them (turned off by $THEAD_FUSED_KERNELS)"], err
    assert "Warning" not in err and probe(out)[0] == 5


def test_demo_without_weights_names_the_option(tmp_path):
    pytest.importorskip("thead.hub")
    env = {k: v for k, v in os.environ.items() if k not in ("THEAD_WEIGHTS", "HF_ENDPOINT")}
    # Offline with an empty cache: fails at once (huggingface_hub reads these at import).
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), THEAD_HOME=str(tmp_path / "home"))
    out = tmp_path / "demo.mp4"
    done = subprocess.run(
        [sys.executable, "-c", "import sys, thead.cli.avatar; from thead.cli import main; sys.exit(main(sys.argv[1:]))",
         "demo", "-o", str(out)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1 and err[0].startswith("error: ") and "--weights" in err[0], done.stderr
    assert not out.exists()


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from thead.animate import animate, AnimateOptions
    from thead.avatar import AvatarStore
    from thead.demo import synthetic_motion
    from thead.model import LSR, RenderOutput

    torch.set_num_threads(1)
    # The networks' memory does not depend on the driver; a stand-in keeps 1500 frames quick
    # while everything else (motion, contours, queues, paste-back, encoding) runs for real.
    LSR.render = lambda self, contour, state: RenderOutput(contour, contour, contour)
    seconds, weights, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    store = AvatarStore()
    motion = synthetic_motion(store.load("p17").reference_landmarks, seconds=seconds, fps=25)
    motion.save(out + ".npz")
    del motion
    r = animate("p17", out + ".npz", out, AnimateOptions(paste_back=True, device="cpu"), weights=weights)
    assert r.num_frames == round(seconds * 25), r
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_drivers_length(tmp_path, home, enrolled, parity_weights):
    def peak_kib(seconds: float) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(seconds), str(parity_weights), str(tmp_path / f"{seconds}.mp4")],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "THEAD_HOME": str(home)}, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])

    short, long = peak_kib(10), peak_kib(60)
    assert long <= 1.10 * short, (short, long)
