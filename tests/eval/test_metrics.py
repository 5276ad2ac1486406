"""PSNR and SSIM equal scikit-image's (the authors' code, ref §7) on real frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from thead.eval.metrics import images_to_tensor, psnr, ssim, to_signed
from thead.faces.images import to_uint8


def _distortions(frame: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "noise": np.clip(frame + rng.normal(0, 12, frame.shape), 0, 255).astype(np.uint8),
        "blur": np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(2.0))),
        "shift": np.roll(frame, (2, 5), axis=(0, 1)),
        "dark": (frame * 0.6).astype(np.uint8),
    }


def test_psnr_ssim_match_scikit_image_on_distorted_frames(frame):
    fakes = _distortions(frame)
    real_t = images_to_tensor([frame] * len(fakes))
    fake_t = images_to_tensor(list(fakes.values()))
    ours_psnr, ours_ssim = psnr(real_t, fake_t), ssim(real_t, fake_t)
    for i, (name, fake) in enumerate(fakes.items()):
        ref_psnr = peak_signal_noise_ratio(frame, fake)  # uint8 -> data range 255
        # The authors' call: float32 [0, 255], data_range 255, per channel (ref §7).
        ref_ssim = structural_similarity(frame.astype(np.float32), fake.astype(np.float32), data_range=255, channel_axis=-1)
        ref_ssim64 = structural_similarity(frame.astype(np.float64), fake.astype(np.float64), data_range=255, channel_axis=-1)
        assert ours_psnr[i].item() == pytest.approx(ref_psnr, abs=1e-9), name
        assert abs(ours_ssim[i].item() - ref_ssim) < 1e-6, name
        assert abs(ours_ssim[i].item() - ref_ssim64) < 1e-10, name
        assert ours_ssim[i].item() < 0.99, name  # the distortions are real


def test_identical_frames_give_ideal_values(frame):
    t = images_to_tensor([frame, frame[::-1].copy()])
    assert torch.isinf(psnr(t, t)).all() and (psnr(t, t) > 0).all()
    assert torch.allclose(ssim(t, t), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_ssim_is_per_channel_then_averaged(frame):
    fake = frame.copy()
    fake[..., 0] = 255 - fake[..., 0]  # only the red channel changes
    ours = ssim(images_to_tensor([frame]), images_to_tensor([fake])).item()
    red = structural_similarity(frame[..., 0].astype(np.float64), fake[..., 0].astype(np.float64), data_range=255)
    assert ours == pytest.approx((red + 2.0) / 3.0, abs=1e-10)


def test_uint8_mapping_is_the_authors_rounding():
    x = torch.tensor([-1.5, -1.0, -0.00393, 0.0, 0.5, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 127, 128, 191, 255, 255]  # round(127.5 + 127.5x), clipped
    assert torch.allclose(to_signed(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))


def test_shape_mismatch_is_rejected(frame):
    with pytest.raises(ValueError, match="equal"):
        psnr(images_to_tensor([frame]), images_to_tensor([frame, frame]))
