"""thead's command line: a thin Typer layer over the Python API.

Each command group lives in its own module and registers itself on import. ``main`` is the
console-script entry point: it turns ``TheadError`` into one ``error: ...`` line and its exit
code, a usage error (from whichever click typer runs on: its vendored ``typer._click`` or click
itself) into one line and exit code 2, and Ctrl-C, SIGTERM and SIGHUP into exit codes 130, 143
and 129 (callers clean up partial outputs in ``finally`` blocks, as for Ctrl-C).
Exit codes: 0 success, 1 failed run, 2 usage, 128 + signal number interrupted.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import typer
from rich.markup import escape

from thead.cli._app import HELP_OPTIONS, app, err_console
from thead.errors import TheadError

# Command modules: importing one registers its commands on ``app`` (in this order in --help).
from thead.cli import avatar as _avatar  # noqa: F401,E402  enroll, animate, demo, avatars, motion
from thead.cli import train as _train  # noqa: F401,E402  finetune, train layout|meta|export
from thead.cli import eval as _eval  # noqa: F401,E402  eval
from thead.cli import prep as _prep  # noqa: F401,E402  prep
from thead.cli import weights as _weights  # noqa: F401,E402  weights download|info|push|convert
from thead.cli import ui as _ui  # noqa: F401,E402  ui

__all__ = ["Interrupted", "app", "main"]


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would be so that the same cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _click_exceptions() -> list:
    """The exception modules of the click that typer raises from: typer >= 0.2x vendors its own
    copy (``typer._click``), older releases use click; both are caught when both exist."""
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            modules.append(importlib.import_module(name))
    return modules


def _classes(modules: list, name: str) -> tuple[type[BaseException], ...]:
    return tuple(getattr(m, name) for m in modules if hasattr(m, name))


@contextlib.contextmanager
def _signals_like_ctrl_c(received: list[int]) -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Interrupted`` (a KeyboardInterrupt) in the main thread; the
    signal is appended to ``received`` (typer turns any KeyboardInterrupt into exit code 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        received.append(signum)
        raise Interrupted(signum)

    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _command_path(e: BaseException) -> str:
    ctx = getattr(e, "ctx", None)
    return getattr(ctx, "command_path", None) or "thead"


def _flags_as_flags(command) -> None:
    """Plain on/off options get no value placeholder in --help (typer 0.2x shows ``<bool>``)."""
    params = list(getattr(command, "params", []))
    with contextlib.suppress(Exception):  # click >= 8.1.8 caches the help option per command
        params.append(command.get_help_option(SimpleNamespace(help_option_names=HELP_OPTIONS)))
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_as_flags(sub)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (also used by tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    while "--debug" in args:  # allowed anywhere on the line, not only before the command
        args.remove("--debug")
    exc = _click_exceptions()
    no_args_help = _classes(exc, "NoArgsIsHelpError")
    usage_errors, click_errors = _classes(exc, "UsageError"), _classes(exc, "ClickException")
    aborts = (typer.Abort, *_classes(exc, "Abort"))
    exits = (typer.Exit, *_classes(exc, "Exit"))
    command = typer.main.get_command(app)
    _flags_as_flags(command)
    received: list[int] = []
    try:
        with _signals_like_ctrl_c(received):
            code = command.main(args=args, prog_name="thead", standalone_mode=False)
    except TheadError as e:
        if debug:
            raise
        _error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        code = 130
    except no_args_help as e:  # `thead`, `thead avatars`: the help, on stderr, as a usage error
        err_console.print(e.format_message(), highlight=False, markup=False, soft_wrap=True)
        return 2
    except usage_errors as e:
        _error(f"{e.format_message()} (see '{_command_path(e)} --help')")
        return 2
    except click_errors as e:
        _error(e.format_message())
        return int(getattr(e, "exit_code", 1))
    except aborts:
        code = 130
    except exits as e:
        code = int(getattr(e, "exit_code", 0) or 0)
    except SystemExit as e:
        code = int(e.code or 0)
    if code == 130:  # some typer releases return Ctrl-C as 130 instead of raising
        err_console.print("interrupted", highlight=False)
        return 128 + received[0] if received else 130
    if code == 0 and _bare_group(command, args):  # click < 8.2 shows that help with exit code 0
        return 2
    return code if isinstance(code, int) else 0


def _bare_group(command, args: list[str]) -> bool:
    """``thead`` or ``thead GROUP`` without a command (a usage error that shows the help)."""
    node = command
    for a in args:
        node = getattr(node, "commands", {}).get(a)
        if node is None:
            return False
    return bool(getattr(node, "commands", None))


def entry() -> None:  # console_scripts
    sys.exit(main())
