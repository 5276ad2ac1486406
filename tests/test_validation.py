"""Sizes and values read from files are checked before anything is allocated or built: model
configs (config.json and the shapes of a TF checkpoint's index). Allocation cases run in a
subprocess under a 3 GB address-space limit, so a regression fails instead of eating memory."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from thead.config import MAX_PARAMETERS, EncoderConfig, ImageGeneratorConfig, LSRConfig
from thead.errors import CheckpointError, WeightsError
from thead.model import LSR, count_parameters

LIMIT = 3 << 30


def run_limited(code: str, limit: int = LIMIT) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose address space is capped at ``limit`` bytes."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def _weights_folder(tmp_path, edit) -> str:
    d = LSRConfig.reduced().to_dict()
    d = {"_class_name": "LSR", "format_version": 1, **d}
    edit(d)
    folder = tmp_path / "w"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(d) if not isinstance(d, str) else d)
    (folder / "model.safetensors").write_bytes(b"never read")
    return folder


BAD_CONFIGS = {  # one line: "<file>: <key path>: <what is wrong>"
    "huge nf": (lambda d: d["style_encoder"].update(nf=100000), "style_encoder.nf: must be an integer from 1 to 1024, got 100000"),
    "string": (lambda d: d["image_generator"].update(nf="32"), 'image_generator.nf: expected an int, got "32"'),
    "float": (lambda d: d["discriminator"].update(num_downsamples=2.5), "discriminator.num_downsamples: expected an int, got 2.5"),
    "bool": (lambda d: d["layout_generator"].update(z_dim=True), "layout_generator.z_dim: expected an int, got true"),
    "negative": (lambda d: d["layout_encoder"].update(nf_max=-48), "layout_encoder.nf_max: must be an integer from 1 to 1024, got -48"),
    "null": (lambda d: d["image_generator"].update(seed_size=None), "image_generator.seed_size: expected an int, got null"),
    "zero": (lambda d: d["image_generator"].update(num_classes=0), "image_generator.num_classes: must be an integer from 1 to 256, got 0"),
    "resolution type": (lambda d: d.update(resolution="224"), 'resolution: expected an int, got "224"'),
    "sub-config a list": (lambda d: d.update(discriminator=[1, 2]), "discriminator: expected an object, got [1, 2]"),
    "unknown key": (lambda d: d["image_generator"].update(spade_hiden=3), "image_generator.spade_hiden: unknown key"),
    "missing key": (lambda d: d["layout_generator"].pop("aux_channels"), "layout_generator.aux_channels: missing"),
    "missing sub-config": (lambda d: d.pop("discriminator"), "discriminator: missing"),
    "cross-field rule": (lambda d: d.update(resolution=256), "image generator makes 224px frames, config says resolution 256"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_values_are_one_error_naming_the_file(tmp_path, case):
    edit, message = BAD_CONFIGS[case]
    folder = _weights_folder(tmp_path, edit)
    with pytest.raises(WeightsError) as e:
        LSR.from_pretrained(folder)
    assert str(e.value).startswith(f"{folder / 'config.json'}: {message}") and "\n" not in str(e.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2, 3]", "must hold a JSON object, got a list"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"_class_name": "LSR", "format_version": 1, "a": ' + "{\"b\": " * 5000 + "1" + "}" * 5001, "nested too deeply"),
    ("42", "must hold a JSON object, got a int"),
    ("", "not valid JSON"),
])
def test_config_json_that_is_not_an_object(tmp_path, text, message):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    with pytest.raises(WeightsError, match=message):
        LSR.from_pretrained(folder)


def test_a_config_of_huge_widths_is_refused_by_its_size_before_building():
    from thead.config import LayoutGeneratorConfig

    wide = EncoderConfig(nf=1024, nf_max=1024, num_downsamples=7, z_dim=2048)
    with pytest.raises(WeightsError, match="G parameters"):
        LSRConfig(style_encoder=wide, layout_encoder=wide, layout_generator=LayoutGeneratorConfig(z_dim=2048),
                  image_generator=ImageGeneratorConfig(nf=1024, nf_max=1024, z_dim=2048, spade_hidden=1024))


@pytest.mark.parametrize("variant", ["release", "reduced", "wide", "deep"])
def test_the_size_estimate_bounds_the_real_parameter_count(variant):
    base = LSRConfig.reduced() if variant != "release" else LSRConfig()
    if variant == "wide":
        e = EncoderConfig(nf=64, nf_max=1024)
        base = dataclasses.replace(LSRConfig(), style_encoder=e, layout_encoder=e)
    if variant == "deep":
        e = EncoderConfig(nf=4, nf_max=48, num_downsamples=7, z_dim=64)
        base = dataclasses.replace(base, style_encoder=e, layout_encoder=e)
    with torch.device("meta"):
        real = count_parameters(LSR(base))
    assert real <= base.estimated_parameters() <= 4 * real
    assert LSRConfig().estimated_parameters() < MAX_PARAMETERS


def test_config_with_nf_100000_fails_fast_under_a_memory_limit(tmp_path):
    folder = _weights_folder(tmp_path, lambda d: [d[k].update(nf=100000, nf_max=100000) for k in ("style_encoder", "layout_encoder", "image_generator", "discriminator", "layout_generator")])
    r = run_limited(f"""
        from thead.model import LSR
        from thead.errors import WeightsError
        try:
            LSR.from_pretrained({str(folder)!r})
        except WeightsError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0 and "refused:" in r.stdout and "must be an integer from 1 to 1024" in r.stdout, r.stderr[-2000:]


# -- TF checkpoints: the index's claims are checked against the data before building ----------

@pytest.fixture(scope="module")
def reduced_tensors(parity_dir):
    from thead.convert.bundle import TensorBundle, find_checkpoint_prefix

    bundle = TensorBundle(find_checkpoint_prefix(parity_dir / "ckpt_reduced"))
    return {k: bundle.read(k) for k in bundle.keys() if not k.startswith("_")}


KERNEL = "encoder/blocks/0/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _bundle(tmp_path, tensors, claimed=None):
    from tests.convert.bundle_writer import write_bundle

    d = tmp_path / "ckpt"
    d.mkdir()
    write_bundle(d / "ckpt-1", tensors, claimed)
    return d


def test_index_claiming_large_shapes_fails_under_a_memory_limit(tmp_path, reduced_tensors):
    claimed = {KERNEL: ((7, 7, 6, 3000), 7 * 7 * 6 * 3000 * 4)}
    src = _bundle(tmp_path, reduced_tensors, claimed)
    out = tmp_path / "out"
    r = run_limited(f"""
        import sys
        from thead.cli import main
        sys.exit(main(["weights", "convert", {str(src)!r}, "-o", {str(out)!r}]))
    """)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert "ckpt-1" in lines[0] and ("truncated" in lines[0] or "from 1 to 1024, got 3000" in lines[0])
    assert not out.exists()


def test_a_config_that_downsamples_below_one_pixel_is_refused():
    e = EncoderConfig(nf=4, nf_max=48, num_downsamples=9, z_dim=64)
    with pytest.raises(WeightsError, match="down-samples 224 px 9 times"):
        dataclasses.replace(LSRConfig.reduced(), style_encoder=e)


def test_index_with_a_size_that_disagrees_with_the_shape(tmp_path, reduced_tensors):
    from thead.convert import convert_checkpoint

    src = _bundle(tmp_path, reduced_tensors, {KERNEL: ((7, 7, 6, 3000), 100)})
    with pytest.raises(CheckpointError, match="bytes stored for shape"):
        convert_checkpoint(src, tmp_path / "out")


def test_index_tensor_of_the_wrong_rank(tmp_path, reduced_tensors):
    from thead.convert import convert_checkpoint

    tensors = dict(reduced_tensors)
    tensors[KERNEL] = tensors[KERNEL].reshape(-1)
    src = _bundle(tmp_path, tensors)
    with pytest.raises(CheckpointError, match="unexpected rank.*encoder/blocks/0/kernel has rank 1"):
        convert_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_index_shapes_beyond_the_limits(tmp_path, reduced_tensors):
    from thead.convert import convert_checkpoint

    tensors = dict(reduced_tensors)
    tensors[KERNEL] = np.zeros((7, 7, 6, 2000), np.float32)  # backed by real bytes, but nf 2000 > 1024
    src = _bundle(tmp_path, tensors)
    with pytest.raises(CheckpointError, match="no usable LSR model.*nf: must be an integer from 1 to 1024, got 2000"):
        convert_checkpoint(src, tmp_path / "out")
