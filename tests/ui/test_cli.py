"""``thead ui`` on the command line: bad options and a missing Gradio are one error line."""

from __future__ import annotations

import sys

from thead.cli import main


def test_bad_options_are_one_line(capsys):
    assert main(["ui", "--port", "0"]) == 2
    assert main(["ui", "--max-upload-mb", "0"]) == 2
    err = capsys.readouterr().err
    assert "--port must be between 1 and 65535" in err and "--max-upload-mb must be 1 or more" in err
    assert "Traceback" not in err


def test_without_gradio_it_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio fails as when it is not installed
    monkeypatch.delitem(sys.modules, "thead.ui.app", raising=False)
    assert main(["ui", "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "thead[ui]"' in err and "serving" not in err and "Traceback" not in err
