"""``thead eval`` on the command line: end to end offline, and bad input as one line."""

from __future__ import annotations

import json

import pytest

try:
    import thead.cli.eval  # noqa: F401 - registers the command (thead.cli imports it too)
    from thead.cli import main
except ImportError as e:  # another command module of the CLI package failed to import
    pytest.skip(f"thead.cli does not import ({e})", allow_module_level=True)


@pytest.mark.slow
def test_end_to_end_offline(tmp_path, fsth, parity_weights, capsys):
    out = tmp_path / "report"
    code = main(["eval", "--testset", str(fsth), "--weights", str(parity_weights), "--shots", "1,2",
                 "--id-model", "dlib", "--landmarks", "dlib", "--people", "id00061", "--max-frames", "1",
                 "--no-download", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PSNR↑" in captured.out and "FID↓" in captured.out
    assert "LPIPS skipped" in captured.err and "FID skipped" in captured.err  # no weights offline: said once each
    for name in ("table.txt", "report.json", "report.csv", "metrics_vs_shots.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "report.json").read_text())
    assert [(r["method"], r["num_shots"], r["num_frames"]) for r in data["runs"]] == [("meta", 1, 1), ("meta", 2, 1)]
    assert data["runs"][0]["mean"]["lpips"] is None and data["runs"][0]["mean"]["idsim"] is not None

    # The frame cache is itself in the --outputs layout: scoring it gives the same numbers.
    (cache,) = (out / "frames").iterdir()
    code = main(["eval", "--testset", str(fsth), "--outputs", str(cache), "--id-model", "dlib", "--landmarks", "dlib",
                 "--people", "id00061", "--max-frames", "1", "--no-download", "-o", str(tmp_path / "again")])
    assert code == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert [r["mean"] for r in again["runs"]] == [r["mean"] for r in data["runs"]]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--testset", "{tmp}/missing"], 1, "does not exist"),
        (["--testset", "{fsth}", "--outputs", "{tmp}"], 1, "holds no frames"),
        (["--testset", "{fsth}", "--shots", "1,x"], 2, "comma-separated"),
        (["--testset", "{fsth}", "--shots", "64"], 1, "fewer than K=64"),
        (["--testset", "{fsth}", "--people", "id99999"], 1, "id99999 is not in the test set"),
    ],
)
def test_bad_input_is_one_line(tmp_path, fsth, capsys, args, code, message):
    args = [a.format(tmp=tmp_path, fsth=fsth) for a in args]
    assert main(["eval", *args, "--no-download", "-o", str(tmp_path / "r")]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
