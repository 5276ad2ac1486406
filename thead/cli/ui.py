"""``thead ui``: the web page, a thin wrapper over ``thead.ui``."""

from __future__ import annotations

from typing import Annotated

import typer

from thead.cli._app import app, err_console
from thead.cli._options import Device, Weights


@app.command()
def ui(
    host: Annotated[str, typer.Option("--host", help="Address to serve on (0.0.0.0: every interface; mind who can reach it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 7860,
    share: Annotated[bool, typer.Option("--share", help="Also publish a temporary public gradio.live link.")] = False,
    weights: Weights = None,
    device: Device = None,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", help="Largest upload accepted, in MB.")] = 200,
) -> None:
    """Serve the avatar workflow (enroll, avatars, animate, fine-tune) as a local web page."""
    from thead.errors import UsageError
    from thead.ui import UIOptions, serve

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    if max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb must be 1 or more, got {max_upload_mb}")
    options = UIOptions(weights=weights, host=host, port=port, share=share, max_upload_mb=max_upload_mb, device=device)
    serve(options, on_note=lambda line: err_console.print(line, highlight=False, markup=False))
