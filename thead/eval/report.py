"""Reports of an evaluation: the paper's Table 1 layout, JSON, CSV and Figure-6-style plots.

Files written into the report folder (each atomically):
- ``table.txt``: rows method/K, columns PSNR↑ SSIM↑ LPIPS↓ ID-SIM↑ NMKE↓ FID↓, then the notes;
- ``report.json``: settings, notes, and per run its means and per-person breakdown
  (non-finite values, e.g. PSNR of identical frames, as the strings "inf"/"nan");
- ``report.csv``: one line per run and person plus one ``all`` line per run;
- ``metrics_vs_shots.png``: each metric against K, meta-learned dashed, fine-tuned solid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from thead._atomic import atomic_file
from thead.errors import OutputError
from thead.eval.options import HIGHER_IS_BETTER, METRIC_LABELS, METRICS
from thead.eval.protocol import EvalResult, MetricValues

FORMATS = {"psnr": "{:.2f}", "ssim": "{:.3f}", "lpips": "{:.3f}", "idsim": "{:.3f}", "nmke": "{:.3f}", "fid": "{:.2f}"}


@dataclass(frozen=True)
class ReportFiles:
    table: Path
    json: Path
    csv: Path
    plot: Path | None


def header(name: str) -> str:
    return f"{METRIC_LABELS[name]}{'↑' if HIGHER_IS_BETTER[name] else '↓'}"


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return FORMATS[name].format(value)


def results_table(result: EvalResult) -> Table:
    """A rich table in the paper's Table 1 layout (one row per method and K)."""
    # Text (not markup): paths and method names may contain [brackets].
    table = Table(title=Text(f"thead eval — {result.testset}"), caption=Text(f"source: {result.source}"))
    table.add_column("method")
    table.add_column("K", justify="right")
    table.add_column("frames", justify="right")
    for name in METRICS:
        table.add_column(header(name), justify="right")
    for run in result.runs:
        k = "—" if run.run.num_shots is None else str(run.run.num_shots)
        table.add_row(Text(run.run.method), k, str(run.num_frames), *(_fmt(m, run.values.get(m)) for m in METRICS))
    return table


def render_text(result: EvalResult, width: int = 110) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(results_table(result))
    lines = [console.export_text()]
    lines.append(f"ID-SIM: {result.id_model or 'not computed'}; landmarks: {result.landmarks or '—'}; "
                 f"NMKE normalised by {result.nmke_normalization.replace('_', ' ')}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _json_value(v: float | None):
    if v is None or math.isfinite(v):
        return v
    return str(v)


def _values(v: MetricValues) -> dict:
    return {m: _json_value(v.get(m)) for m in METRICS}


def to_json(result: EvalResult) -> dict:
    return {
        "testset": result.testset,
        "source": result.source,
        "metrics_computed": list(result.metrics),
        "id_model": result.id_model,
        "landmarks": result.landmarks,
        "nmke_normalization": result.nmke_normalization,
        "notes": list(result.notes),
        "runs": [
            {
                "method": r.run.method,
                "num_shots": r.run.num_shots,
                "num_frames": r.num_frames,
                "mean": _values(r.values),
                "people": [{"person": p.person, "num_frames": p.num_frames, **_values(p.values)} for p in r.people],
            }
            for r in result.runs
        ],
    }


def _csv_rows(result: EvalResult) -> list[list]:
    rows = [["method", "num_shots", "person", "num_frames", *METRICS]]
    for r in result.runs:
        k = "" if r.run.num_shots is None else r.run.num_shots
        rows.append([r.run.method, k, "all", r.num_frames, *(_csv_value(r.values.get(m)) for m in METRICS)])
        for p in r.people:
            rows.append([r.run.method, k, p.person, p.num_frames, *(_csv_value(p.values.get(m)) for m in METRICS)])
    return rows


def _csv_value(v: float | None) -> str:
    return "" if v is None else repr(v) if math.isfinite(v) else str(v)


def plot_metrics(result: EvalResult, target: Path) -> bool:
    """Write ``metrics_figure`` as a PNG; False when no run has a K (nothing to plot)."""
    fig = metrics_figure(result)
    if fig is None:
        return False
    with atomic_file(target) as tmp:
        fig.savefig(tmp, format="png")
    return True


def metrics_figure(result: EvalResult):
    """Each metric against K (log-2 axis), meta-learned dashed, fine-tuned solid (Figure 6 of the
    paper); one subplot per metric in ``METRICS`` order; None when no run has a K."""
    runs = [r for r in result.runs if r.run.num_shots is not None]
    if not runs:
        return None
    from matplotlib.figure import Figure  # drawn without pyplot: no global backend state

    fig = Figure(figsize=(12, 7), dpi=100)
    methods = list(dict.fromkeys(r.run.method for r in runs))
    ks = sorted({r.run.num_shots for r in runs})
    for i, name in enumerate(METRICS):
        ax = fig.add_subplot(2, 3, i + 1)
        for method in methods:
            pts = sorted((r.run.num_shots, r.values.get(name)) for r in runs if r.run.method == method)
            pts = [(k, v) for k, v in pts if v is not None and math.isfinite(v)]
            if pts:
                style = "--" if method == "meta" else "-"
                ax.plot([k for k, _ in pts], [v for _, v in pts], style, marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("K (shots)")
        ax.set_title(header(name))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def write_report(result: EvalResult, folder: str | os.PathLike) -> ReportFiles:
    """Write table.txt, report.json, report.csv and metrics_vs_shots.png into ``folder``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the report folder {folder}: {e.strerror}") from None
    files = ReportFiles(folder / "table.txt", folder / "report.json", folder / "report.csv", folder / "metrics_vs_shots.png")
    with atomic_file(files.table) as tmp:
        tmp.write_text(render_text(result), encoding="utf-8")
    with atomic_file(files.json) as tmp:
        tmp.write_text(json.dumps(to_json(result), indent=2) + "\n", encoding="utf-8")
    with atomic_file(files.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(_csv_rows(result))
    if not plot_metrics(result, files.plot):
        files = ReportFiles(files.table, files.json, files.csv, None)
    return files
