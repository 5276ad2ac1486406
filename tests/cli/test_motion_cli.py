"""The driver controls through the CLI on real clips with the parity weights: --start and
--duration (audio follows), --audio for templates and photos, --reference, motion extract
--onto (exactly what animate draws), avatars show --image."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import thead.cli.avatar  # noqa: F401  (registers the commands)
from thead.cli import main
from tests.test_animate import CLIP_61, TRAIN_17, probe


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _animate(driver, out, weights, *extra):
    return main(["animate", "p17", "--driver", str(driver), "-o", str(out), "--weights", str(weights), "--landmarks", "dlib",
                 "--quiet", *extra])


def audio_samples(path, start_s: float = 0.0, seconds: float = 0.4) -> np.ndarray:
    """Mono float samples of a file's audio from ``start_s``, ``seconds`` long."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks = [f.to_ndarray().astype(np.float64).reshape(f.layout.nb_channels if f.format.is_planar else 1, -1).mean(0)
                  for f in c.decode(stream)]
    x = np.concatenate(chunks)
    return x[int(start_s * rate):int((start_s + seconds) * rate)]


def where_in(piece: np.ndarray, source) -> float:
    """Seconds into ``source``'s audio where ``piece`` matches best (normalised
    cross-correlation by FFT)."""
    import av

    with av.open(str(source)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
    whole = audio_samples(source, 0.0, 1e9)
    n = len(whole) + len(piece)
    cc = np.fft.irfft(np.fft.rfft(whole, n) * np.conj(np.fft.rfft(piece, n)), n)[: len(whole) - len(piece)]
    energy = np.sqrt(np.convolve(whole**2, np.ones(len(piece)), "valid")[: len(cc)]) + 1e-9
    return float(np.argmax(cc / energy)) / rate


def test_start_and_duration_cut_video_and_audio(tmp_path, sample_dir, enrolled, parity_weights):
    out = tmp_path / "part.mp4"
    assert _animate(sample_dir / CLIP_61, out, parity_weights, "--start", "2", "--duration", "0.4", "--reference", "first") == 0
    assert probe(out) == (10, Fraction(25), (224, 224), True)
    # the sound is the source's from 2 s on: 0.2 s of it is found at 2.1 s in the source
    # (to within an AAC frame and the encoder's priming, ~0.05 s), not at 0.1 s
    assert abs(where_in(audio_samples(out, 0.1, 0.2), sample_dir / CLIP_61) - 2.1) < 0.06


def test_audio_for_templates_and_photos(tmp_path, sample_dir, enrolled, parity_weights):
    sound = sample_dir / CLIP_61  # any file with audio
    assert main(["motion", "extract", str(sample_dir / CLIP_61), "-o", str(tmp_path / "m.npz"), "--landmarks", "dlib",
                 "--duration", "0.4", "--quiet"]) == 0
    assert _animate(tmp_path / "m.npz", tmp_path / "t.mp4", parity_weights, "--audio", str(sound)) == 0
    assert probe(tmp_path / "t.mp4") == (10, Fraction(25), (224, 224), True)
    # a photo with --audio: a video of the photo's expression, as long as the sound
    photo = sample_dir / TRAIN_17 / "00010_rgb.png"
    clip_audio = tmp_path / "short.m4a"
    _write_audio(sound, clip_audio, 0.6)
    assert _animate(photo, tmp_path / "p.mp4", parity_weights, "--audio", str(clip_audio)) == 0
    n, fps, size, audio = probe(tmp_path / "p.mp4")
    assert fps == 25 and size == (224, 224) and audio and abs(n - 15) <= 1


def _write_audio(src, dst, seconds: float) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ain = inp.streams.audio[0]
        aout = out.add_stream_from_template(ain)
        for packet in inp.demux(ain):
            if packet.dts is None:
                continue
            if packet.pts * packet.time_base >= seconds:
                break
            packet.stream = aout
            out.mux(packet)


def test_extract_onto_is_what_animate_draws(tmp_path, sample_dir, enrolled, parity_weights):
    from thead.animate import AnimateOptions, Animator
    from thead.motion import MotionDriver, MotionTemplate

    assert main(["motion", "extract", str(sample_dir / CLIP_61), "-o", str(tmp_path / "onto.npz"), "--landmarks", "dlib",
                 "--start", "0.92", "--duration", "0.32", "--onto", "p17", "--quiet"]) == 0
    template = MotionTemplate.load(tmp_path / "onto.npz")
    assert template.onto == "p17" and template.num_frames == 8
    options = AnimateOptions(device="cpu").with_driver(landmarks="dlib", start_s=0.92, duration_s=0.32)
    animator = Animator.load("p17", options, weights=parity_weights)
    drawn = np.stack([f.landmarks for f in animator.frames(sample_dir / CLIP_61)])
    np.testing.assert_array_equal(drawn, template.landmarks)
    from_template = np.stack([f.landmarks for f in animator.frames(MotionDriver(template))])  # (no --start here)
    np.testing.assert_array_equal(from_template, template.landmarks)  # and it drives animate as is
    assert _animate(tmp_path / "onto.npz", tmp_path / "o.mp4", parity_weights) == 0


def test_avatars_show_image_and_bad_options(tmp_path, capsys, sample_dir, enrolled, parity_weights):
    from thead.faces import load_image

    assert main(["avatars", "show", "p17", "--image", str(tmp_path / "sheet.png")]) == 0
    sheet = load_image(tmp_path / "sheet.png")
    assert sheet.shape == (3 * 224, 3 * 224, 3)  # the photo column and K = 2 shot columns
    assert sheet[224:448, 224:448].max() > 0  # a contour drawing
    capsys.readouterr()
    for extra, words in [(["--reference", "middle"], "--reference"), (["--start", "-1"], "--start"),
                         (["--start", "99"], "past the end"), (["--duration", "0"], "--duration")]:
        code = _animate(sample_dir / CLIP_61, tmp_path / "bad.mp4", parity_weights, *extra)
        assert code == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
        assert not (tmp_path / "bad.mp4").exists()
    code = _animate(sample_dir / CLIP_61, tmp_path / "bad.mp4", parity_weights, "--audio", str(tmp_path / "none.m4a"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--audio" in err[0] and "does not exist" in err[0], err
    assert not (tmp_path / "bad.mp4").exists()
