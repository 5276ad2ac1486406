"""Animation end to end on real clips with the authors' reduced parity weights."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from thead.video import open_video
from thead.animate import AnimateOptions, Animator
from thead.compose import PasteBack
from thead.avatar import AvatarStore
from thead.enroll import enroll
from thead.errors import AvatarError, UsageError
from thead.faces import load_image, make_detector
from thead.model import RENDER_NETWORKS
from thead.motion import DriverOptions, extract_motion

TRAIN_17 = "fsth_eval_subset/train/id00017/OLguY5ofUrY/combined"
TEST_17 = "fsth_eval_subset/test/id00017/OLguY5ofUrY/combined"
CLIP_17 = "test_videos/id00017/OLguY5ofUrY/00039.mp4"
CLIP_61 = "test_videos/id00061/mMOd25Ag7XY/00239.mp4"
CLIP_81 = "test_videos/id00081/vvLu_7TpP8c/00202.mp4"
FAST = AnimateOptions(device="cpu").with_driver(landmarks="dlib")


def trim_clip(src: Path, dst: Path, num_frames: int, *, audio: bool = True, blank: range = range(0)) -> Path:
    """The first ``num_frames`` of a real clip (re-encoded) with its audio up to that time;
    frames in ``blank`` replaced by flat grey (no face)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        # Lossless (qp 0): the decoded frames are the same every run; a lossy re-encode differs
        # from run to run here, and moved a face-shape ratio near its bound.
        vout.options = {"qp": "0"}
        ain = inp.streams.audio[0] if audio and inp.streams.audio else None
        aout = out.add_stream_from_template(ain) if ain is not None else None  # before the first packet
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= num_frames:
                break
            image = frame.to_ndarray(format="rgb24")
            if i in blank:
                image = np.full_like(image, 128)
            for p in vout.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(p)
        for p in vout.encode():
            out.mux(p)
        if ain is not None:
            end = num_frames / vin.average_rate
            with av.open(str(src)) as again:  # decoding consumed the first demuxer
                for p in again.demux(again.streams.audio[0]):
                    if p.dts is None or p.pts * p.time_base >= end:
                        continue
                    p.stream = aout
                    out.mux(p)
    return dst


def probe(path: Path):
    """(frame count, fps, (w, h), has audio) of a written video, by decoding it."""
    with open_video(path) as reader:
        fps, size, audio = reader.fps, reader.size, reader.has_audio
        n = sum(1 for _ in reader)
    return n, fps, size, audio


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def clips(sample_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "17": trim_clip(sample_dir / CLIP_17, d / "c17.mp4", 12),
        "61": trim_clip(sample_dir / CLIP_61, d / "c61.mp4", 12),
        "81": trim_clip(sample_dir / CLIP_81, d / "c81.mp4", 12),
    }


@pytest.fixture(scope="module")
def model(parity_model):
    return parity_model


@pytest.fixture(scope="module")
def store(avatar_store):
    return avatar_store


def animator(model, store, name, **kw) -> Animator:
    driver = {k: kw.pop(k) for k in list(kw) if hasattr(FAST.driver, k)}
    return Animator(model, store.load(name), dataclasses.replace(FAST, **kw).with_driver(**driver))


@pytest.mark.slow
def test_self_and_cross_identity_keep_count_fps_and_audio(tmp_path, model, store, clips):
    anim = animator(model, store, "p17")
    for clip in (clips["17"], clips["61"]):  # self-, then cross-identity
        out = tmp_path / f"{clip.stem}.out.mp4"
        result = anim(clip, out)
        n, fps, size, audio = probe(out)
        assert (n, fps, size, audio) == (12, Fraction(25), (224, 224), True)
        assert result.num_frames == 12 and result.audio and result.missing_faces == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c17.out.mp4", "c61.out.mp4"]  # no temporaries


def test_frames_are_the_rendered_contours(model, store, clips):
    """frames() yields what G^l+G^s make of the drawn target landmarks, frame for frame."""
    from thead.faces import draw_contour, to_tensor

    anim = animator(model, store, "p17", max_frames=3)
    frames = list(anim.frames(clips["61"]))
    assert [f.index for f in frames] == [0, 1, 2]
    ref = Animator(model, store.load("p17"), AnimateOptions(device="cpu"))
    for f in frames:
        with torch.inference_mode():
            image = ref.renderer.render(to_tensor(draw_contour(f.landmarks))[None]).image
        expected = torch.round(127.5 + 127.5 * image.clamp(-1, 1)).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        assert np.abs(f.image.astype(int) - expected).max() <= 1


@pytest.mark.slow
def test_paste_back_and_compare_sizes(tmp_path, model, store, clips):
    r = animator(model, store, "astro", paste_back=True, max_frames=3)(clips["61"], tmp_path / "p.mp4")
    assert r.size == (512, 512) and probe(tmp_path / "p.mp4")[:3] == (3, Fraction(25), (512, 512))
    r = animator(model, store, "p17", compare=True, max_frames=3)(clips["61"], tmp_path / "c.mp4")
    assert probe(tmp_path / "c.mp4")[2] == (448, 224)
    frames = list(animator(model, store, "p17", compare=True, max_frames=1).frames(clips["61"]))
    with open_video(clips["61"]) as reader:
        first = next(iter(reader)).image
    # the left half is the driver's crop: VoxCeleb frames are already 224 crops, so close to the frame
    assert np.abs(frames[0].image[:, :224].astype(int) - first.astype(int)).mean() < 25


def test_paste_back_of_the_avatars_own_crop_restores_its_photo(store):
    a = store.load("astro")
    paste = PasteBack(a.photo, a.photo_to_crop)
    out = paste(a.shots[0])
    x0, y0, x1, y1 = paste.region
    diff = np.abs(out.astype(int) - a.photo.astype(int))
    assert diff[y0:y1, x0:x1].mean() < 2.0  # only resampling error (crop is Lanczos, paste bilinear)
    assert diff.sum() == diff[y0:y1, x0:x1].sum()  # nothing outside the crop's window changes
    assert out.shape == a.photo.shape == (512, 512, 3)


@pytest.mark.slow
def test_photo_driver_gives_an_image(tmp_path, model, store, sample_dir):
    anim = animator(model, store, "p17")
    photo = sample_dir / TEST_17 / "00003_rgb.png"
    r = anim(photo, tmp_path / "out.png")
    assert r.num_frames == 1 and load_image(tmp_path / "out.png").shape == (224, 224, 3)
    with pytest.raises(UsageError, match="a photo driver gives an image"):
        anim(photo, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.slow
def test_motion_template_round_trip(tmp_path, model, store, clips):
    template, _ = extract_motion(clips["61"], tmp_path / "m.npz", DriverOptions(landmarks="dlib", max_frames=4))
    anim = animator(model, store, "p17", max_frames=4)
    from_video = list(anim.frames(clips["61"]))
    from_template = list(anim.frames(tmp_path / "m.npz"))
    assert len(from_template) == 4
    for a, b in zip(from_video, from_template):
        assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.image, b.image)
    r = anim(tmp_path / "m.npz", tmp_path / "t.mp4")
    assert probe(tmp_path / "t.mp4") == (4, Fraction(25), (224, 224), False) and not r.audio


@pytest.mark.slow
def test_relative_motion_keeps_the_avatars_face_shape(model, store, clips):
    """The astronaut's face is wider (w/h 1.02) than the id00081 driver's (0.89)."""

    def aspect(points):
        return np.ptp(points[:, 0]) / np.ptp(points[:, 1])

    avatar = aspect(store.load("astro").reference_landmarks)
    rel = [aspect(f.landmarks) for f in animator(model, store, "astro", max_frames=6).frames(clips["81"])]
    absolute = list(animator(model, store, "astro", max_frames=6, motion="absolute").frames(clips["81"]))
    driver = [aspect(f.landmarks) for f in absolute]
    assert all(abs(a - avatar) < 0.03 for a in rel)
    assert all(abs(d - avatar) > 0.08 for d in driver)


@pytest.mark.slow
def test_frames_without_a_face_reuse_the_last_landmarks(tmp_path, model, store, sample_dir):
    clip = trim_clip(sample_dir / CLIP_17, tmp_path / "gap.mp4", 10, blank=range(3, 9))
    out = tmp_path / "gap.out.mp4"
    result = animator(model, store, "p17")(clip, out)
    assert probe(out)[0] == 10
    # the tracker may re-fit a few frames around the last face before giving up; the rest count
    assert 1 <= result.missing_faces <= 6


def test_avatar_from_other_weights_is_refused(model, store):
    a = store.load("p17")
    other = dataclasses.replace(a, info=dataclasses.replace(a.info, weights_sha256="00" * 32))
    with pytest.raises(AvatarError, match="enrolled with other weights"):
        Animator(model, other, FAST)


@pytest.mark.slow
def test_finetuned_weights_are_used_automatically(tmp_path, model, store, parity_weights, clips, sample_dir):
    store2 = AvatarStore(tmp_path)
    enroll(sample_dir / TRAIN_17 / "00000_rgb.png", "ft", model=model, store=store2, detector=make_detector("dlib"))
    personal = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items() if k.startswith(RENDER_NETWORKS)}
    store2.save_finetuned("ft", personal)
    options = AnimateOptions(device="cpu").with_driver(landmarks="dlib", max_frames=2)
    tuned = Animator.load("ft", options, weights=parity_weights, store=store2)
    plain = Animator.load("ft", dataclasses.replace(options, finetuned=False), weights=parity_weights, store=store2)
    assert tuned.finetuned and not plain.finetuned
    a, b = next(tuned.frames(clips["17"])), next(plain.frames(clips["17"]))
    assert np.array_equal(a.landmarks, b.landmarks) and not np.array_equal(a.image, b.image)
    # personal weights made from other base weights are ignored
    store2.save_finetuned("ft", personal, base_weights_sha256="ff" * 32)
    other = Animator.load("ft", options, weights=parity_weights, store=store2)
    assert not other.finetuned and other.personal_skipped


@pytest.mark.slow
def test_bf16_on_cpu_is_close_to_fp32(model, store, clips):
    a = next(animator(model, store, "p17", max_frames=1).frames(clips["17"])).image.astype(float)
    b = next(animator(model, store, "p17", max_frames=1, dtype="bf16").frames(clips["17"])).image.astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    assert psnr > 25
    with pytest.raises(UsageError, match="fp16 needs a CUDA GPU"):
        animator(model, store, "p17", dtype="fp16")


def test_compile_option_renders_through_the_compiled_step(model, store, clips, monkeypatch):
    """--compile hands the render step to torch.compile (stood in by a recording wrapper: a real
    compile takes minutes here; tests/nn/test_parity.py runs the real one)."""
    compiled = []

    def fake_compile(fn, **kwargs):
        def run(*args, **kw):
            compiled.append(args[0].shape[0])
            return fn(*args, **kw)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain = [f.image for f in animator(model, store, "p17", max_frames=3).frames(clips["61"])]
    assert compiled == []
    through = [f.image for f in animator(model, store, "p17", max_frames=3, compile=True).frames(clips["61"])]
    assert sum(compiled) == 3  # every frame went through the compiled step
    # the eager path runs packed oneDNN convolutions, the step handed to the compiler the plain
    # ones (inductor packs its own): the same frames to float32 rounding, at most 1 level apart
    assert len(plain) == len(through) == 3
    assert all(np.abs(a.astype(np.int16) - b).max() <= 1 for a, b in zip(plain, through))
