"""``thead weights download|info|push|convert`` on the command line: real conversion of the
authors' parity checkpoint, the fake Hub for download and push, and bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_hub import FAKE_REPO, closed_port_url
from thead import hub

try:
    from thead.cli import main
except ImportError as e:  # another command module of the CLI package failed to import
    pytest.skip(f"thead.cli does not import ({e})", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
REPO = FAKE_REPO


@pytest.fixture
def hub_weights(parity_weights) -> Path:
    """``fake_hub`` (tests/conftest.py) serves the converted parity checkpoint here."""
    return parity_weights


def test_convert_prints_the_table_and_hashes(parity_dir, tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["weights", "convert", str(parity_dir / "ckpt_reduced"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    for network in ("style_encoder", "layout_encoder", "layout_generator", "image_generator", "discriminator"):
        assert network in text
    assert "ignored" in text
    assert f"model.safetensors: sha256 {hub.file_sha256(out / 'model.safetensors')}" in text
    summary = hub.summarize_weights(out)
    assert f"{summary.total_parameters:,}" in text


def test_convert_bad_input_is_one_line(parity_dir, parity_weights, tmp_path, capsys):
    for args, message in (
        ([str(tmp_path / "missing"), "-o", str(tmp_path / "a")], "does not exist"),
        ([str(parity_dir / "ckpt_reduced"), "-o", str(parity_weights)], "already exists"),
    ):
        assert main(["weights", "convert", *args]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "a").exists()


def test_info_on_a_local_folder(parity_weights, capsys):
    assert main(["weights", "info", "--weights", str(parity_weights)]) == 0
    text = capsys.readouterr().out
    summary = hub.summarize_weights(parity_weights)
    for name, tensors, params in summary.networks:
        assert name in text and f"{params:,}" in text
    assert hub.file_sha256(parity_weights / "model.safetensors") in text  # whole, on one line
    assert "provenance: unknown" in text
    assert "nf_max=48" in text  # the reduced config


def test_info_reads_the_weights_env(parity_weights, hf_env, monkeypatch, capsys):
    monkeypatch.setenv(hub.WEIGHTS_ENV, str(parity_weights))
    assert main(["weights", "info"]) == 0
    assert str(parity_weights) in capsys.readouterr().out


def test_download_then_info_from_the_hub(fake_hub, capsys):
    assert main(["weights", "download", "--repo-id", REPO]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "model.safetensors").is_file() and "hf-cache" in str(folder)
    assert main(["weights", "info", "--weights", REPO]) == 0
    text = capsys.readouterr().out
    assert "provenance: converted with `thead weights convert`" in text  # from the repo's manifest


def test_download_revision_not_found(fake_hub, capsys):
    assert main(["weights", "download", "--repo-id", REPO, "--revision", "v9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no such revision" in err and len(err.splitlines()) == 1


def test_download_without_a_hub(hf_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    assert main(["weights", "download"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    # No Hub: thead moves on to the authors' release (a closed port here), says so, and fails
    # with one error line naming the manual route.
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == err[-1], err
    assert "authors' LSR checkpoint" in errors[0] and "--weights DIR" in errors[0] and "thead weights convert" in errors[0]


def test_push(fake_hub, parity_weights, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert main(["weights", "push", str(parity_weights), "--repo-id", "test-org/pushed"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith(fake_hub.url)
    assert hub.file_sha256(parity_weights / "model.safetensors") in captured.err
    (commit,) = fake_hub.commits
    assert sorted(commit["files"]) == ["README.md", "config.json", "manifest.json", "model.safetensors"]
    assert main(["weights", "push", str(parity_weights.parent / "missing"), "--repo-id", "test-org/x"]) == 1
    assert "has no config.json" in capsys.readouterr().err


def test_fresh_interpreter_with_env_set_before_import(fake_hub, hf_env):
    """As a user runs it: HF_ENDPOINT etc. are set before huggingface_hub is imported."""
    code = "import sys; from thead.cli import main; sys.exit(main(sys.argv[1:]))"
    environment = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(hf_env / "sub-cache")}
    run = subprocess.run(
        [sys.executable, "-c", code, "weights", "download", "--repo-id", REPO],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment,
    )
    assert run.returncode == 0, run.stderr
    folder = Path(run.stdout.strip())
    assert folder.is_relative_to(hf_env / "sub-cache")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights"][0]["repo_id"] == REPO
