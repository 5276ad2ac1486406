"""Training checkpoints: one folder per saved step, written atomically.

``<run>/checkpoints/step-000001000/``
- ``config.json`` + ``model.safetensors``: the LSR weights in thead's format (so a checkpoint
  loads with ``LSR.from_pretrained`` as it is);
- ``optimizer.safetensors``: every optimizer's Adam moments and iteration count;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states;
- ``state.json``: step, the data position (global examples consumed), counters and configs.

Nothing is pickled. A folder exists only once complete (``atomic_dir``), so the newest one is
always a good one to resume from.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from thead._atomic import atomic_dir
from thead._schema import decode, optional
from thead.config import LSRConfig
from thead.errors import CheckpointError, WeightsError
from thead.model import CONFIG_NAME, WEIGHTS_NAME
from thead.train.config import TrainConfig

CHECKPOINTS = "checkpoints"
STATE_NAME = "state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
RNG_NAME = "rng.safetensors"
STATE_FORMAT = "thead-train-state/1"


@dataclass(frozen=True)
class TrainState:
    """Where a run stands. ``position`` counts global examples drawn from the data stream;
    ``examples`` counts examples trained on including a warm-start's (the release's
    ``train_examples_count``, which the LR schedule follows).

    ``state.json`` is ``{"format": STATE_FORMAT, **asdict(state)}``, read back strictly
    (``thead._schema``): the keys declared ``optional`` may be absent (they read as their
    defaults, as ``TrainState(**raw)`` always allowed), every other is required, and
    ``train_config`` must be a whole ``TrainConfig`` (``TrainConfig.from_dict``)."""

    step: int
    position: int
    examples: int
    world_size: int
    train_config: dict[str, Any]
    skipped_files: int = optional(0)
    init_from: str | None = optional(None)
    start_step: int = optional(0)  # the stage's first step (> 0 after a warm start)
    extra: dict[str, Any] = optional(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state: TrainState
    model_config: LSRConfig
    weights: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    rng: dict[str, Tensor]


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"step-{step:09d}"


def list_checkpoints(run: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = Path(run) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_NAME).exists())


def latest_checkpoint(run: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def save_checkpoint(
    run: str | os.PathLike,
    state: TrainState,
    model_config: LSRConfig,
    weights: dict[str, Tensor],
    optimizer: dict[str, Tensor],
    *,
    keep: int = 3,
) -> Path:
    """Write one checkpoint folder atomically, then drop all but the newest ``keep``."""
    target = checkpoint_dir(Path(run), state.step)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / CONFIG_NAME).write_text(model_config.to_json())
        save_file(_cpu(weights), str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "thead": "lsr"})
        save_file(_cpu(optimizer), str(tmp / OPTIMIZER_NAME))
        save_file(rng_state(), str(tmp / RNG_NAME))
        (tmp / STATE_NAME).write_text(json.dumps({"format": STATE_FORMAT, **asdict(state)}, indent=2, sort_keys=True) + "\n")
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    path = Path(path)
    if not (path / STATE_NAME).exists():
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"{path} is neither a training checkpoint nor a run with checkpoints")
        path = newest
    state = read_state(path / STATE_NAME)
    try:
        config = LSRConfig.from_json((path / CONFIG_NAME).read_text(), source=str(path / CONFIG_NAME))
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG_NAME} is not readable ({e})") from None
    try:
        weights = load_file(str(path / WEIGHTS_NAME))
        optimizer = load_file(str(path / OPTIMIZER_NAME))
        rng = load_file(str(path / RNG_NAME))
    except Exception as e:  # safetensors raises its own types on corrupt files
        raise CheckpointError(f"{path} is not a readable checkpoint ({' '.join(str(e).split())})") from None
    return Checkpoint(path, state, config, weights, optimizer, rng)


def read_state(file: Path) -> TrainState:
    """A checkpoint's ``state.json``, strictly (one-line ``CheckpointError`` naming the key)."""
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{file} is not a readable training state ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{file} is not a thead training state (no \"format\": \"{STATE_FORMAT}\")")
    raw = {k: v for k, v in raw.items() if k != "format"}
    state = decode(TrainState, raw, error=CheckpointError, source=str(file))
    TrainConfig.from_dict(state.train_config, source=str(file), path="train_config")
    return state


def rng_state() -> dict[str, Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(rng: dict[str, Tensor]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])


def _cpu(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def export(run: str | os.PathLike, output: str | os.PathLike) -> Path:
    """A run's newest checkpoint (or a checkpoint folder) -> thead weights at ``output``
    (``config.json`` + ``model.safetensors``, loaded strictly first, so what is written loads
    in every other command)."""
    from thead.model import LSR, load_state_strict

    ckpt = load_checkpoint(run)
    model = LSR(ckpt.model_config)
    load_state_strict(model, ckpt.weights, source=str(ckpt.path))
    return model.save_pretrained(output, overwrite=False)
