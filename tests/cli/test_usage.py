"""The command line's own errors: every usage error is one line and exit code 2, whatever
click typer runs on; --help, -h, --version and --debug; signals like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from thead.cli import main

USAGE_ERRORS = [
    (["animate", "NAME"], "--driver"),
    (["animate", "NAME", "--driver", "x.mp4", "-o", "y.mp4", "--motion", "foo"], "--motion"),
    (["enroll", "x.jpg", "--name", "a", "--shots", "abc"], "--shots"),
    (["enroll", "x.jpg"], "--name"),
    (["--bogus"], "--bogus"),
    (["animate", "NAME", "--bogus"], "--bogus"),
    (["nosuchcommand"], "nosuchcommand"),
    (["avatars", "nosuch"], "nosuch"),
    (["demo", "--seconds", "abc"], "--seconds"),
    (["eval", "--shots", "1"], "testset"),
]


OUT_OF_RANGE = [
    (["enroll", "x.jpg", "--name", "a", "--crop-scale", "100"], "--crop-scale"),
    (["demo", "--seconds", "-1"], "--seconds"),
    (["finetune", "alice", "--steps", "0"], "--steps"),
    (["enroll", "x.jpg", "--name", "a", "--shots", "0"], "--shots"),
    (["animate", "a", "--driver", "x.mp4", "-o", "y.mp4", "--batch", "0"], "--batch"),
    (["animate", "a", "--driver", "x.mp4", "-o", "y.mp4", "--face", "-1"], "--face"),
]
USAGE_ERRORS += OUT_OF_RANGE


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text and "Error" not in text, text


@pytest.mark.parametrize(("args", "word"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_is_one_line_and_exit_2(args, word, capsys):
    assert main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], err
    assert out == ""
    _no_traceback(err)


@pytest.mark.parametrize("args", [[], ["avatars"], ["weights"], ["motion"], ["train"]])
def test_a_group_without_a_command_shows_its_help_and_exits_2(args, capsys):
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "Usage: thead" in out + err and "Commands" in out + err
    _no_traceback(out + err)


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["avatars", "-h"], ["animate", "-h"], ["weights", "convert", "-h"]])
def test_h_is_help(args, capsys):
    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert "Usage: thead" in out


def test_help_lists_version_and_debug_and_shows_flags_as_flags(capsys):
    assert main(["--help"]) == 0
    out, _ = capsys.readouterr()
    assert "--version" in out and "--debug" in out
    assert main(["animate", "--help"]) == 0
    out, _ = capsys.readouterr()
    assert "--paste-back" in out and "--quiet" in out and "--overwrite" in out
    assert "<bool>" not in out and "BOOLEAN" not in out


def test_version(capsys):
    import thead

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"thead {thead.__version__}"


def test_debug_is_accepted_anywhere(capsys):
    assert main(["animate", "NAME", "--debug"]) == 2  # still a usage error, not "no such option"
    assert "--driver" in capsys.readouterr().err


def test_the_defaults_help_shows_are_the_librarys():
    """--help reads the option dataclasses' defaults from source (no torch import): each value
    the CLI uses must equal the real dataclass's."""
    from thead.animate import AnimateOptions
    from thead.cli._defaults import option_defaults
    from thead.demo import DemoOptions
    from thead.enroll import EnrollOptions
    from thead.eval.options import EvalOptions
    from thead.faces.crop import CropOptions
    from thead.motion import DriverOptions
    from thead.prep import PrepOptions

    for module, cls in [("thead.animate", AnimateOptions), ("thead.demo", DemoOptions), ("thead.enroll", EnrollOptions),
                        ("thead.eval.options", EvalOptions), ("thead.faces.crop", CropOptions),
                        ("thead.motion", DriverOptions), ("thead.prep", PrepOptions)]:
        read, real = option_defaults(module, cls.__name__), cls()
        assert vars(read), cls
        for name, value in vars(read).items():
            assert getattr(real, name) == value, (cls.__name__, name)


def test_help_and_usage_errors_do_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from thead.cli import main
        codes = [main(["--help"]), main(["animate", "x"]), main(["--version"])]
        print(codes, sorted(m for m in ("torch", "numpy", "PIL", "cv2", "dlib") if m in sys.modules))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "[0, 2, 0] []", r.stdout + r.stderr


def test_console_script_usage_error_is_one_line():
    r = subprocess.run([sys.executable, "-m", "thead", "animate", "NAME"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()  # click 8.2.x adds "(env var: 'None')"
    assert len(lines) == 1 and lines[0].startswith("error: Missing option '--driver'") and lines[0].endswith("(see 'thead animate --help')")


_SLOW_COMMAND = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from thead._atomic import atomic_file
    from thead.cli import app, main

    @app.command("slow-test-command")
    def slow(out: Path) -> None:
        with atomic_file(out) as tmp:
            tmp.write_bytes(b"partial")
            print("ready", flush=True)
            time.sleep(60)

    sys.exit(main(["slow-test-command", sys.argv[1]]))
""")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, signum, code):
    out = tmp_path / "out.mp4"
    p = subprocess.Popen([sys.executable, "-c", _SLOW_COMMAND, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert p.stdout.readline().strip() == "ready"
        assert len(list(tmp_path.iterdir())) == 1  # the .out.part.* temporary
        p.send_signal(signum)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code, err
    assert list(tmp_path.iterdir()) == []
    assert "interrupted" in err
    _no_traceback(err)
