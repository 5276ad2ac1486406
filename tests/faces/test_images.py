"""load_image on the awkward photos users have: made here from a real sample frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from thead.errors import ImageError
from thead.faces import from_tensor, load_image, to_tensor


@pytest.fixture(scope="module")
def frame(fsth_frames) -> np.ndarray:
    return np.asarray(Image.open(fsth_frames[0]).convert("RGB"))


def test_rgb_png_is_read_as_is(fsth_frames, frame):
    image = load_image(fsth_frames[0])
    assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
    np.testing.assert_array_equal(image, frame)


def test_grayscale(tmp_path, frame):
    path = tmp_path / "gray.png"
    Image.fromarray(frame).convert("L").save(path)
    image = load_image(path)
    assert image.shape == (224, 224, 3)
    gray = np.asarray(Image.fromarray(frame).convert("L"))
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], gray)


def test_cmyk_jpeg(tmp_path, frame):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(frame).convert("CMYK").save(path, quality=95)
    image = load_image(path)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    # JPEG + CMYK round trip: close to the original, not identical
    assert np.abs(image.astype(int) - frame).mean() < 6


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, frame):
    gray8 = np.asarray(Image.fromarray(frame).convert("L")).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray8 * 257).save(path)  # full 16-bit range
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    image = load_image(path)
    np.testing.assert_array_equal(image[..., 0], gray8.astype(np.uint8))


def test_16_bit_rgb(tmp_path, frame):
    import av  # PIL cannot write 48-bit PNGs; encode one with FFmpeg's PNG encoder

    path = tmp_path / "rgb48.png"
    rgb48 = frame.astype(np.uint16) * 257
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 224, 224, "rgb48be"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb48, format="rgb48le")))
        out.mux(stream.encode(None))
    image = load_image(path)
    assert np.abs(image.astype(int) - frame).max() <= 1


def test_exif_rotation_is_applied(tmp_path, frame):
    # Stored rotated, with EXIF orientation 6 ("rotate 90 CW to display"), as phones write.
    stored = Image.fromarray(frame).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=98)
    image = load_image(path)
    assert image.shape == (224, 224, 3)
    assert np.abs(image.astype(int) - frame).mean() < 4  # upright again (JPEG noise only)
    assert np.abs(np.asarray(Image.open(path).convert("RGB")).astype(int) - frame).mean() > 20


def test_palette_with_transparency(tmp_path, frame):
    path = tmp_path / "pal.png"
    rgba = Image.fromarray(frame).convert("RGBA")
    alpha = np.full((224, 224), 255, np.uint8)
    alpha[:10] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(path)
    image = load_image(path)
    assert (image[:10] == 255).all()  # transparent rows composited on white
    np.testing.assert_array_equal(image[10:], frame[10:])


@pytest.mark.parametrize(
    "content, what",
    [(b"this is not an image", "is not an image"), (None, "does not exist"), (b"folder", "is a folder")],
)
def test_bad_files_are_one_line_image_errors(tmp_path, content, what):
    path = tmp_path / "photo.jpg"
    if content == b"folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=what) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_truncated_png(tmp_path, fsth_frames):
    data = fsth_frames[0].read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot be read") as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_tensor_round_trip(frame):
    x = to_tensor(frame)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, 0, 0].item() == pytest.approx(frame[0, 0, 0] * 2 / 255 - 1)
    np.testing.assert_array_equal(from_tensor(x), frame)
    np.testing.assert_array_equal(from_tensor(x[None]), frame)
