"""``thead ui``: the avatar workflow (enroll, avatars, animate, fine-tune) in a local web page.

Optional: ``pip install "thead[ui]"`` (Gradio). ``thead.ui.app`` lays out the page over the same
API as the command line; ``thead.ui.jobs`` holds what the page needs besides widgets (one job
at a time, cancelling, progress, errors as one sentence) and imports no Gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

from thead.errors import UsageError

__all__ = ["UIOptions", "serve"]


@dataclass(frozen=True)
class UIOptions:
    """``thead ui``'s settings. weights: as ``--weights`` (None: ``$THEAD_WEIGHTS``, else the
    default Hub repo). max_upload_mb: the largest upload accepted. device: as ``--device``."""

    weights: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_upload_mb: int = 200
    device: str | None = None


def serve(options: UIOptions, on_note=lambda s: None) -> None:
    """Serve the page until interrupted (Ctrl-C); ``on_note`` gets the address once it is served."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        from thead.ui.app import serve as run
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "gradio":
            raise UsageError('the web page needs Gradio: pip install "thead[ui]"') from None
        raise
    run(options, on_note)
