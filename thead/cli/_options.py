"""The options several commands share, defined once: each command declares
``weights: Weights = None``, ``device: Device = ...``, ``quiet: Quiet = False``, ...

A command gives the default (from its options dataclass, via ``_defaults.option_defaults``);
the name, short flag, help and choices live here. Nothing here imports torch, so ``thead
--help`` and usage errors stay fast (tests/cli/test_usage.py checks the imports).
"""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from thead.hub import DEFAULT_REPO_ID, WEIGHTS_ENV


class LandmarkChoice(str, enum.Enum):
    """``--landmarks``: auto = FAN when installed and its weights cached, else dlib."""

    auto = "auto"
    dlib = "dlib"
    fan = "fan"


class DTypeChoice(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class MotionChoice(str, enum.Enum):
    relative = "relative"
    absolute = "absolute"


Weights = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        help=f"LSR weights: a local folder or a Hub repo id owner/name or owner/name@revision (default: ${WEIGHTS_ENV}, else the cached model, {DEFAULT_REPO_ID}, or the authors' release, fetched and converted).",
        envvar=WEIGHTS_ENV,
        show_envvar=False,
    ),
]
BaseWeights = Annotated[Optional[str], typer.Option("--weights", help="Base LSR weights (default: the ones the avatar was enrolled with).")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu or cuda (default: cuda when present).")]
CpuDevice = Annotated[str, typer.Option("--device", help="Torch device: cpu, cuda or cuda:N.")]  # where the API's default is cpu
DType = Annotated[DTypeChoice, typer.Option("--dtype", help="fp32; bf16 (~2x faster on AVX512-BF16 CPUs and GPUs); fp16 (CUDA).")]
Landmarks = Annotated[LandmarkChoice, typer.Option("--landmarks", help="Landmark backend: auto (FAN if installed and cached, else dlib).")]
Face = Annotated[int, typer.Option("--face", min=0, help="Which face when there are several: 0 = the largest.")]
CropScale = Annotated[float, typer.Option("--crop-scale", min=0.25, max=4.0, help="Crop side multiplier (>1 shows more background).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes; errors only.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", "-y", help="Replace the output file if it exists.")]
OverwriteAvatar = Annotated[bool, typer.Option("--overwrite", "-y", help="Replace an avatar of the same name (and drop its fine-tuned weights).")]
MaxFrames = Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Stop after this many driver frames.")]
Start = Annotated[float, typer.Option("--start", min=0.0, help="Seconds into the driver (video or motion template) to start at; its audio follows.")]
Duration = Annotated[Optional[float], typer.Option("--duration", min=0.0, help="Seconds of the driver to use (default: to the end).")]
Reference = Annotated[str, typer.Option("--reference", help="Relative motion's neutral driver frame: auto (mouth closed, eyes open, frontal), first, or a frame number.")]
Motion = Annotated[MotionChoice, typer.Option("--motion", help="relative: the avatar keeps its face shape (any driver); absolute: the driver's landmarks as is (self-reenactment).")]
