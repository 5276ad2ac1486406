"""Atomic outputs: stale temporaries of dead runs are swept, a full disk is one line whatever
the writer raised, and written files get normal permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import torch
from safetensors import SafetensorError

from thead import _atomic
from thead._atomic import atomic_dir, atomic_file, sweep_stale_parts
from thead.errors import OutputError

# What safetensors raises when the disk fills (a Rust io::Error, not an OSError).
DISK_FULL = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _old(path):
    then = time.time() - 3600
    os.utime(path, (then, then))
    return path


def test_stale_parts_of_dead_runs_are_swept_on_the_next_write(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".clip.part.{dead}.abcd1234.mp4"
    stale_file.write_bytes(b"face crops of a killed run")
    _old(stale_file)
    stale_dir = tmp_path / f".weights.part.{dead}.abcd1234"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x")
    _old(stale_dir)
    # Not ours to remove: a live process's, a recent one, names not of thead's pattern, the user's.
    live = tmp_path / f".clip.part.{os.getppid()}.abcd1234.mp4"
    live.write_bytes(b"")
    _old(live)
    fresh = tmp_path / f".clip.part.{dead}.zzzz9999.mp4"
    fresh.write_bytes(b"")
    user = [tmp_path / ".clip.part.mp4", tmp_path / "clip.part.123.abcdefgh.mp4", tmp_path / f".x.part.{dead}"]
    for u in user:
        u.write_bytes(b"user")
        _old(u)
    os.utime(fresh, (time.time() + 60, time.time() + 60))  # newer than this run

    with atomic_file(tmp_path / "other.png") as tmp:
        tmp.write_bytes(b"new")
    left = {p.name for p in tmp_path.iterdir()}
    assert stale_file.name not in left and stale_dir.name not in left
    assert {live.name, fresh.name, "other.png", *(u.name for u in user)} <= left


def test_a_killed_run_leaves_a_part_that_the_next_run_removes(tmp_path):
    code = (
        "import sys, time\nfrom thead._atomic import atomic_file\n"
        "with atomic_file(sys.argv[1]) as t:\n    t.write_bytes(b'crops')\n    print('ready', flush=True)\n    time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "a.npz")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.kill()  # kill -9: no cleanup can run
    p.wait()
    parts = list(tmp_path.iterdir())
    assert len(parts) == 1 and parts[0].name.startswith(".a.part.")
    _old(parts[0])
    assert sweep_stale_parts(tmp_path) == parts
    assert list(tmp_path.iterdir()) == []


def test_safetensors_disk_full_is_one_output_error(tmp_path):
    with pytest.raises(OutputError, match="disk full while writing"):
        with atomic_file(tmp_path / "w.safetensors") as tmp:
            tmp.write_bytes(b"half")
            raise DISK_FULL
    with pytest.raises(OutputError, match="disk full while writing"):
        with atomic_dir(tmp_path / "weights"):
            raise DISK_FULL
    assert list(tmp_path.iterdir()) == []


def test_save_pretrained_disk_full_and_permissions(tmp_path, monkeypatch):
    from thead.config import LSRConfig
    from thead.model import LSR

    model = LSR(LSRConfig.reduced())
    out = model.save_pretrained(tmp_path / "ok")
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~_atomic._umask(), f
    import thead.model

    def full(*a, **k):
        raise DISK_FULL

    monkeypatch.setattr(thead.model, "save_file", full)
    with pytest.raises(OutputError, match="disk full"):
        model.save_pretrained(tmp_path / "full")
    assert not (tmp_path / "full").exists() and [p.name for p in tmp_path.iterdir()] == ["ok"]
