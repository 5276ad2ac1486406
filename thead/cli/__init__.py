"""thead's command line: a thin Typer layer over the Python API.

Each command group lives in its own module and registers itself on import. ``main`` is the
console-script entry point: it turns ``TheadError`` into one ``error: ...`` line and its exit
code, and Ctrl-C into exit code 130 (callers clean up partial outputs in ``finally`` blocks).
Exit codes: 0 success, 1 failed run, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from thead.cli._app import app, err_console
from thead.errors import TheadError

# Command modules: importing one registers its commands on ``app`` (in this order in --help).
from thead.cli import avatar as _avatar  # noqa: F401,E402  enroll, animate, demo, avatars, motion
from thead.cli import train as _train  # noqa: F401,E402  finetune, train layout|meta|export
from thead.cli import eval as _eval  # noqa: F401,E402  eval
from thead.cli import prep as _prep  # noqa: F401,E402  prep
from thead.cli import weights as _weights  # noqa: F401,E402  weights download|info|push|convert
from thead.cli import ui as _ui  # noqa: F401,E402  ui

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (also used by tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        code = app(args=args, prog_name="thead", standalone_mode=False)
    except TheadError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:  # typer.Exit inside standalone_mode=False surfaces here
        return int(e.code or 0)
    except click.exceptions.Abort:
        code = 130
    except click.ClickException as e:  # usage errors: Click's own message, exit 2
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    # With standalone_mode=False Typer returns Ctrl-C as the exit code 130 instead of raising.
    if code == 130:
        err_console.print("interrupted", highlight=False)
        return 130
    return code if isinstance(code, int) else 0


def entry() -> None:  # console_scripts
    sys.exit(main())
