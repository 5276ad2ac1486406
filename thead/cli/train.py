"""``thead train layout|meta|export`` and ``thead finetune``: thin wrappers over ``thead.train``.

Distributed runs use torchrun around the same command, e.g.
``torchrun --nproc_per_node 8 $(which thead) train meta --data DIR --init RUN_A --out RUN_B``.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from thead.cli._app import app, err_console, out_console, train_app
from thead.cli._options import BaseWeights, Device
from thead.cli._progress import Bar


class ModelSize(str, enum.Enum):
    default = "default"
    reduced = "reduced"


class VariantChoice(str, enum.Enum):
    latent = "latent"
    learned_segmentation = "learned_segmentation"
    oracle_segmentation = "oracle_segmentation"


Data = Annotated[Path, typer.Option("--data", help="Processed clips (thead prep output or the FSTH layout).")]
Out = Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, log.jsonl, samples/. An existing run resumes.")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Stop after this many steps of the stage (default: the authors' full schedule).")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Examples per process (default: the authors' 4).")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Data loader workers per process.")]
Vgg19 = Annotated[Optional[Path], typer.Option("--vgg19", help="VGG19 weights (Keras .h5 or converted .safetensors); default: download once.")]
VggFace = Annotated[Optional[Path], typer.Option("--vgg-face", help="VGG-Face weights (vgg_face_weights.h5 or .safetensors); default: download once.")]
Index = Annotated[Optional[Path], typer.Option("--index", help="Where the data index is kept (default: DATA/thead-index.npz).")]


def _loss_networks(config, vgg19: Path | None, vgg_face: Path | None):
    from thead.train.stages import default_loss_networks

    return default_loss_networks(config, vgg19, vgg_face, hints=("--vgg19 PATH", "--vgg-face PATH"))


def _check_data(data: Path) -> None:
    """Fail on a missing or empty data folder before any loss network is downloaded."""
    from thead.errors import DatasetError

    if not data.is_dir():
        raise DatasetError(f"data folder {data} does not exist")
    if next(data.rglob("*_rgb.png"), None) is None:
        raise DatasetError(f"no NNNNN_rgb.png frames under {data} (run `thead prep` first)")


def _run(config, data, out, steps, vgg19, vgg_face, index, device, model_size, init=None) -> None:
    from thead.config import LSRConfig
    from thead.train import train

    _check_data(data)
    model_config = None if init is not None else (LSRConfig.reduced() if model_size == ModelSize.reduced else LSRConfig())
    with Bar(f"train {config.stage}") as bar:  # img/s and the first losses beside the count
        result = train(config, data=data, out=out, model_config=model_config, init=init, loss_networks=_loss_networks(config, vgg19, vgg_face), steps=steps, index_path=index, device=device, progress=bar)
    out_console.print(f"step {result.step}: checkpoint {result.checkpoint}" + (f" ({result.skipped_files} unreadable files skipped)" if result.skipped_files else ""))


class _CpuEstimate:
    """The bar, plus one line with the run's expected length once a step has been timed: the
    second (the first CPU step also grows the heap to its peak)."""

    def __init__(self, bar: Bar, started: float):
        self.bar, self.note, self.started, self.last = bar, bar.note, started, started

    def update(self, done: int, total: int | None = None, *, stage: str = "", info: str = "") -> None:
        now = time.perf_counter()
        if total and done == min(2, total):
            step_s = now - self.last
            estimate = now - self.started + step_s * (total - done)
            err_console.print(f"about {estimate / 60:.1f} min on this CPU ({step_s:.1f} s per step)")
        self.last = now
        self.bar.update(done, total, stage=stage, info=info)


def _config(base, batch_size, workers):
    changes = {}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if workers is not None:
        changes["num_workers"] = workers
    return base.replace(**changes)


@train_app.command("layout")
def layout(
    data: Data, out: Out, steps: Steps = None, batch_size: BatchSize = None, workers: Workers = None,
    vgg19: Vgg19 = None, index: Index = None, device: Device = None,
    model_size: Annotated[ModelSize, typer.Option("--model-size", help="Network widths.")] = ModelSize.default,
) -> None:
    """Stage A: pre-train E^l + G^l against the oracle face parsing (needs _segmap_merged.png)."""
    from thead.train.config import layout_pretraining

    _run(_config(layout_pretraining(), batch_size, workers), data, out, steps, vgg19, None, index, device, model_size)


@train_app.command("meta")
def meta(
    data: Data, out: Out,
    init: Annotated[Optional[Path], typer.Option("--init", help="Stage-A run to start from (E^l, G^l, example counter).")] = None,
    variant: Annotated[VariantChoice, typer.Option("--variant", help="Table 2 variant.")] = VariantChoice.latent,
    steps: Steps = None, batch_size: BatchSize = None, workers: Workers = None,
    vgg19: Vgg19 = None, vgg_face: VggFace = None, index: Index = None, device: Device = None,
    model_size: Annotated[ModelSize, typer.Option("--model-size", help="Network widths (ignored with --init).")] = ModelSize.default,
) -> None:
    """Stage B: meta-learning with the full objective (GAN + R1/R2, VGG19, L1, VGG-Face, latents)."""
    from thead.train.config import meta_learning

    _run(_config(meta_learning(variant.value), batch_size, workers), data, out, steps, vgg19, vgg_face, index, device, model_size, init=init)


@train_app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="A run folder (its newest checkpoint) or one checkpoint folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Weights folder to write (config.json + model.safetensors).")],
) -> None:
    """Write a run's weights in thead's format, usable by every other command."""
    from thead.train.checkpoint import export as export_weights

    out_console.print(f"wrote {export_weights(run, output)}")


@app.command("finetune")
def finetune(
    name: Annotated[str, typer.Argument(help="The avatar to fine-tune.")],
    shots: Annotated[Optional[int], typer.Option("--shots", min=1, max=1024, help="K, which sets the step count (default: the avatar's number of shots).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=100_000, help="Steps (default by K: 24/60/100/200/400 for K<4/<8/<16/<32/else).")] = None,
    weights: BaseWeights = None,
    vgg19: Vgg19 = None, vgg_face: VggFace = None, device: Device = None,
) -> None:
    """Stage C: personal G^l, G^s and D for one avatar (latents and encoders frozen); the
    personal weights are stored with the avatar and used by `thead animate` from then on."""
    from thead.avatar import AvatarStore
    from thead.train.config import meta_learning
    from thead.train.finetune import FinetuneOptions, prepare_avatar_finetune

    store = AvatarStore()
    k = shots if shots is not None else store.info(name).num_shots
    job = prepare_avatar_finetune(name, FinetuneOptions(num_shots=k, steps=steps, device=device), weights=weights, store=store)
    n, total = len(job.frames), job.options.total_steps
    on_cpu = job.device.type == "cpu"
    err_console.print(f"fine-tuning {name}: {total} steps on its {n} shot{'s' if n != 1 else ''}" + (" on the CPU; timing the first steps for an estimate" if on_cpu else ""))
    started = time.perf_counter()
    with Bar("finetune") as bar:
        progress = _CpuEstimate(bar, started) if on_cpu else bar
        path = job.run(progress, loss_networks=_loss_networks(meta_learning(), vgg19, vgg_face))
    out_console.print(f"{name}: fine-tuned {total} steps in {time.perf_counter() - started:.0f} s -> {path}")
