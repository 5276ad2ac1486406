"""The model lifecycle (thead/renderer.py): the weights record made once by from_pretrained, one
call that makes the inference renderer, one compatibility check, one personal-weights rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from thead.avatar import AvatarStore, PersonalWeights
from thead.errors import AvatarError, UsageError
from thead.faces.images import load_image, to_tensor, to_uint8
from thead.model import LSR, RENDER_NETWORKS, WeightsRecord
from thead.renderer import Renderer, check_compatible, choose_personal, load_avatar_model

TEST_17 = "fsth_eval_subset_processed/test/id00017/OLguY5ofUrY/combined"


@pytest.fixture(scope="module")
def model(parity_model):
    return parity_model


@pytest.fixture(scope="module")
def store(avatar_store):
    return avatar_store


@pytest.fixture(scope="module")
def contours(sample_dir):
    folder = sample_dir / TEST_17
    return torch.stack([to_tensor(load_image(folder / f"{i:05d}_contour.png")) for i in (0, 1, 2)])


def _personal(model, scale=0.05, base=None):
    g = torch.Generator().manual_seed(0)
    state = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items() if k.startswith(RENDER_NETWORKS)}
    return PersonalWeights(state=state, base_weights_sha256=base if base is not None else model.weights_sha256, created="")


def test_from_pretrained_records_the_weights_once(model, parity_weights):
    from thead._hash import sha256_file

    rec = model.weights
    assert isinstance(rec, WeightsRecord)
    assert rec.folder == parity_weights and rec.spec == str(parity_weights)
    assert rec.sha256 == sha256_file(parity_weights / "model.safetensors") == model.weights_sha256
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.sha256 = "00"  # type: ignore[misc]
    assert LSR(model.config).weights is None and LSR(model.config).weights_sha256 is None


def test_renderer_copy_leaves_the_model_and_renders_as_the_model(model, store, contours):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    avatar = store.load("p17")
    r = Renderer.for_avatar(model, avatar, device="cpu")
    # the caller's model is untouched and still trainable; the renderer's copy is prepared
    assert not model.inference_only and r.model.inference_only and r.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert r.weights == model.weights and r.model.weights == model.weights
    assert not r.finetuned and not r.personal_skipped and r.batch == 2
    # the same numbers as the reference (unprepared) path, and uint8 frames by the one conversion
    with torch.inference_mode():
        ref = model.render(contours, model.prepare(avatar.latents)).image
    out = r.render(contours).image
    assert (out - ref).abs().max().item() < 1e-3 * ref.abs().max().item()  # the chain: see tests/nn/test_parity.py
    frames = r.frames(contours)
    assert frames.dtype == np.uint8 and frames.shape == (3, 224, 224, 3)
    assert np.array_equal(frames, to_uint8(out).permute(0, 2, 3, 1).numpy())


def test_renderer_in_place_and_for_other_latents(parity_weights, store, contours):
    avatar = store.load("p17")
    own = LSR.from_pretrained(parity_weights)
    r = Renderer.for_avatar(own, avatar, device="cpu", copy=False)
    assert r.model is own and own.inference_only and own.weights_sha256 == avatar.info.weights_sha256
    half = dataclasses.replace(avatar.latents, z_style=avatar.latents.z_style * 0.5)
    other = r.with_latents(half)
    assert other.model is r.model
    fresh = Renderer.build(LSR.from_pretrained(parity_weights), half, device="cpu")
    assert torch.equal(other.render(contours).image, fresh.render(contours).image)
    assert not torch.equal(other.render(contours).image, r.render(contours).image)


def test_personal_weights_one_rule(model, store, contours):
    avatar = store.load("p17")
    base = Renderer.for_avatar(model, avatar, device="cpu").render(contours).image
    mine = _personal(model)
    tuned = Renderer.for_avatar(model, avatar, personal=mine, device="cpu")
    assert tuned.finetuned and not tuned.personal_skipped
    assert not torch.allclose(tuned.render(contours).image, base)
    unwanted = Renderer.for_avatar(model, avatar, personal=mine, use_personal=False, device="cpu")
    assert not unwanted.finetuned and not unwanted.personal_skipped
    assert torch.equal(unwanted.render(contours).image, base)
    theirs = _personal(model, base="ff" * 32)
    skipped = Renderer.for_avatar(model, avatar, personal=theirs, device="cpu")
    assert not skipped.finetuned and skipped.personal_skipped
    assert torch.equal(skipped.render(contours).image, base)
    assert choose_personal(model.weights, mine) == (mine, False)
    assert choose_personal(model.weights, theirs) == (None, True)
    assert choose_personal(None, None) == (None, False)


def test_load_from_the_store_matches_for_avatar(model, store, parity_weights, contours):
    store.save_finetuned("p17", _personal(model).state)
    try:
        loaded = Renderer.load("p17", store=store, weights=parity_weights, device="cpu")
        assert loaded.finetuned and loaded.model.layout_encoder is None  # only G^l and G^s loaded
        direct = Renderer.for_avatar(model, store.load("p17"), personal=store.load_finetuned("p17"), device="cpu")
        assert torch.equal(loaded.render(contours).image, direct.render(contours).image)
        plain = Renderer.load("p17", store=store, weights=parity_weights, device="cpu", finetuned=False)
        assert not plain.finetuned
    finally:
        store.finetuned_path("p17").unlink()


def test_one_compatibility_check_for_render_and_finetune(model, store, tmp_path):
    from thead.train.finetune import prepare_avatar_finetune

    avatar = store.load("p17")
    stranger = dataclasses.replace(avatar, info=dataclasses.replace(avatar.info, name="other", weights_sha256="00" * 32))
    with pytest.raises(AvatarError, match="enrolled with other weights"):
        check_compatible(model, stranger)
    with pytest.raises(AvatarError, match="enrolled with other weights"):
        Renderer.for_avatar(model, stranger, device="cpu")
    other_store = AvatarStore(tmp_path)
    other_store.save(stranger)
    with pytest.raises(AvatarError, match="enrolled with other weights"):
        load_avatar_model(stranger, model.weights.folder)
    with pytest.raises(AvatarError, match="enrolled with other weights"):
        prepare_avatar_finetune("other", weights=str(model.weights.folder), store=other_store)


def test_bad_settings_are_one_line(model, store):
    avatar = store.load("p17")
    with pytest.raises(UsageError, match="fp16 needs a CUDA GPU"):
        Renderer.for_avatar(model, avatar, device="cpu", dtype="fp16")
    with pytest.raises(UsageError, match="unknown dtype"):
        Renderer.for_avatar(model, avatar, device="cpu", dtype="fp64")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown device"):
        Renderer.for_avatar(model, avatar, device="tpu")
    with pytest.raises(UsageError, match="one avatar's latents"):
        Renderer.build(model, dataclasses.replace(avatar.latents, z_style=avatar.latents.z_style.repeat(2, 1)), device="cpu")
    prepared = Renderer.for_avatar(model, avatar, device="cpu").model
    with pytest.raises(UsageError, match="already prepared"):
        Renderer.build(prepared, avatar.latents, personal=_personal(model), device="cpu")


def test_the_layout_reaches_g_s_channels_last(model, store, contours):
    """G^l's softmax returns NCHW memory; the render path hands G^s a channels-last layout (its
    convolutions then stay on oneDNN's NHWC kernels instead of re-laying it out per call)."""
    r = Renderer.for_avatar(model, store.load("p17"), device="cpu")
    seen = []
    hook = r.model.image_generator.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        r.render(contours[:1])
    finally:
        hook.remove()
    layout = seen[0]
    assert layout.shape == (1, 19, 224, 224) and layout.is_contiguous(memory_format=torch.channels_last)
