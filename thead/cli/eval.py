"""``thead eval``: the paper's protocol and tables (ref §7), or scores for another method's frames."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from thead.cli._app import app, err_console, out_console
from thead.cli._defaults import option_defaults
from thead.cli._options import CpuDevice, LandmarkChoice, Landmarks, Weights
from thead.cli._progress import Bar
from thead.errors import UsageError

_D = option_defaults("thead.eval.options", "EvalOptions")  # the defaults, shown by --help


class IdModelChoice(str, enum.Enum):
    vggface = "vggface"
    dlib = "dlib"


class NMKEChoice(str, enum.Enum):
    eye_centers = "eye_centers"
    outer_eye_corners = "outer_eye_corners"


def _csv(text: str, what: str, cast=str) -> tuple:
    try:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--{what} takes a comma-separated list, got {text!r}") from None


@app.command("eval")
def eval_command(
    testset: Annotated[str, typer.Option("--testset", help="FSTH-layout folder (train/, test/), or 'voxceleb' ($THEAD_VOXCELEB_FSTH, else the authors' evaluation subset, downloaded once).")],
    weights: Weights = None,
    shots: Annotated[str, typer.Option("--shots", help="Values of K, comma-separated.")] = ",".join(map(str, _D.shots)),
    finetune: Annotated[bool, typer.Option("--finetune", help="Also score fine-tuned models (stage C).")] = _D.finetune,
    id_model: Annotated[IdModelChoice, typer.Option("--id-model", help="ID-SIM embedding: VGG-Face fc8 (the paper's) or dlib (offline).")] = IdModelChoice(_D.id_model),
    outputs: Annotated[Optional[Path], typer.Option("--outputs", help="Score frames of another method: DIR/<person>/<run>/000NN.png, or 'authors' (the precomputed outputs in the authors' evaluation subset).")] = None,
    report_dir: Annotated[Path, typer.Option("-o", "--output", help="Report folder (also caches generated frames).")] = _D.output_dir,
    people: Annotated[str, typer.Option("--people", help="Only these persons, comma-separated (default: all).")] = ",".join(_D.people),
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Test frames per person (default: all).")] = _D.max_frames,
    detector: Landmarks = LandmarkChoice(_D.detector),  # for the contour drawings and NMKE
    nmke: Annotated[NMKEChoice, typer.Option("--nmke", help="NMKE normaliser: Bi-layer's eye centres or LPD's outer eye corners.")] = NMKEChoice(_D.nmke_normalization),
    device: CpuDevice = _D.device,
    download: Annotated[bool, typer.Option("--download/--no-download", help="Fetch missing metric weights from their publishers.")] = _D.allow_download,
) -> None:
    """Evaluate LSR on the few-shot test set (PSNR, SSIM, LPIPS, ID-SIM, NMKE, FID) and write
    table.txt, report.json, report.csv and metrics_vs_shots.png."""
    from thead.eval import evaluate, write_report
    from thead.eval.options import EvalOptions
    from thead.eval.report import results_table

    options = EvalOptions(
        shots=_csv(shots, "shots", int), finetune=finetune, id_model=id_model.value, output_dir=report_dir,
        people=_csv(people, "people"), max_frames=max_frames, detector=detector.value,
        nmke_normalization=nmke.value, device=device, allow_download=download,
    )
    if outputs is not None and str(outputs) == "authors" and not outputs.exists():
        from thead.release import authors_outputs

        outputs = authors_outputs()
    with Bar("eval") as bar:
        result = evaluate(testset, weights, options, outputs=outputs, progress=bar)
    files = write_report(result, report_dir)
    out_console.print(results_table(result))
    for note in result.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    out_console.print(f"report: {files.table.parent}", highlight=False)
