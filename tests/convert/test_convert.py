"""The TF-free checkpoint reader and the authors' checkpoint -> thead weights converter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.convert.bundle_writer import write_bundle
from thead.config import LSRConfig
from thead.convert import TensorBundle, convert_checkpoint, find_checkpoint_prefix, thead_name
from thead.convert.lsr import SUFFIX, infer_config, to_torch
from thead.errors import CheckpointError
from thead.model import LSR, NETWORKS, count_parameters


def read_variables_section(variables_txt: Path, title: str) -> dict[str, tuple[int, ...]]:
    """One section of shared/parity/variables.txt -> {checkpoint key: shape}."""
    out, inside = {}, False
    for line in variables_txt.read_text().splitlines():
        if line.startswith("## SECTION"):
            inside = title in line
            continue
        if inside and line and not line.startswith(("#", "=")):
            key, shape = line.split("\t")[:2]
            out[key] = tuple(json.loads(shape))
    assert out, f"section {title!r} not found"
    return out


@pytest.mark.parametrize(
    "title, config",
    [("two_step_syn : FULL", LSRConfig()), ("two_step_syn : REDUCED", LSRConfig.reduced())],
    ids=["full", "reduced"],
)
def test_every_variable_of_the_authors_list_maps_one_to_one(parity_dir, title, config):
    entries = read_variables_section(parity_dir / "variables.txt", title)
    mapped = {}
    for key, shape in entries.items():
        name = thead_name(key)
        if name is not None:
            assert name not in mapped, f"{key} and another variable both map to {name}"
            mapped[name] = (key, shape)
    shapes = {mapped[n][0].removesuffix(SUFFIX): mapped[n][1] for n in mapped}
    assert infer_config(shapes) == config
    model = LSR(config)
    own = model.state_dict()
    assert set(mapped) == set(own), f"left over: {set(mapped) ^ set(own)}"
    for name, (key, shape) in mapped.items():
        converted = to_torch(np.zeros(shape, np.float32)).shape
        assert tuple(converted) == tuple(own[name].shape), f"{key} {shape} vs {name} {tuple(own[name].shape)}"
    assert len(mapped) == 302 and len(entries) - len(mapped) == 618  # 604 Adam slots + 14 others


def test_default_config_parameter_counts_match_the_release():
    model = LSR(LSRConfig())
    counts = {n: count_parameters(getattr(model, n)) for n in NETWORKS}
    assert counts == {
        "style_encoder": 14_334_080, "layout_encoder": 14_334_080, "layout_generator": 20_246_698,
        "image_generator": 30_144_483, "discriminator": 19_044_481,
    }


def test_pretraining_checkpoint_is_refused_with_a_reason(parity_dir):
    entries = read_variables_section(parity_dir / "variables.txt", "pretrain_layout : REDUCED")
    shapes = {k.removesuffix(SUFFIX): v for k, v in entries.items() if thead_name(k)}
    with pytest.raises(CheckpointError, match="pre-training checkpoint"):
        infer_config(shapes)


def test_reader_reads_every_tensor_of_the_parity_checkpoint(parity_dir):
    bundle = TensorBundle(find_checkpoint_prefix(parity_dir / "ckpt_reduced"))
    assert len(bundle.keys()) == 920 and bundle.num_shards == 1
    kernel = bundle.read("generator/to_rgb/kernel" + SUFFIX)
    assert kernel.shape == (3, 3, 4, 3) and kernel.dtype == np.float32
    assert bundle.read("global_step" + SUFFIX).dtype == np.int64


def test_converted_weights_equal_the_checkpoint_tensors(parity_dir, parity_weights):
    bundle = TensorBundle(find_checkpoint_prefix(parity_dir / "ckpt_reduced"))
    model = LSR.from_pretrained(parity_weights)
    state = model.state_dict()
    # conv: HWIO -> OIHW; dense: [in, out] -> [out, in]; spot-check one of each, bit-exact
    k = bundle.read("layout_generator/decoder_blocks/1/resblock_up_fn/conv0/kernel" + SUFFIX)
    assert torch.equal(state["layout_generator.decoder_blocks.1.conv0.weight"], torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))
    d = bundle.read("discriminator/discriminators/0/blocks/10/kernel" + SUFFIX)
    assert torch.equal(state["discriminator.dense.weight"], torch.from_numpy(d.T.copy()))
    assert model.config == LSRConfig.reduced()


def test_convert_writes_a_loadable_folder_and_refuses_to_overwrite(parity_dir, tmp_path):
    out = tmp_path / "w"
    report = convert_checkpoint(parity_dir / "ckpt_reduced" / "ckpt-0.index", out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert report.total_parameters == 1_147_762 and report.ignored == 618
    with pytest.raises(Exception, match="already exists"):
        convert_checkpoint(parity_dir / "ckpt_reduced", out)


# -- damaged checkpoints: one clear error, nothing written ------------------------------------

@pytest.fixture
def ckpt_copy(parity_dir, tmp_path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(parity_dir / "ckpt_reduced", d)
    for f in d.iterdir():
        f.chmod(0o644)
    return d


def _convert_fails(src: Path, tmp_path: Path, pattern: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=pattern):
        convert_checkpoint(src, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary folder left behind"


def test_corrupted_data_byte(ckpt_copy, tmp_path):
    bundle = TensorBundle(ckpt_copy / "ckpt-0")
    e = bundle.entries["layout_generator/output_conv/kernel" + SUFFIX]
    data = ckpt_copy / "ckpt-0.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[e.offset + 5] ^= 0xFF
    data.write_bytes(bytes(raw))
    _convert_fails(ckpt_copy, tmp_path, re.escape("layout_generator/output_conv/kernel") + ".*crc32c")


def test_truncated_index(ckpt_copy, tmp_path):
    index = ckpt_copy / "ckpt-0.index"
    index.write_bytes(index.read_bytes()[:-100])
    _convert_fails(ckpt_copy, tmp_path, "truncated")


def test_missing_shard(ckpt_copy, tmp_path):
    (ckpt_copy / "ckpt-0.data-00000-of-00001").unlink()
    _convert_fails(ckpt_copy, tmp_path, "shard .* is missing")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"\x89PNG")
    _convert_fails(tmp_path / "photos", tmp_path, "not a TF checkpoint")
    _convert_fails(tmp_path / "nowhere", tmp_path, "does not exist")


def test_tensor_of_the_wrong_shape(parity_dir, tmp_path):
    bundle = TensorBundle(find_checkpoint_prefix(parity_dir / "ckpt_reduced"))
    tensors = {k: bundle.read(k) for k in bundle.keys() if not k.startswith("_")}
    key = "generator/blocks/4/conv_block1/conv/kernel" + SUFFIX
    tensors[key] = np.zeros((3, 3, 48, 40), np.float32)
    (tmp_path / "bad").mkdir()
    write_bundle(tmp_path / "bad" / "ckpt-7", tensors)
    _convert_fails(tmp_path / "bad", tmp_path, re.escape("generator/blocks/4/conv_block1/conv/kernel") + ".*shape")


def test_written_bundle_round_trips(parity_dir, tmp_path):
    """The test writer is a faithful bundle (so the shape test above fails for the right reason)."""
    bundle = TensorBundle(find_checkpoint_prefix(parity_dir / "ckpt_reduced"))
    tensors = {k: bundle.read(k) for k in bundle.keys() if not k.startswith("_")}
    (tmp_path / "ok").mkdir()
    write_bundle(tmp_path / "ok" / "ckpt-3", tensors)
    report = convert_checkpoint(tmp_path / "ok", tmp_path / "w")
    assert report.config == LSRConfig.reduced()


def test_unmapped_network_variable_is_an_error():
    with pytest.raises(CheckpointError, match="unmapped network variable generator/extra_layer/kernel"):
        thead_name("generator/extra_layer/kernel" + SUFFIX)
    with pytest.raises(CheckpointError, match="unknown object"):
        thead_name("ema_generator/blocks/0/kernel" + SUFFIX)
    assert thead_name("generator/blocks/0/kernel/.OPTIMIZER_SLOT/g_optimizer/m" + SUFFIX) is None
