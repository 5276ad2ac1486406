"""``thead weights download|info|push|convert``: thin wrappers over ``thead.hub`` and
``thead.convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from thead.cli._app import err_console, out_console, weights_app
from thead.cli._options import Weights
from thead.hub import DEFAULT_REPO_ID, WEIGHTS_ENV


def _print_table(table: Table) -> None:
    out_console.print(table)


@weights_app.command("download")
def download(
    repo_id: Annotated[
        Optional[str],
        typer.Option("--repo-id", help=f"Hub repo id (default: ${WEIGHTS_ENV}, else the cached model, {DEFAULT_REPO_ID}, or the authors' release)."),
    ] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit (default: main).")] = None,
    keep_archive: Annotated[bool, typer.Option("--keep-archive", help="Keep the authors' archive in the cache after converting it.")] = False,
) -> None:
    """Get the weights (verified by sha256) into the cache; prints the folder.

    With nothing given: the converted model when cached, else the Hub repo, else the authors'
    release on Google Drive (downloaded with resume, converted, archive sha256 recorded)."""
    from thead.hub import resolve_weights

    folder = resolve_weights(repo_id, revision=revision, keep_archive=keep_archive)
    out_console.print(str(folder), markup=False, highlight=False, soft_wrap=True)
    err_console.print("weights ready (sha256 verified)", highlight=False)


@weights_app.command("info")
def info(weights: Weights = None) -> None:
    """Show the config, parameters per network, file hashes and provenance of the weights."""
    from thead.hub import resolve_weights, summarize_weights

    summary = summarize_weights(resolve_weights(weights))
    out_console.print(f"[bold]{escape(str(summary.folder))}[/]", highlight=False, soft_wrap=True)
    config = Table("config", "", box=None, show_header=False)
    for key, value in sorted(summary.config.items()):
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in sorted(value.items()))
        config.add_row(key, escape(str(value)))
    _print_table(config)
    nets = Table("network", "tensors", "parameters", box=None)
    for name, tensors, params in summary.networks:
        nets.add_row(name, str(tensors), f"{params:,}")
    nets.add_row("[bold]total", "", f"[bold]{summary.total_parameters:,}")
    _print_table(nets)
    for pin in summary.files:  # whole hashes on one line each, for copying into a manifest
        out_console.print(f"{pin.name}: sha256 {pin.sha256} ({pin.size:,} bytes)", highlight=False, soft_wrap=True)
    from thead.release import read_provenance

    record = read_provenance(summary.folder)
    if record is not None:  # converted from the authors' release by thead itself
        out_console.print(f"source: {record.source_url}", markup=False, highlight=False, soft_wrap=True)
        out_console.print(f"archive sha256: {record.archive_sha256} ({record.archive_size:,} bytes)", markup=False, highlight=False, soft_wrap=True)
        out_console.print(f"checkpoint: {record.checkpoint}", markup=False, highlight=False, soft_wrap=True)
        for name, sha in record.converted_sha256.items():
            out_console.print(f"converted {name}: sha256 {sha}", markup=False, highlight=False, soft_wrap=True)
        out_console.print(f"converted: {record.date} by thead {record.thead_version}", markup=False, highlight=False)
    entry = summary.entry
    if entry is None and record is not None:
        return
    if entry is None:
        out_console.print("provenance: unknown (not in thead's manifest and no manifest.json in the folder)", highlight=False)
    else:
        out_console.print(f"name: {entry.name} ({entry.repo_id})", markup=False, highlight=False)
        out_console.print(f"provenance: {entry.provenance or 'unknown'}", markup=False, highlight=False, soft_wrap=True)
        if entry.license:
            out_console.print(f"license: {entry.license}", markup=False, highlight=False)


@weights_app.command("push")
def push(
    folder: Annotated[Path, typer.Argument(help="A weights folder (config.json + model.safetensors).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Target Hub repo id, owner/name (created if needed).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
) -> None:
    """Upload weights with a manifest (sha256) and a model card (maintainers; needs a write token)."""
    from thead.hub import push_weights

    result = push_weights(folder, repo_id, private=private)
    for pin in result.entry.files:
        err_console.print(f"{pin.name}: sha256 {pin.sha256} ({pin.size:,} bytes)", highlight=False, soft_wrap=True)
    out_console.print(result.commit_url, markup=False, highlight=False, soft_wrap=True)


@weights_app.command("convert")
def convert(
    src: Annotated[Path, typer.Argument(help="The authors' TF checkpoint: its folder, a ckpt-N prefix, or the release archive (zip, tar, tar.gz).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New weights folder to write (must not exist).")],
) -> None:
    """Convert the authors' TensorFlow checkpoint into thead weights (no TensorFlow needed)."""
    from thead.convert import convert_checkpoint
    from thead.hub import REQUIRED_FILES, file_sha256

    from thead.release import archive_checkpoint

    with err_console.status("converting..."), archive_checkpoint(src) as checkpoint:
        report = convert_checkpoint(checkpoint, output)
    table = Table("network", "tensors", "parameters", title=escape(f"{report.source} -> {output}"), box=None)
    for name, tensors, params in report.rows:
        table.add_row(name, str(tensors), f"{params:,}")
    table.add_row("[bold]total", str(sum(r[1] for r in report.rows)), f"[bold]{report.total_parameters:,}")
    _print_table(table)
    out_console.print(f"ignored {report.ignored} non-network entries (optimizer slots, counters)", highlight=False)
    for name in REQUIRED_FILES:
        out_console.print(f"{name}: sha256 {file_sha256(output / name)}", highlight=False, soft_wrap=True)
