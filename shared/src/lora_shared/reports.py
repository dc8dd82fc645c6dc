"""Human-readable reports: a metrics table on stdout, and Markdown tables for summaries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def print_metrics(title: str, metrics: dict, output_dir: str | Path | None = None) -> None:
    """Print metrics as an aligned two-column table (stdout: this is the command's result)."""
    keys = [
        k
        for k in metrics
        if not k.endswith(("_runtime", "_per_second", "_samples_per_second", "_steps_per_second"))
    ]
    width = max((len(k) for k in keys), default=0)
    print(f"\n== {title} ==")
    for k in keys:
        print(f"  {k.ljust(width)}  {_fmt(metrics[k])}")
    if output_dir is not None:
        print(f"  {'output_dir'.ljust(width)}  {output_dir}")


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of `rows` (dicts), columns in the given order."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
