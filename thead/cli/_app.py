"""The Typer application and what every command shares (console, --debug state)."""

from __future__ import annotations

import typer
from rich.console import Console

HELP_OPTIONS = ["-h", "--help"]
app = typer.Typer(
    name="thead",
    help="Few-shot talking heads and personal avatars (LSR, Meshry et al., ICCV 2021).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": HELP_OPTIONS},  # inherited by every subcommand
)
weights_app = typer.Typer(help="Get, convert, inspect and publish model weights.", no_args_is_help=True)
avatars_app = typer.Typer(help="List, show and remove enrolled avatars.", no_args_is_help=True)
motion_app = typer.Typer(help="Motion templates: a driver's landmarks saved for reuse.", no_args_is_help=True)
train_app = typer.Typer(help="Train LSR: layout pre-training, meta-learning, export.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(avatars_app, name="avatars")
app.add_typer(motion_app, name="motion")
app.add_typer(train_app, name="train")


def _show_version(value: bool) -> None:
    if value:
        from thead import __version__

        print(f"thead {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version, help="Print thead's version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (allowed anywhere on the line)."),
) -> None:
    """Few-shot talking heads and personal avatars (LSR, Meshry et al., ICCV 2021)."""
    # --debug is taken out of the arguments by thead.cli.main; it is declared here to be listed.


# Progress and messages go to stderr so that stdout stays clean for results.
err_console = Console(stderr=True)
out_console = Console()
