"""The authors' release fetched from a fake Google Drive (tests/fake_drive.py), converted and
cached; every failure one line with nothing half-done left in the cache.

thead is pointed at the fake Drive by configuration only: ``HTTPS_PROXY`` + ``REQUESTS_CA_BUNDLE``
(Drive's own URLs, through gdown's Drive handling), ``$THEAD_RELEASE_URL`` (a plain http URL),
``HF_ENDPOINT`` (a Hub that has never heard of thead's repo) and a fresh ``$THEAD_CACHE``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest

from tests.fake_drive import FakeDrive
from thead import release
from thead.download import DownloadError, quiet_display, remove_cached
from thead.errors import WeightsError

REPO = Path(__file__).resolve().parents[1]
RUN = "_trained_models/meta_learning/voxceleb2_meta_learning"  # the authors' README's layout


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint_files(parity_dir) -> dict[str, bytes]:
    """The reduced parity checkpoint as the authors lay it out, plus an older, broken
    checkpoint that only the ``checkpoint`` state file tells apart from the right one."""
    files = {f"{RUN}/{p.name}": p.read_bytes() for p in (parity_dir / "ckpt_reduced").iterdir()}
    files[f"{RUN}/ckpt-9.index"] = b"not a checkpoint"  # newest by number, not the one named
    files[f"{RUN}/ckpt-9.data-00000-of-00001"] = b""
    files["_trained_models/README.txt"] = b"LSR release"
    return files


@pytest.fixture(scope="module")
def release_archive(checkpoint_files) -> bytes:
    return _tar(checkpoint_files)


@pytest.fixture(scope="module")
def drive(tmp_path_factory, release_archive):
    with FakeDrive(tmp_path_factory.mktemp("drive"), lifetime_s=600) as d:
        d.add(release.WEIGHTS.drive_id, "lsr_release.tar.gz", release_archive)
        yield d


@pytest.fixture
def env(drive, tmp_path, monkeypatch):
    """A clean thead cache and home; only the fake Drive reachable."""
    for k in ("THEAD_WEIGHTS", "THEAD_RELEASE_URL", "THEAD_TESTSET_URL", "THEAD_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    values = {**drive.env(), "THEAD_CACHE": str(tmp_path / "cache"), "THEAD_HOME": str(tmp_path / "home"),
              "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def _cache_files(env) -> list[str]:
    root = Path(env["THEAD_CACHE"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_tensors(a: Path, b: Path) -> None:
    """Equal config and tensors (the safetensors header's metadata order is not stable across
    processes, so the bytes may differ)."""
    from safetensors.torch import load_file

    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text
    assert "thead weights convert" in text or "--testset" in text, text
    return text


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_demo_from_nothing_then_offline(env, drive, tmp_path, release_archive, parity_weights):
    """The README's first command with a clean cache: download (Drive's confirm page), convert,
    render; the second run works offline from the cache."""
    base = {k: v for k, v in os.environ.items()}
    out = tmp_path / "demo.mp4"
    cmd = [sys.executable, "-m", "thead", "demo", "-o", str(out), "--seconds", "0.2"]
    before = len(drive.requests)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=base, timeout=300)
    assert done.returncode == 0, done.stderr
    from tests.test_animate import probe

    assert probe(out) == (5, Fraction(25), (224, 224), False)
    hosts = [r[0] for r in drive.requests[before:]]
    assert "drive.google.com" in hosts and "drive.usercontent.google.com" in hosts  # went through Drive's pages
    assert f"sha256 {_sha(release_archive)}" in done.stderr  # printed for the user to compare
    assert f"size {len(release_archive) / 1e6:,.1f} MB" in done.stderr
    assert "converting it takes about" in done.stderr
    cached = Path(env["THEAD_CACHE"]) / "weights" / "lsr-voxceleb2"
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "model.safetensors", "provenance.json"]
    # The same tensors as converting the checkpoint by hand; the archive is gone.
    _same_tensors(cached, parity_weights)
    record = json.loads((cached / "provenance.json").read_text())
    assert record["archive_sha256"] == _sha(release_archive)
    assert record["source_url"] == release.WEIGHTS.default_url
    assert record["checkpoint"] == f"{RUN}/ckpt-0"  # named by the state file, not the newer ckpt-9
    assert record["converted_sha256"]["model.safetensors"] == _sha((cached / "model.safetensors").read_bytes())
    assert not any("downloads/" in f and f.endswith(".archive") for f in _cache_files(env))

    # Second run: no network at all (offline, and the proxy points at a closed port).
    offline = {**base, "HF_HUB_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    out.unlink()
    before = len(drive.requests)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=offline, timeout=300)
    assert done.returncode == 0, done.stderr
    assert probe(out)[0] == 5
    assert len(drive.requests) == before and "downloading" not in done.stderr

    # `thead weights info` shows where the model came from.
    info = subprocess.run([sys.executable, "-m", "thead", "weights", "info"], capture_output=True, text=True, cwd=REPO,
                          env=offline, timeout=120)
    assert info.returncode == 0, info.stderr
    assert f"archive sha256: {_sha(release_archive)}" in info.stdout
    assert f"source: {release.WEIGHTS.default_url}" in info.stdout


# ---------------------------------------------------------------------------- in process


def test_plain_url_zip_and_keep_archive(env, drive, monkeypatch, checkpoint_files, parity_weights):
    data = _zip(checkpoint_files)
    drive.add("plainzip", "release.zip", data)
    monkeypatch.setenv("THEAD_RELEASE_URL", drive.plain_url("plainzip"))
    folder = release.release_weights(keep_archive=True, display=quiet_display())
    _same_tensors(folder, parity_weights)
    assert release.read_provenance(folder).source_url == drive.plain_url("plainzip")
    archive = Path(env["THEAD_CACHE"]) / "downloads" / "lsr-voxceleb2.archive"
    assert archive.read_bytes() == data
    assert release.release_weights(display=quiet_display()) == folder  # cached: no second download


def test_quota_page_is_one_line_and_caches_nothing(env, drive, monkeypatch):
    monkeypatch.setenv("THEAD_RELEASE_URL", drive.add("quota1", "r.tar.gz", b"x", quota=True))
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert "quota" in _one_line(e.value)
    assert _cache_files(env) == []


def test_web_page_instead_of_archive(env, drive, monkeypatch):
    drive.add("signin", "r.tar.gz", b"", html_instead=True)
    monkeypatch.setenv("THEAD_RELEASE_URL", drive.plain_url("signin"))
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert "web page instead of" in _one_line(e.value)
    assert _cache_files(env) == []


def test_broken_transfer_resumes_next_time(env, drive, monkeypatch, release_archive):
    monkeypatch.setenv("THEAD_RELEASE_URL", drive.add("cut1", "r.tar.gz", release_archive, cut_once=True))
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert "run the command again to resume" in _one_line(e.value)
    files = _cache_files(env)
    assert len(files) == 1 and files[0].endswith(".part") and "weights" not in files[0]  # only the partial transfer
    partial = (Path(env["THEAD_CACHE"]) / files[0]).stat().st_size
    assert 0 < partial < len(release_archive)
    before = len(drive.requests)
    folder = release.release_weights(display=quiet_display())
    assert release.read_provenance(folder).archive_sha256 == _sha(release_archive)
    assert ("drive.usercontent.google.com", "/download", f"bytes={partial}-") in drive.requests[before:]


def test_interrupted_transfer_keeps_the_partial_file(env, drive, monkeypatch, release_archive):
    monkeypatch.setenv("THEAD_RELEASE_URL", drive.plain_url(release.WEIGHTS.drive_id))
    class CtrlC:  # a thead.progress.Progress: Ctrl-C once 1 MB has arrived
        def update(self, done, total=None, *, stage="", info=""):
            if done >= 1 << 20:
                raise KeyboardInterrupt

        def note(self, text):
            pass

    with pytest.raises(KeyboardInterrupt):
        release.release_weights(display=CtrlC())
    files = _cache_files(env)
    assert len(files) == 1 and files[0].endswith(".part")
    assert release.cached_release_weights() is None
    release.release_weights(display=quiet_display())
    assert release.cached_release_weights() is not None
    assert [f for f in _cache_files(env) if f.endswith(".part")] == []


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("nockpt", lambda files: _tar({"_trained_models/README.txt": b"no checkpoint here"}), "no TF checkpoint"),
        ("corrupt", lambda files: _tar(files)[: 100_000], "corrupt"),
        ("notarchive", lambda files: b"\x89PNG\r\n\x1a\n" + os.urandom(5000), "neither a zip nor a tar"),
        ("badckpt", lambda files: _tar({f"{RUN}/checkpoint": b'model_checkpoint_path: "ckpt-3"\n',
                                        f"{RUN}/ckpt-3.index": os.urandom(300),
                                        f"{RUN}/ckpt-3.data-00000-of-00001": os.urandom(300)}), "does not convert"),
        ("layoutonly", lambda files: _tar({k.replace("meta_learning", "layout_pretraining"): v for k, v in files.items()
                                           if "ckpt-9" not in k}), None),
    ],
)
def test_bad_archives_leave_nothing(env, drive, monkeypatch, checkpoint_files, name, make, words):
    monkeypatch.setenv("THEAD_RELEASE_URL", drive.add(name, "r.tar.gz", make(checkpoint_files)))
    if words is None:  # not the meta_learning folder but a usable checkpoint: taken
        assert release.release_weights(display=quiet_display()) is not None
        return
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert words in _one_line(e.value)
    assert _cache_files(env) == []


def test_a_different_archive_later_is_refused(env, drive, monkeypatch, release_archive, checkpoint_files):
    url = drive.add("trust1", "r.tar.gz", release_archive)
    monkeypatch.setenv("THEAD_RELEASE_URL", url)
    folder = release.release_weights(display=quiet_display())
    recorded = json.loads((Path(env["THEAD_CACHE"]) / "trust.json").read_text())
    assert recorded[url]["sha256"] == _sha(release_archive)
    remove_cached(folder)
    other = _tar(checkpoint_files, mode="w")  # same checkpoint, other bytes (an uncompressed tar)
    drive.add("trust1", "r.tar.gz", other)
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert "different archive" in _one_line(e.value) and _sha(other)[:16] in str(e.value)
    assert [f for f in _cache_files(env) if f != "trust.json"] == []


def test_offline_fails_at_once(env, drive, monkeypatch):
    monkeypatch.setenv("THEAD_OFFLINE", "1")
    before = len(drive.requests)
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert "downloads are off" in _one_line(e.value)
    assert len(drive.requests) == before


def test_convert_takes_the_archive(tmp_path, release_archive, parity_weights):
    from thead.cli import main

    archive = tmp_path / "release.tar.gz"
    archive.write_bytes(release_archive)
    assert main(["weights", "convert", str(archive), "-o", str(tmp_path / "w")]) == 0
    _same_tensors(tmp_path / "w", parity_weights)
    assert not list(tmp_path.glob("thead-extract-*"))


# ---------------------------------------------------------------------------- cache hygiene


def test_remove_cached_never_leaves_the_cache(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"keep me")
    link = root / "link.bin"
    link.symlink_to(outside)
    remove_cached(link, root)
    assert not link.exists() and not link.is_symlink() and outside.read_bytes() == b"keep me"
    with pytest.raises(WeightsError, match="not inside the cache"):
        remove_cached(outside, root)
    with pytest.raises(WeightsError, match="not inside the cache"):
        remove_cached(root / ".." / "precious.bin", root)
    assert outside.exists()


def test_hub_hash_mismatch_does_not_follow_a_link_out_of_the_cache(tmp_path, monkeypatch):
    """A snapshot file that links outside the Hub cache: the link goes, its target stays."""
    from thead.errors import HubError
    from thead.hub import FilePin, verify_files

    cache = tmp_path / "hub"
    snapshot = cache / "models--o--n" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    blobs = cache / "models--o--n" / "blobs"
    blobs.mkdir()
    outside = tmp_path / "mine.safetensors"
    outside.write_bytes(b"user file")
    (snapshot / "model.safetensors").symlink_to(outside)
    blob = blobs / "deadbeef"
    blob.write_bytes(b"bad blob")
    (snapshot / "config.json").symlink_to(blob)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("model.safetensors", "config.json"):
        with pytest.raises(HubError, match="sha256 mismatch"):
            verify_files(snapshot, [FilePin(name, "0" * 64)], source="o/n", delete_bad=True)
    assert outside.read_bytes() == b"user file"  # outside the cache: untouched
    assert not blob.exists()  # inside the cache: the bad blob is gone, so it is fetched afresh
    assert not (snapshot / "model.safetensors").is_symlink() and not (snapshot / "config.json").is_symlink()


# ---------------------------------------------------------------------------- evaluation subset


@pytest.fixture(scope="module")
def eval_archive(sample_dir) -> bytes:
    """One person of the sample's FSTH subset, and 'precomputed outputs' for it: its test
    frames with a little noise (as a method's output would differ from the truth)."""
    import numpy as np
    from PIL import Image

    root = sample_dir / "fsth_eval_subset"
    files = {}
    for part in ("train", "test"):
        for p in sorted((root / part / "id00017").rglob("*_rgb.png")):
            files[f"lsr_eval/fsth_eval_subset/{p.relative_to(root)}"] = p.read_bytes()
    rng = np.random.default_rng(0)
    for p in sorted((root / "test" / "id00017").rglob("*_rgb.png"))[:2]:
        frame = np.asarray(Image.open(p).convert("RGB")).astype(np.int16)
        noisy = np.clip(frame + rng.integers(-3, 4, frame.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="PNG")
        files[f"lsr_eval/authors_results/id00017/K1/{p.name.split('_')[0]}.png"] = buf.getvalue()
    return _tar(files)


@pytest.mark.slow
def test_eval_voxceleb_fetches_the_subset_and_scores_the_authors_outputs(env, drive, monkeypatch, eval_archive, tmp_path, capsys):
    from thead.cli import main

    monkeypatch.delenv("THEAD_VOXCELEB_FSTH", raising=False)
    drive.add(release.TESTSET.drive_id, "fsth_eval.tar.gz", eval_archive)
    report = tmp_path / "report"
    args = ["eval", "--testset", "voxceleb", "--outputs", "authors", "--people", "id00017", "--shots", "1",
            "--max-frames", "2", "--id-model", "dlib", "--no-download", "-o", str(report)]
    assert main(args) == 0, capsys.readouterr().err
    folder = release.cached_testset()
    testset, outputs = release.testset_paths(folder)
    assert testset == folder / "lsr_eval" / "fsth_eval_subset" and outputs == folder / "lsr_eval" / "authors_results"
    data = json.loads((report / "report.json").read_text())
    run = data["runs"][0]
    assert data["source"] == str(outputs) and run["num_shots"] == 1 and run["num_frames"] == 2
    # noise uniform on -3..3: MSE 4, PSNR 10·log10(255²/4) = 42.1 dB
    assert run["mean"]["psnr"] == pytest.approx(42.1, abs=0.3) and run["mean"]["ssim"] > 0.9
    assert not any(f.endswith(".archive") for f in _cache_files(env))
    # Scored from the cache the second time: nothing fetched.
    before = len(drive.requests)
    assert main(args) == 0
    assert len(drive.requests) == before


def test_eval_archive_without_the_layout_is_one_line(env, drive, monkeypatch):
    monkeypatch.setenv("THEAD_TESTSET_URL", drive.add("evalbad", "e.tar.gz", _tar({"frames/00001.png": b"x"})))
    with pytest.raises(DownloadError) as e:
        release.release_testset(display=quiet_display())
    assert "no FSTH layout" in _one_line(e.value)
    assert _cache_files(env) == []


def test_a_pinned_archive_sha256_is_enforced(env, drive, monkeypatch, tmp_path, release_archive):
    from thead import hub

    def pin(sha: str) -> None:
        entry = hub.WeightsEntry(name="lsr-voxceleb2", repo_id=hub.DEFAULT_REPO_ID, archive_sha256=sha)
        (tmp_path / "w").mkdir(exist_ok=True)
        hub.write_manifest(tmp_path / "w" / hub.MANIFEST_NAME, [entry])
        monkeypatch.setattr(hub.manifest, "WEIGHTS_DIR", tmp_path / "w")

    assert hub.read_manifest(hub.manifest.WEIGHTS_DIR / hub.MANIFEST_NAME)[0].archive_sha256 is None  # shipped: not pinned yet
    pin("ab" * 32)
    with pytest.raises(DownloadError) as e:
        release.release_weights(display=quiet_display())
    assert "pinned in weights/manifest.json" in _one_line(e.value)
    assert _cache_files(env) == []
    pin(_sha(release_archive))
    assert release.release_weights(display=quiet_display()) is not None
