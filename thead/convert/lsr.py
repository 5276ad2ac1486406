"""The authors' TF checkpoint -> thead weights (ref §8).

Each network variable is mapped by its object path (ref §8.3-8.4) to a thead parameter; conv
kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in]; biases unchanged. thead's
equalized-LR layers keep TF's raw N(0, 1)-scale kernels and apply ``gain/sqrt(fan_in)`` at run
time exactly as TF does, so no scale is baked in and training dynamics are unchanged. NHWC
flatten/reshape orders are handled in the networks' forward passes, so no rows are permuted.
Optimizer slots and counters are ignored; any other unmapped or missing network variable is an
error.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from thead.config import (
    DiscriminatorConfig,
    EncoderConfig,
    ImageGeneratorConfig,
    LayoutGeneratorConfig,
    LSRConfig,
)
from thead.convert.bundle import TensorBundle, find_checkpoint_prefix
from thead.errors import CheckpointError, WeightsError

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
NETWORK_ROOTS = {
    "encoder": "style_encoder",
    "layout_encoder": "layout_encoder",
    "layout_generator": "layout_generator",
    "generator": "image_generator",
    "discriminator": "discriminator",
}
# Non-network objects of training and pre-training checkpoints (ref §8.2).
IGNORED_ROOTS = {
    "g_optimizer", "d_optimizer", "g_layout_optimizer", "global_step", "epoch",
    "train_examples_count", "training_finished", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH",
}
_W = {"kernel": "weight", "bias": "bias"}


def _even(n: str) -> int:
    # Keras list indices count the parameter-free pooling/upsampling entries too (ref §8.3).
    i = int(n)
    if i % 2 or i == 0:
        raise KeyError(n)
    return i // 2 - 1


# (pattern on the path below the network root, thead name builder)
_RULES: dict[str, list[tuple[re.Pattern, callable]]] = {
    "encoder": [
        (r"blocks/0/(kernel|bias)", lambda m: f"from_rgb.{_W[m[1]]}"),
        (r"blocks/(\d+)/conv_block([01])/layer_with_weights-0/(kernel|bias)", lambda m: f"blocks.{_even(m[1])}.conv{m[2]}.{_W[m[3]]}"),
        (r"blocks/(\d+)/shortcut/layer_with_weights-0/kernel", lambda m: f"blocks.{_even(m[1])}.shortcut.weight"),
        (r"fc_z/(kernel|bias)", lambda m: f"fc_z.{_W[m[1]]}"),
    ],
    "layout_generator": [
        (r"encoder_blocks/(\d+)/blocks/0/(conv0|conv1|conv_shortcut)/(kernel|bias)", lambda m: f"encoder_blocks.{m[1]}.{m[2]}.{_W[m[3]]}"),
        (r"decoder_blocks/(\d+)/resblock_up_fn/(conv0|conv1|conv_shortcut)/(kernel|bias)", lambda m: f"decoder_blocks.{m[1]}.{m[2]}.{_W[m[3]]}"),
        (r"decoder_blocks/(\d+)/resblock_up_fn/(norm[01])/dense/(kernel|bias)", lambda m: f"decoder_blocks.{m[1]}.{m[2]}.dense.{_W[m[3]]}"),
        (r"output_conv/(kernel|bias)", lambda m: f"output_conv.{_W[m[1]]}"),
    ],
    "generator": [
        (r"blocks/0/(kernel|bias)", lambda m: f"fc.{_W[m[1]]}"),
        (r"blocks/(\d+)/(conv_block[01]|shortcut)/spade_norm/(conv0|gamma_conv|beta_conv)/(kernel|bias)", lambda m: f"blocks.{_even(m[1])}.{m[2]}.spade_norm.{m[3]}.{_W[m[4]]}"),
        (r"blocks/(\d+)/(conv_block[01]|shortcut)/conv/(kernel|bias)", lambda m: f"blocks.{_even(m[1])}.{m[2]}.conv.{_W[m[3]]}"),
        (r"to_rgb/(kernel|bias)", lambda m: f"to_rgb.{_W[m[1]]}"),
    ],
    "discriminator": [
        (r"discriminators/0/blocks/0/(kernel|bias)", lambda m: f"from_rgb.{_W[m[1]]}"),
        (r"discriminators/0/blocks/8/(kernel|bias)", lambda m: f"conv_4x4.{_W[m[1]]}"),
        (r"discriminators/0/blocks/10/(kernel|bias)", lambda m: f"dense.{_W[m[1]]}"),
        (r"discriminators/0/blocks/([1-7])/(conv0|conv1|conv_shortcut)/(kernel|bias)", lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}.{_W[m[3]]}"),
        (r"discriminators/0/compute_logits/layer_with_weights-0/(kernel|bias)", lambda m: f"logits.{_W[m[1]]}"),
    ],
}
_RULES["layout_encoder"] = _RULES["encoder"]
_COMPILED = {k: [(re.compile(p + "$"), f) for p, f in v] for k, v in _RULES.items()}


def thead_name(tf_key: str) -> str | None:
    """TF checkpoint key -> thead state-dict key; None for optimizer slots and counters.

    Raises ``CheckpointError`` for a network variable no rule maps, or an unknown root object.
    """
    if "/.OPTIMIZER_SLOT/" in tf_key:
        return None
    path = tf_key.removesuffix(SUFFIX)
    root, _, rest = path.partition("/")
    if root in IGNORED_ROOTS:
        return None
    if root not in NETWORK_ROOTS:
        raise CheckpointError(f"unknown object '{root}' in the checkpoint (key {tf_key})")
    for pattern, build in _COMPILED[root]:
        m = pattern.match(rest)
        if m:
            try:
                return f"{NETWORK_ROOTS[root]}.{build(m)}"
            except KeyError:
                break
    raise CheckpointError(f"unmapped network variable {path}")


def to_torch(tf_value: np.ndarray) -> torch.Tensor:
    """HWIO conv kernels -> OIHW; [in, out] dense kernels -> [out, in]; biases unchanged.

    One copy per tensor (numpy's strided copy of the transposed view; ~2x faster than torch's
    ``permute().contiguous()`` here, benchmarks/convert_bench.py)."""
    a = np.asarray(tf_value)
    order = {4: (3, 2, 0, 1), 2: (1, 0)}.get(a.ndim)
    if order is not None:
        a = a.transpose(order)
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # a writable, contiguous copy


def infer_config(shapes: dict[str, tuple[int, ...]]) -> LSRConfig:
    """Read the architecture flags off the variable shapes (ref §8.4 width rules)."""

    def s(key: str) -> tuple[int, ...]:
        try:
            return shapes[key]
        except KeyError:
            raise CheckpointError(f"missing network variable {key}") from None

    def count(prefix: str, pattern: str) -> list[int]:
        r = re.compile(re.escape(prefix) + pattern)
        return sorted({int(m[1]) for k in shapes if (m := r.match(k))})

    missing_roots = [r for r in NETWORK_ROOTS if not any(k.startswith(r + "/") for k in shapes)]
    if missing_roots:
        if set(missing_roots) == {"encoder", "generator", "discriminator"}:
            raise CheckpointError(
                "this is a layout pre-training checkpoint (only G^l and E^l); convert a meta-learning checkpoint"
            )
        raise CheckpointError(f"checkpoint has no {', '.join(missing_roots)} network")

    def encoder(root: str) -> EncoderConfig:
        blocks = count(root + "/", r"blocks/(\d+)/conv_block1/")
        widths = [s(f"{root}/blocks/{b}/conv_block1/layer_with_weights-0/kernel")[3] for b in blocks]
        return EncoderConfig(
            in_channels=s(f"{root}/blocks/0/kernel")[2],
            nf=s(f"{root}/blocks/0/kernel")[3],
            nf_max=max(widths),
            num_downsamples=len(blocks),
            z_dim=s(f"{root}/fc_z/kernel")[1],
        )

    lg = "layout_generator"
    levels = count(lg + "/", r"encoder_blocks/(\d+)/")
    enc0 = s(f"{lg}/encoder_blocks/0/blocks/0/conv1/kernel")
    lg_widths = [s(f"{lg}/encoder_blocks/{i}/blocks/0/conv1/kernel")[3] for i in levels]
    out = s(f"{lg}/output_conv/kernel")[3]
    g = "generator"
    spade_blocks = count(g + "/", r"blocks/(\d+)/conv_block1/")
    g_widths = [s(f"{g}/blocks/{b}/conv_block1/conv/kernel")[3] for b in spade_blocks]
    seed_ch = s(f"{g}/blocks/{spade_blocks[0]}/conv_block0/conv/kernel")[2]
    num_classes = s(f"{g}/blocks/{spade_blocks[0]}/conv_block0/spade_norm/conv0/kernel")[2]
    seed_size = math.isqrt(s(f"{g}/blocks/0/kernel")[1] // seed_ch)
    d = "discriminator/discriminators/0"
    d_blocks = count(d + "/", r"blocks/(\d+)/conv1/")
    d_widths = [s(f"{d}/blocks/{b}/conv1/kernel")[3] for b in d_blocks]
    return LSRConfig(
        style_encoder=encoder("encoder"),
        layout_encoder=encoder("layout_encoder"),
        layout_generator=LayoutGeneratorConfig(
            in_channels=enc0[2], nf=lg_widths[0] // 2, nf_max=max(lg_widths), num_levels=len(levels),
            z_dim=s(f"{lg}/decoder_blocks/0/resblock_up_fn/norm0/dense/kernel")[0],
            num_classes=num_classes, aux_channels=out - num_classes,
        ),
        image_generator=ImageGeneratorConfig(
            nf=g_widths[-1], nf_max=max(g_widths), num_upsamples=len(spade_blocks) - 1,
            z_dim=s(f"{g}/blocks/0/kernel")[0], num_classes=num_classes,
            spade_hidden=s(f"{g}/blocks/{spade_blocks[0]}/conv_block0/spade_norm/conv0/kernel")[3],
            seed_size=seed_size, out_channels=s(f"{g}/to_rgb/kernel")[3],
        ),
        discriminator=DiscriminatorConfig(
            in_channels=s(f"{d}/blocks/0/kernel")[2], nf=s(f"{d}/blocks/0/kernel")[3],
            nf_max=max(d_widths), num_downsamples=len(d_blocks),
        ),
        resolution=seed_size * 2 ** (len(spade_blocks) - 1),
    )


@dataclass
class ConversionReport:
    """What the converter did: per network (name, tensors, parameters); ignored entry count."""

    source: Path
    config: LSRConfig
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    ignored: int = 0

    @property
    def total_parameters(self) -> int:
        return sum(r[2] for r in self.rows)


def convert_state(bundle: TensorBundle) -> tuple[LSRConfig, dict[str, torch.Tensor], int]:
    """Map every network variable of ``bundle``; returns (config, thead state dict, #ignored)."""
    mapping: dict[str, str] = {}
    ignored = 0
    for key in bundle.keys():
        name = thead_name(key)
        if name is None:
            ignored += 1
        elif name in mapping.values():
            raise CheckpointError(f"two checkpoint variables map to {name}")
        else:
            mapping[key] = name
    for key in mapping:  # every claimed shape is backed by its bytes before anything is built
        bundle.check(key)
    shapes = {k.removesuffix(SUFFIX): bundle.entries[k].shape for k in mapping}
    try:
        config = infer_config(shapes)  # LSRConfig checks its limits and size
    except WeightsError as e:
        raise CheckpointError(f"{bundle.prefix}: the tensor shapes describe no usable LSR model ({e})") from None
    except (IndexError, ValueError, ZeroDivisionError):
        ranks = {k: len(v) for k, v in shapes.items() if k.endswith("/kernel") and len(v) not in (2, 4)}
        detail = f" ({next(iter(ranks))} has rank {next(iter(ranks.values()))})" if ranks else ""
        raise CheckpointError(f"{bundle.prefix}: a network variable has an unexpected rank{detail}") from None
    from thead.model import expected_shapes  # the networks define them

    expected = expected_shapes(config)
    state = {}
    for key, name in mapping.items():
        if name not in expected:
            raise CheckpointError(f"{key.removesuffix(SUFFIX)} maps to {name}, which the inferred architecture lacks")
        tensor = to_torch(bundle.read(key))
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(
                f"{key.removesuffix(SUFFIX)} has shape {list(bundle.entries[key].shape)}, "
                f"which does not fit {name} {list(expected[name])}"
            )
        state[name] = tensor
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{len(missing)} network variables are missing, first: {', '.join(missing[:3])}")
    return config, state, ignored


def convert_checkpoint(src: str | os.PathLike, out: str | os.PathLike) -> ConversionReport:
    """``thead weights convert``: the authors' TF checkpoint at ``src`` -> thead weights in ``out``.

    Nothing is written unless every network variable maps and reads back intact.
    """
    from thead.model import NETWORKS, write_weights

    prefix = find_checkpoint_prefix(src)
    config, state, ignored = convert_state(TensorBundle(prefix))  # every tensor of LSR(config), shape-checked
    write_weights(out, config, state, overwrite=False)
    report = ConversionReport(source=prefix, config=config, ignored=ignored)
    for net in NETWORKS:
        tensors = [v for k, v in state.items() if k.split(".", 1)[0] == net]
        report.rows.append((net, len(tensors), sum(t.numel() for t in tensors)))
    return report
