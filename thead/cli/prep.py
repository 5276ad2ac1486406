"""``thead prep``: raw clips or frame folders -> the authors' processed training layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thead.cli._app import app, err_console
from thead.cli._defaults import option_defaults
from thead.cli._options import CpuDevice, LandmarkChoice, Landmarks
from thead.cli._progress import Bar

_DEFAULTS = option_defaults("thead.prep", "PrepOptions")  # shown by --help, read without importing


@app.command("prep")
def prep_command(
    src: Annotated[Path, typer.Argument(help="<person>/<video>/<clip>.mp4 tree, or frame folders.")],
    out: Annotated[Path, typer.Argument(help="Output root for .../NNNNN_{rgb,contour,segmap_merged}.png.")],
    mode: Annotated[str, typer.Option(help="videos (k frames per clip) or images (every frame).")] = _DEFAULTS.mode,
    k: Annotated[int, typer.Option("--k", help="Frames kept per clip: i mod (n//k+1) == 0.")] = _DEFAULTS.k,
    workers: Annotated[int, typer.Option(help="Clips prepared in parallel processes.")] = _DEFAULTS.workers,
    landmarks: Landmarks = LandmarkChoice(_DEFAULTS.landmarks),
    segmaps: Annotated[
        bool, typer.Option("--segmaps/--no-segmaps", help="Write face-parsing maps (needs the parser weights).")
    ] = _DEFAULTS.segmaps,
    device: CpuDevice = _DEFAULTS.device,
) -> None:
    """Prepare training data: frames, contour drawings and segmaps, resumable, with a manifest."""
    from thead.prep import PrepOptions, prepare

    options = PrepOptions(mode=mode, k=k, workers=workers, landmarks=landmarks.value, segmaps=segmaps, device=device)
    with Bar("prep") as bar:  # the failures so far beside the count; each one listed below
        report = prepare(src, out, options, bar)
    for failure in report.failures:
        err_console.print(f"skipped {failure.clip}: {failure.error}", markup=False, highlight=False, soft_wrap=True)
    no_face = sum(len(c.no_face) for c in report.clips)
    err_console.print(
        f"prepared {len(report.clips)} clips ({report.num_frames} frames; {report.num_resumed} already done) "
        f"into {out}; {no_face} frames without a face skipped; {len(report.failures)} clips failed; "
        f"see {report.manifest}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if report.failures and not report.clips:
        raise typer.Exit(1)
