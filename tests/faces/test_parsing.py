"""The face-parsing oracle: the merge rule on constructed maps, the network's plumbing with
random weights, the label mapping, and the sample files' format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from thead.errors import WeightsError
from thead.faces import load_image
from thead.faces import parsing
from thead.faces.parsing import (
    BISENET_LABELS,
    BISENET_TO_CELEBAMASK,
    CELEBAMASK_LABELS,
    PARSER_WEIGHTS,
    BiSeNet,
    load_face_parser,
    merge_segmaps,
    resize_nearest_cv,
)


def test_label_mapping_follows_the_names():
    assert len(CELEBAMASK_LABELS) == len(BISENET_LABELS) == 19
    assert sorted(BISENET_TO_CELEBAMASK.tolist()) == list(range(19))  # a permutation
    for b, c in enumerate(BISENET_TO_CELEBAMASK):
        assert BISENET_LABELS[b] == CELEBAMASK_LABELS[c]
    # spot checks against ref §1.4's CelebAMask-HQ list
    assert CELEBAMASK_LABELS[13] == "hair" and CELEBAMASK_LABELS[17] == "neck" and CELEBAMASK_LABELS[2] == "nose"
    assert BISENET_TO_CELEBAMASK[BISENET_LABELS.index("hair")] == 13


def test_opencv_nearest_resize():
    src = np.arange(256 * 256, dtype=np.int32).reshape(256, 256)
    out = resize_nearest_cv(src, 224)
    idx = np.floor(np.arange(224) * 256 / 224).astype(int)  # OpenCV: floor(dst * src/dst)
    np.testing.assert_array_equal(out, src[idx][:, idx])
    pil = np.asarray(Image.fromarray(src).resize((224, 224), Image.Resampling.NEAREST))
    assert (pil != out).any()  # PIL samples pixel centres: a different rule, other rows
    np.testing.assert_array_equal(resize_nearest_cv(np.arange(512)[None].repeat(512, 0), 256)[0], np.arange(0, 512, 2))


def test_merge_rule_on_constructed_maps():
    seg256 = np.zeros((256, 256), np.uint8)
    seg512 = np.zeros((512, 512), np.uint8)
    seg256[0:64] = 13  # hair from the 256 pass
    seg256[200:256, :128] = 17  # neck from the 256 pass
    seg256[200:256, 128:] = 18  # cloth from the 256 pass
    seg256[100:150, :] = 1  # skin in the 256 pass: ignored (fine classes come from 512)
    seg512[0:64] = 1  # 512 says skin where 256 says hair (rows 0-31 at 256): fine class wins
    seg512[256:320, :] = 2  # nose at 512 rows 256-319 -> 256 rows 128-159
    seg512[400:512, :] = 4  # l_eye at 512 rows 400-511 -> 256 rows 200-255, under neck/cloth
    seg512[160:200, :] = 13  # hair from the 512 pass is discarded
    seg512[340:360, :] = 0  # background from 512 does not erase anything
    merged = merge_segmaps(seg256, seg512, out_size=256)
    assert merged.dtype == np.uint8 and merged.shape == (256, 256)
    assert (merged[0:32] == 1).all()  # 512 fine class over 256 hair
    assert (merged[32:64] == 13).all()  # hair where 512 has nothing fine
    assert (merged[80:100] == 0).all()  # 512 hair discarded -> background
    assert (merged[100:128] == 0).all()  # 256 skin ignored
    assert (merged[128:160] == 2).all()  # 512 nose
    assert (merged[200:256, :128] == 17).all() and (merged[200:256, 128:] == 18).all()  # neck/cloth last
    out224 = merge_segmaps(seg256, seg512)
    np.testing.assert_array_equal(out224, resize_nearest_cv(merged, 224))


def test_merge_rule_every_class():
    # Each fine class survives from the 512 pass, each 256-only class from the 256 pass.
    for cls in range(19):
        s256 = np.full((256, 256), cls, np.uint8)
        s512 = np.full((512, 512), cls, np.uint8)
        merged = merge_segmaps(s256, s512, 256)
        expected = 0 if cls == 0 else cls
        assert (merged == expected).all(), cls
        only256 = merge_segmaps(s256, np.zeros((512, 512), np.uint8), 256)
        assert (only256 == (cls if cls in (13, 17, 18) else 0)).all(), cls


# zllrunning/face-parsing.PyTorch's 79999_iter.pth, written out from its model.py and resnet.py:
# BiSeNet(n_classes=19) = ContextPath (ResNet-18 trunk, two attention refinement modules,
# three ConvBNReLU heads) + FeatureFusionModule(256, 256) + three BiSeNetOutput heads; the
# unused SpatialPath is not built. Every ConvBNReLU / ResNet conv is bias-free and followed by
# BatchNorm.
def _conv_bn(name: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    out = {f"{name}.conv.weight": (cout, cin, k, k)}
    return out | {f"{name}.bn.{stat}": (cout,) for stat in ("weight", "bias", "running_mean", "running_var")}


def _bn(name: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.{stat}": (c,) for stat in ("weight", "bias", "running_mean", "running_var")}


def bisenet_79999_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the published face-parsing checkpoint (without num_batches_tracked)."""
    r = "cp.resnet."
    shapes = {f"{r}conv1.weight": (64, 3, 7, 7)} | _bn(f"{r}bn1", 64)
    for layer, (cin, cout) in enumerate(((64, 64), (64, 128), (128, 256), (256, 512)), start=1):
        for block in range(2):  # BasicBlock x 2; the first of layers 2-4 downsamples (stride 2)
            b = f"{r}layer{layer}.{block}."
            first_in = cin if block == 0 else cout
            shapes |= {f"{b}conv1.weight": (cout, first_in, 3, 3)} | _bn(f"{b}bn1", cout)
            shapes |= {f"{b}conv2.weight": (cout, cout, 3, 3)} | _bn(f"{b}bn2", cout)
            if block == 0 and layer > 1:
                shapes |= {f"{b}downsample.0.weight": (cout, cin, 1, 1)} | _bn(f"{b}downsample.1", cout)
    for arm, cin in (("arm16", 256), ("arm32", 512)):
        shapes |= _conv_bn(f"cp.{arm}.conv", cin, 128, 3)
        shapes |= {f"cp.{arm}.conv_atten.weight": (128, 128, 1, 1)} | _bn(f"cp.{arm}.bn_atten", 128)
    shapes |= _conv_bn("cp.conv_head32", 128, 128, 3) | _conv_bn("cp.conv_head16", 128, 128, 3)
    shapes |= _conv_bn("cp.conv_avg", 512, 128, 1)
    shapes |= _conv_bn("ffm.convblk", 256, 256, 1)
    shapes |= {"ffm.conv1.weight": (64, 256, 1, 1), "ffm.conv2.weight": (256, 64, 1, 1)}
    for head, cin, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        shapes |= _conv_bn(f"{head}.conv", cin, mid, 3) | {f"{head}.conv_out.weight": (19, mid, 1, 1)}
    return shapes


def test_network_has_the_published_key_and_shape_list(tmp_path):
    published = bisenet_79999_shapes()
    ours = {k: tuple(v.shape) for k, v in BiSeNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == published
    # The published 79999_iter.pth is 53,289,463 bytes: its tensors plus ~37 KB of pickle
    # framing; the list above accounts for all but that framing.
    tensor_bytes = 4 * sum(math.prod(s) for s in published.values())
    assert 0 < PARSER_WEIGHTS.size_bytes - tensor_bytes < 64 * 1024
    # A file in the published layout (num_batches_tracked included, as torch >= 0.4.1 saves
    # BatchNorm) loads, every tensor where its name says.
    torch.manual_seed(0)
    state = {k: torch.randn(s) for k, s in published.items()}
    state |= {k.replace("running_var", "num_batches_tracked"): torch.tensor(0) for k in state if k.endswith("running_var")}
    path = tmp_path / "79999_iter.pth"
    torch.save(state, path)
    parser = load_face_parser(path, sha256=parsing.sha256_file(path))
    for k, v in parser.net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = BiSeNet()
    for m in net.modules():  # non-trivial BN statistics, as in a trained network
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("parser") / "79999_iter.pth"
    torch.save(net.state_dict(), path)
    return path, parsing.sha256_file(path), net


def test_parser_plumbing_with_random_weights(random_weights, processed_pairs):
    path, sha, net = random_weights
    parser = load_face_parser(path, sha256=sha)
    for a, b in zip(parser.net.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    rgb = load_image(processed_pairs[0][0])
    segmap = parser.segmap(rgb)
    # the output format of the authors' _segmap_merged.png files
    theirs = Image.open(str(processed_pairs[0][0]).replace("_rgb", "_segmap_merged"))
    assert theirs.mode == "L" and np.asarray(theirs).max() <= 18
    assert segmap.dtype == np.uint8 and segmap.shape == np.asarray(theirs).shape == (224, 224)
    assert segmap.max() <= 18
    assert Image.fromarray(segmap).mode == "L"


def test_parse_maps_bisenet_labels_to_celebamask(random_weights, monkeypatch):
    path, sha, _ = random_weights
    parser = load_face_parser(path, sha256=sha)

    def fake_forward(x):  # BiSeNet label b wins in column band b
        logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
        for b in range(19):
            logits[:, b, :, b * 10 : (b + 1) * 10] = 1.0
        return logits

    monkeypatch.setattr(parser.net, "forward", fake_forward)
    labels = parser.parse(np.zeros((224, 224, 3), np.uint8), 256)
    for b in range(19):
        assert (labels[:, b * 10 : (b + 1) * 10] == BISENET_TO_CELEBAMASK[b]).all()


def test_wrong_hash_missing_file_and_bad_keys(random_weights, tmp_path, monkeypatch):
    path, sha, net = random_weights
    with pytest.raises(WeightsError, match="sha256"):
        load_face_parser(path)  # the pinned hash is the published file's, not this one
    monkeypatch.setenv(parsing.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    assert not parsing.parser_available()
    with pytest.raises(WeightsError, match="not found"):
        load_face_parser()
    monkeypatch.setenv(parsing.WEIGHTS_ENV, str(path))
    assert parsing.find_parser_weights() == path
    state = net.state_dict()
    state.pop("conv_out.conv_out.weight")
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match="missing.*conv_out.conv_out.weight.*unexpected.*extra.weight"):
        load_face_parser(bad, sha256=parsing.sha256_file(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        load_face_parser(junk, sha256=parsing.sha256_file(junk))


def test_download_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match=r"cannot download.*154JgKpzCPW82qINcVieuPH3fZ2e0P812") as info:
        parsing.download_parser_weights()
    assert "\n" not in str(info.value)
