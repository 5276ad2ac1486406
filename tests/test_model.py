"""The model API and weights format, run for every network (diffusers' common-suite idea)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from thead.config import LSRConfig
from thead.errors import WeightsError
from thead.model import LSR, NETWORKS, RENDER_NETWORKS

CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.fixture(scope="module")
def model() -> LSR:
    torch.manual_seed(0)
    return LSR(LSRConfig.reduced()).eval()


def inputs(seed: int = 1, n: int = 2, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, k, 3, 224, 224, generator=g) * 2 - 1
    contour = torch.rand(1, k, 3, 224, 224, generator=g) * 2 - 1
    target = torch.rand(n, 3, 224, 224, generator=g) * 2 - 1
    return rgb, contour, target


@torch.no_grad()
@pytest.mark.slow
def test_save_load_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path / "w")
    loaded = LSR.from_pretrained(tmp_path / "w")
    for name in NETWORKS:
        a, b = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rgb, contour, target = inputs()
    x, y = model.render(target, model.prepare(model.encode(rgb, contour))), loaded.render(target, loaded.prepare(loaded.encode(rgb, contour)))
    assert torch.equal(x.image, y.image)
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert cfg["_class_name"] == "LSR" and cfg["format_version"] == 1 and list(cfg) == sorted(cfg)


@torch.no_grad()
@pytest.mark.slow
def test_outputs_are_deterministic_and_shaped(model):
    rgb, contour, target = inputs()
    lat = model.encode(rgb, contour)
    assert lat.z_style.shape == lat.z_layout.shape == (1, 64)
    a = model.render(target, model.prepare(lat))
    b = model.render(target, model.prepare(model.encode(rgb, contour)))
    assert torch.equal(a.image, b.image)
    assert a.image.shape == (2, 3, 224, 224) and a.layout_logits.shape == (2, 19, 224, 224)
    assert a.aux_rgb.shape == (2, 3, 224, 224)
    torch.testing.assert_close(a.layout.sum(1), torch.ones(2, 224, 224))
    fmaps = model.discriminator(a.image, target)
    assert [tuple(f.shape[1:]) for f in fmaps][-1] == (1, 1, 1)


@torch.no_grad()
def test_latents_are_the_mean_over_shots(model):
    rgb, contour, _ = inputs(k=3)
    x = torch.cat([rgb, contour], 2)[0]
    lat = model.encode(rgb, contour)
    torch.testing.assert_close(lat.z_style[0], model.style_encoder(x).mean(0))
    torch.testing.assert_close(lat.z_layout[0], model.layout_encoder(x).mean(0))


@torch.no_grad()
@pytest.mark.slow
def test_batched_render_equals_frame_by_frame(model):
    rgb, contour, target = inputs(n=3)
    state = model.prepare(model.encode(rgb, contour))
    whole = model.render(target, state).image
    one = torch.cat([model.render(target[i : i + 1], state).image for i in range(3)])
    torch.testing.assert_close(whole, one, rtol=0, atol=1e-5 * one.abs().max().item())


@torch.no_grad()
@pytest.mark.slow
def test_inference_preparation_keeps_outputs(model, tmp_path):
    rgb, contour, target = inputs()
    ref = model.render(target, model.prepare(model.encode(rgb, contour))).image
    model.save_pretrained(tmp_path / "w")
    fast = LSR.from_pretrained(tmp_path / "w").for_inference_()
    out = fast.render(target.contiguous(memory_format=torch.channels_last), fast.prepare(fast.encode(rgb, contour))).image
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4 * ref.abs().max().item())
    with pytest.raises(WeightsError, match="prepared for inference"):
        fast.save_pretrained(tmp_path / "again")


@pytest.mark.slow
def test_training_mode_gradients_flow_to_every_network(model):
    m = LSR(LSRConfig.reduced())
    rgb, contour, target = inputs(n=1, k=2)
    lat = m.encode(rgb, contour)
    out = m(target, lat)
    loss = out.image.abs().mean() + m.discriminator(out.image, target)[-1].mean()
    loss.backward()
    for name in NETWORKS:
        grads = [p.grad for p in getattr(m, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("device", ["cpu", *CUDA])
@torch.no_grad()
def test_runs_on_device(model, device, tmp_path):
    model.save_pretrained(tmp_path / "w")
    m = LSR.from_pretrained(tmp_path / "w", device=device)
    rgb, contour, target = (t.to(device) for t in inputs(n=1, k=1))
    out = m.render(target, m.prepare(m.encode(rgb, contour)))
    assert out.image.device.type == device and torch.isfinite(out.image).all()


# -- strict loading --------------------------------------------------------------------------

def test_missing_unexpected_and_misshaped_tensors_are_refused(model, tmp_path):
    model.save_pretrained(tmp_path / "w")
    path = tmp_path / "w" / "model.safetensors"
    state = load_file(str(path))
    key = "image_generator.to_rgb.weight"

    def attempt(st, pattern):
        save_file(st, str(path))
        with pytest.raises(WeightsError, match=pattern):
            LSR.from_pretrained(tmp_path / "w")

    attempt({k: v for k, v in state.items() if k != key}, f"missing, first: {key}")
    attempt({**state, "image_generator.extra": torch.zeros(1)}, "unexpected tensors, first: image_generator.extra")
    attempt({**state, key: torch.zeros(3, 4, 1, 1)}, f"{key} has shape")
    path.write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        LSR.from_pretrained(tmp_path / "w")


def test_config_json_is_strict(tmp_path):
    text = LSRConfig.reduced().to_json()
    assert LSRConfig.from_json(text) == LSRConfig.reduced()
    d = json.loads(text)
    d["image_generator"]["spade_hiden"] = 3
    with pytest.raises(WeightsError, match="^image_generator.spade_hiden: unknown key"):
        LSRConfig.from_json(json.dumps(d))
    d = json.loads(text)
    del d["discriminator"]
    with pytest.raises(WeightsError, match="^discriminator: missing$"):
        LSRConfig.from_json(json.dumps(d))
    with pytest.raises(WeightsError, match="not valid JSON"):
        LSRConfig.from_json("{")


def test_render_only_subset_loads_without_encoders_and_discriminator(model, tmp_path):
    model.save_pretrained(tmp_path / "w")
    m = LSR.from_pretrained(tmp_path / "w", networks=RENDER_NETWORKS)
    assert m.discriminator is None and m.style_encoder is None and m.layout_encoder is None
    rgb, contour, target = inputs(n=1)
    lat = model.encode(rgb, contour)
    with torch.no_grad():
        torch.testing.assert_close(m.render(target, m.prepare(lat)).image, model.render(target, model.prepare(lat)).image)


@torch.no_grad()
def test_per_shot_latents_average_to_the_avatar_latents(model):
    rgb, contour, _ = inputs(n=3)
    per_shot = model.encode_shots(rgb, contour)
    assert per_shot.z_style.shape[:2] == rgb.shape[:2] and per_shot.z_layout.shape[:2] == rgb.shape[:2]
    # Shot j alone encodes to per-shot entry j: no mixing across shots or examples.
    alone = model.encode(rgb[:, 1:2], contour[:, 1:2])
    torch.testing.assert_close(per_shot.z_style[:, 1], alone.z_style)
    torch.testing.assert_close(per_shot.z_layout[:, 1], alone.z_layout)
    assert not torch.allclose(per_shot.z_style[:, 0], per_shot.z_style[:, 1])  # distinct shots, distinct latents
    averaged = model.encode(rgb, contour)
    torch.testing.assert_close(per_shot.mean_over_shots().z_style, averaged.z_style)
    torch.testing.assert_close(per_shot.mean_over_shots().z_layout, averaged.z_layout)
