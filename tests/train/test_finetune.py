"""Stage C on the real sample identity: fine-tuning improves held-out frames (ref §5.5)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.train.helpers import tiny_loss_networks
from thead.errors import UsageError
from thead.model import LSR
from thead.train import FinetuneOptions, finetune
from thead.train.data import read_rgb


def _frames(folder, indices):
    rgb = torch.stack([read_rgb(folder / f"{i:05d}_rgb.png", 224) for i in indices])
    contour = torch.stack([read_rgb(folder / f"{i:05d}_contour.png", 224) for i in indices])
    return rgb, contour


def _psnr(model: LSR, latents, rgb, contour) -> float:
    with torch.no_grad():
        fake = model.render(contour, model.prepare(latents)).image
    to8 = lambda x: torch.round(127.5 + 127.5 * x.clamp(-1, 1)).double()  # noqa: E731 - as the eval protocol saves
    mse = (to8(fake) - to8(rgb)).square().flatten(1).mean(1)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


@pytest.mark.slow
def test_finetune_improves_psnr_on_held_out_test_frames(parity_weights, sample_dir, recorder):
    """Starts from the authors' reduced parity checkpoint converted to thead weights (random
    TF initialisation, not meta-learned). Enrolled with K=1 from id00017's `train` frames, the
    release's schedule (24 steps) on all 32 train frames; PSNR on the held-out `test` frames."""
    model = LSR.from_pretrained(parity_weights)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    root = sample_dir / "fsth_eval_subset_processed"
    train_rgb, train_contour = _frames(root / "train/id00017/OLguY5ofUrY/combined", range(32))
    test_rgb, test_contour = _frames(root / "test/id00017/OLguY5ofUrY/combined", range(0, 32, 4))
    with torch.no_grad():
        latents = model.encode(train_rgb[None, :1], train_contour[None, :1])  # K=1: linspace -> frame 0
    before = _psnr(model, latents, test_rgb, test_contour)

    personal = finetune(model, latents, train_rgb, train_contour, FinetuneOptions(num_shots=1), recorder, loss_networks=tiny_loss_networks())
    assert recorder.counts("finetune") == list(range(1, 25)) and {u[1] for u in recorder.updates} == {24}
    assert {k.split(".")[0] for k in personal} == {"layout_generator", "image_generator", "discriminator"}
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())  # the model itself is untouched

    model.load_state_dict(personal, strict=False)
    after = _psnr(model, latents, test_rgb, test_contour)
    assert after > before + 1.5, (before, after)  # measured here: 7.8 -> 10.4 dB
    for name in ("style_encoder", "layout_encoder"):  # encoders frozen
        assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items() if k.startswith(name))


def test_finetune_checks_its_inputs(parity_weights):
    model = LSR.from_pretrained(parity_weights)
    z = model.encode(torch.zeros(2, 1, 3, 224, 224), torch.zeros(2, 1, 3, 224, 224))
    frames = torch.zeros(3, 3, 224, 224)
    with pytest.raises(UsageError, match="one avatar"):
        finetune(model, z, frames, frames, loss_networks=tiny_loss_networks())
    with pytest.raises(UsageError, match="must both be"):
        finetune(model, z, frames, frames[:, :, :100], loss_networks=tiny_loss_networks())


def test_finetune_avatar_stores_personal_weights_for_its_base_weights(parity_weights, sample_dir, tmp_path, recorder):
    """``finetune_avatar``, what ``thead ui``'s Fine-tune tab calls: the avatar's shots as
    targets, the result saved beside it and made from the weights it was enrolled with."""
    from thead.avatar import AvatarStore
    from thead.enroll import EnrollOptions, enroll
    from thead.errors import AvatarError
    from thead.train import finetune_avatar

    store = AvatarStore(tmp_path)
    enroll(sample_dir / "fsth_eval_subset" / "train" / "id00017" / "OLguY5ofUrY" / "combined", "alice", EnrollOptions(num_shots=2, landmarks="dlib", device="cpu"), weights=parity_weights, store=store)
    path = finetune_avatar("alice", FinetuneOptions(steps=2, device="cpu"), store=store, loss_networks=tiny_loss_networks(),
                           progress=recorder)
    assert path == store.finetuned_path("alice") and [u[:3] for u in recorder.updates] == [(1, 2, "finetune"), (2, 2, "finetune")]
    assert all(re.fullmatch(r"\w+ -?\d+\.\d{3}(, \w+ -?\d+\.\d{3}){0,3}", u[3]) for u in recorder.updates)  # up to 4 losses as the info
    personal = store.load_finetuned("alice")
    assert personal.base_weights_sha256 == LSR.from_pretrained(parity_weights).weights_sha256
    with pytest.raises(AvatarError):
        finetune_avatar("bob", store=store, loss_networks=tiny_loss_networks())
