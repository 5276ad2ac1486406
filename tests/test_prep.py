"""``thead prep`` on the real sample clips and frame folders, resuming, and bad inputs."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import thead.cli.prep  # noqa: F401  (registers the command)
from thead.cli import main
from thead.faces import ContourRenderer, load_image
from thead.prep import PrepOptions, prepare, sampled_indices

CLIP = "id00017/OLguY5ofUrY/00039"


@pytest.fixture(scope="module")
def videos(sample_dir):
    return sample_dir / "test_videos"


def _write_video(path, frames, fps=25):
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_sampling_rule():
    # ref §1.9: clip 00039 (164 frames), k=10 -> 0, 17, ..., 153
    assert sampled_indices(164, 10) == list(range(0, 154, 17))
    assert sampled_indices(5, 10) == [0, 1, 2, 3, 4]
    assert sampled_indices(10, 10) == [0, 2, 4, 6, 8]


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "out"
    report = prepare(videos, out, PrepOptions(segmaps=False, landmarks="dlib"))
    return out, report


def test_prep_writes_the_authors_layout(prepared, detector):
    out, report = prepared
    assert not report.failures and len(report.clips) == 3
    clip = next(c for c in report.clips if c.clip == CLIP)
    assert clip.frames == tuple(range(0, 154, 17)) and clip.num_source_frames == 164
    assert clip.no_face == () and not clip.cropped and not clip.segmaps
    folder = out / CLIP
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([".done.json"] + [f"{i:05d}_{k}.png" for i in clip.frames for k in ("rgb", "contour")])
    renderer = ContourRenderer()
    for i in clip.frames[:3]:
        rgb = Image.open(folder / f"{i:05d}_rgb.png")
        contour = Image.open(folder / f"{i:05d}_contour.png")
        assert rgb.mode == contour.mode == "RGB" and rgb.size == contour.size == (224, 224)
        expected = renderer.draw(detector.detect(np.asarray(rgb))[0].landmarks)
        np.testing.assert_array_equal(np.asarray(contour), expected)
    manifest = json.loads(report.manifest.read_text())
    assert manifest["num_clips"] == 3 and manifest["num_frames"] == report.num_frames == 30
    assert [c["clip"] for c in manifest["clips"]] == sorted(c.clip for c in report.clips)
    assert manifest["failures"] == [] and manifest["options"]["k"] == 10


def test_prep_frames_are_the_clip_frames(prepared, videos):
    out, _ = prepared
    frames = _decode(videos / f"{CLIP}.mp4")
    for i in (0, 17, 153):
        np.testing.assert_array_equal(load_image(out / CLIP / f"{i:05d}_rgb.png"), frames[i])


def test_prep_resumes(prepared, videos):
    out, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    report = prepare(videos, out, PrepOptions(segmaps=False, landmarks="dlib"))
    assert report.num_resumed == 3 and report.num_frames == 30
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    (out / CLIP / ".done.json").unlink()  # an unfinished clip is redone
    report = prepare(videos, out, PrepOptions(segmaps=False, landmarks="dlib"))
    assert report.num_resumed == 2
    assert (out / CLIP / ".done.json").is_file()
    assert not list(out.rglob("*.part"))


def test_a_done_record_is_read_strictly_and_a_damaged_one_means_redo(prepared, tmp_path):
    from dataclasses import replace

    from thead.prep import DONE_MARKER, ClipJob, _finished

    out, report = prepared
    written = next(c for c in report.clips if c.clip == CLIP)
    copy = tmp_path / "out"
    (copy / CLIP).mkdir(parents=True)
    marker = copy / CLIP / DONE_MARKER
    text = (out / CLIP / DONE_MARKER).read_text()  # as prepare() wrote it
    marker.write_text(text)
    job = ClipJob(source=out, out_rel=CLIP)
    assert _finished(copy, job) == replace(written, resumed=True)
    for edit in (lambda d: d.update(segmaps=1), lambda d: d.update(num_source_frames="75"), lambda d: d.pop("frames"),
                 lambda d: d.update(frames=[[0, 1]]), lambda d: d.update(resumed=False, extra=1)):
        d = json.loads(text)
        edit(d)
        marker.write_text(json.dumps(d))
        assert _finished(copy, job) is None, d


@pytest.mark.slow
def test_bad_clips_are_reported_and_the_rest_prepared(tmp_path, videos, capsys):
    src = tmp_path / "src" / "id99999" / "vid"
    src.mkdir(parents=True)
    good = videos / f"{CLIP}.mp4"
    shutil.copy(good, src / "00001.mp4")
    (src / "00002.mp4").write_text("not a video")
    data = good.read_bytes()
    (src / "00003.mp4").write_bytes(data[: len(data) // 3])  # moov atom lost: unreadable
    _write_video(src / "00004.mp4", [np.full((224, 224, 3), 128, np.uint8)] * 12)  # no face anywhere
    import av

    with av.open(str(src / "00005.mp4"), "w") as c:  # a video without any frames
        c.add_stream("libx264", rate=25)
        c.start_encoding()
    out = tmp_path / "out"
    code = main(["prep", str(tmp_path / "src"), str(out), "--k", "3", "--no-segmaps"])  # --landmarks auto
    assert code == 0
    err = capsys.readouterr().err
    from thead.faces.landmarks import auto_fallback_note

    assert err.count("note: FAN landmarks unavailable") == (1 if auto_fallback_note() else 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["clip"] for c in manifest["clips"]] == ["id99999/vid/00001"]
    failures = {f["clip"].rsplit("/", 1)[1]: f["error"] for f in manifest["failures"]}
    assert set(failures) == {"00002", "00003", "00004", "00005"}
    # (the wording is thead.video's; these check that each names its problem)
    assert re.search(r"00002\.mp4 .*(not a readable|cannot be read)", failures["00002"])
    assert re.search(r"00003\.mp4 .*(not a readable|cannot be read|truncated)", failures["00003"])
    assert "no face" in failures["00004"]
    assert re.search(r"00005\.mp4 .*(no video|zero frames)", failures["00005"])
    for clip, error in failures.items():
        assert "\n" not in error
        assert f"skipped id99999/vid/{clip}: {error}" in err.splitlines()
        assert not (out / "id99999" / "vid" / clip).exists()
    assert "Traceback" not in err and "1 clips" in err and "4 clips failed" in err


def test_truncated_but_readable_video_fails_cleanly(tmp_path, videos):
    import subprocess

    import imageio_ffmpeg

    src = tmp_path / "src" / "p" / "v"
    src.mkdir(parents=True)
    fast = tmp_path / "fast.mp4"  # moov first, so the head of the file still opens
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(videos / f"{CLIP}.mp4"), "-c", "copy",
                    "-movflags", "+faststart", str(fast)], check=True)
    data = fast.read_bytes()
    (src / "00001.mp4").write_bytes(data[: len(data) // 3])
    report = prepare(tmp_path / "src", tmp_path / "out", PrepOptions(segmaps=False, landmarks="dlib"))
    assert not report.clips and len(report.failures) == 1
    assert "truncated" in report.failures[0].error


def test_images_mode_reports_faceless_frames_without_padding(tmp_path, sample_dir):
    frames = sorted((sample_dir / "fsth_eval_subset/train/id00017/OLguY5ofUrY/combined").glob("*_rgb.png"))[:6]
    src = tmp_path / "src" / "train" / "id00017" / "OLguY5ofUrY" / "combined"
    src.mkdir(parents=True)
    for i, p in enumerate(frames):
        shutil.copy(p, src / f"{i:05d}_rgb.png" if i != 3 else src / "00003_rgb.png")
    Image.new("RGB", (224, 224), (128, 128, 128)).save(src / "00003_rgb.png")  # no face
    report = prepare(tmp_path / "src", tmp_path / "out", PrepOptions(mode="images", segmaps=False, landmarks="dlib"))
    (clip,) = report.clips
    assert clip.clip == "train/id00017/OLguY5ofUrY/combined"
    assert clip.frames == (0, 1, 2, 4, 5) and clip.no_face == (3,)
    folder = tmp_path / "out" / clip.clip
    assert not (folder / "00003_rgb.png").exists() and not (folder / "00003_contour.png").exists()
    np.testing.assert_array_equal(load_image(folder / "00004_rgb.png"), load_image(frames[4]))


def test_non_voxceleb_framing_is_cropped_with_one_window(tmp_path, videos, detector):
    frames = _decode(videos / f"{CLIP}.mp4")[:20]
    canvas = [np.pad(f, ((300, 116), (60, 76), (0, 0)), mode="edge") for f in frames]  # 360x640 portrait
    src = tmp_path / "src" / "p" / "v"
    src.mkdir(parents=True)
    _write_video(src / "00001.mp4", canvas)
    report = prepare(tmp_path / "src", tmp_path / "out", PrepOptions(k=4, segmaps=False, landmarks="dlib"))
    (clip,) = report.clips
    assert clip.cropped and clip.frames == (0, 6, 12, 18)
    for i in clip.frames:
        out = load_image(tmp_path / "out" / "p/v/00001" / f"{i:05d}_rgb.png")
        assert out.shape == (224, 224, 3)
        err = np.linalg.norm(detector.detect(out)[0].landmarks - detector.detect(frames[i])[0].landmarks, axis=1).mean()
        assert err < 6, err  # framed as VoxCeleb2 framed the original (H.264 round trip included)


@pytest.mark.slow
def test_segmaps_written_when_a_parser_is_available(tmp_path, videos, monkeypatch):
    import torch

    from thead.faces import parsing

    torch.manual_seed(0)
    weights = tmp_path / "79999_iter.pth"
    torch.save(parsing.BiSeNet().state_dict(), weights)
    sha = parsing.sha256_file(weights)
    real_loader = parsing.load_face_parser
    monkeypatch.setattr(parsing, "parser_available", lambda: True)
    monkeypatch.setattr(parsing, "load_face_parser", lambda device="cpu": real_loader(weights, sha256=sha, device=device))
    src = tmp_path / "src" / "id00017" / "OLguY5ofUrY"
    src.mkdir(parents=True)
    shutil.copy(videos / f"{CLIP}.mp4", src / "00039.mp4")
    report = prepare(tmp_path / "src", tmp_path / "out", PrepOptions(k=1, landmarks="dlib"))
    (clip,) = report.clips
    assert clip.segmaps and clip.frames == (0,)
    for i in clip.frames:
        seg = Image.open(tmp_path / "out" / CLIP / f"{i:05d}_segmap_merged.png")
        assert seg.mode == "L" and seg.size == (224, 224) and np.asarray(seg).max() <= 18


@pytest.mark.slow
def test_parallel_workers_give_the_same_files(tmp_path, videos):
    src = tmp_path / "src" / "id00017" / "OLguY5ofUrY"
    src.mkdir(parents=True)
    for name in ("00001", "00002"):
        shutil.copy(videos / f"{CLIP}.mp4", src / f"{name}.mp4")
    serial = prepare(tmp_path / "src", tmp_path / "a", PrepOptions(k=2, segmaps=False, landmarks="dlib"))
    parallel = prepare(tmp_path / "src", tmp_path / "b", PrepOptions(k=2, workers=2, segmaps=False, landmarks="dlib"))
    assert [c.frames for c in serial.clips] == [c.frames for c in parallel.clips]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png")) and files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["prep", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert main(["prep", str(tmp_path), str(tmp_path / "out"), "--k", "0"]) == 2
    assert main(["prep", str(tmp_path), str(tmp_path / "out")]) == 1  # no clips there
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {tmp_path / 'missing'} is not a folder",
        "error: --k must be at least 1, got 0",
        f"error: no video files found under {tmp_path} (--mode videos)",
    ]
