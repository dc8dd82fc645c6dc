"""`make demo`: fetch the offline models, run every app's `offline` config on its built-in data, summarise.

    uv run python tools/demo.py [--only vision-cls text-classifier] [--output_dir outputs/demo]

Each app trains through its real CLI (its own progress bars), is scored on its held-out split, and lands
in one table: app, model, trainable %, adapter MB, minutes, metric. Apps that are not installed, or
ship no `offline` config yet, are skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# app, import name, extra flags for the demo's short schedule, metric keys to report (first found wins)
APPS = [
    ("vision-cls", "vision_cls", [], ["eval_accuracy"]),
    ("vision-det", "vision_det", [], ["eval_AP50", "eval_ap50", "eval_map_50"]),
    ("vision-pose", "vision_pose", [], ["eval_pck@0.1", "eval_pck_0.1", "eval_pck_10"]),
    ("text-classifier", "text_classifier", [], ["eval_accuracy"]),
    ("llm-chat", "llm_chat", [], ["eval_mt_accuracy", "eval_accuracy", "eval_loss"]),
]


def has_offline_config(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        return False
    try:
        from importlib import resources

        return (resources.files(f"{module}.configs") / "offline.yaml").is_file()
    except ModuleNotFoundError:
        return False


def run_app(app: str, module: str, extra: list[str], out: Path, log: Path) -> tuple[int, float]:
    """Train with the offline config; the app's own output (progress bars) goes to the terminal and a log."""
    cmd = [sys.executable, "-m", module, "train", "--config", "offline", "--output_dir", str(out), *extra]
    print(f"\n=== {app}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:  # tee: show progress live, keep the log
            sys.stdout.write(line)
            f.write(line)
        code = proc.wait()
    return code, (time.perf_counter() - t0) / 60


def summary_row(app: str, out: Path, minutes: float, metric_keys: list[str]) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    model = "?"
    resolved = out / "resolved_config.yaml"
    if resolved.is_file():
        for line in resolved.read_text().splitlines():
            if line.startswith("model_name_or_path:"):
                model = Path(line.split(":", 1)[1].strip()).name
    key = next((k for k in metric_keys if k in metrics), None)
    return {
        "app": app,
        "model": model,
        "trainable %": round(metrics.get("trainable_pct", float("nan")), 2),
        "adapter MB": round(metrics.get("adapter_mb", float("nan")), 2),
        "minutes": round(minutes, 1),
        "metric": f"{key.removeprefix('eval_')}={metrics[key]:.3f}" if key else "n/a",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", help="run only these apps")
    p.add_argument("--output_dir", default=str(ROOT / "outputs" / "demo"))
    p.add_argument("--skip_models", action="store_true", help="don't run `make models` first")
    args = p.parse_args(argv)

    if not args.skip_models:
        print("=== make models (idempotent: converted models are reused)", flush=True)
        if subprocess.call([sys.executable, str(ROOT / "tools" / "make_models.py")]) != 0:
            print("demo: `make models` failed; see above", file=sys.stderr)
            return 2

    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows, failed, t_start = [], [], time.perf_counter()
    for app, module, extra, keys in APPS:
        if args.only and app not in args.only:
            continue
        if not has_offline_config(module):
            print(f"--- {app}: skipped (not installed, or no offline config yet)")
            continue
        code, minutes = run_app(app, module, extra, root / app, root / f"{app}.log")
        if code != 0 or not (root / app / "metrics.json").is_file():
            print(f"--- {app}: FAILED (exit {code}); log: {root / f'{app}.log'}", file=sys.stderr)
            failed.append(app)
            rows.append(
                {
                    "app": app,
                    "model": "-",
                    "trainable %": "-",
                    "adapter MB": "-",
                    "minutes": round(minutes, 1),
                    "metric": f"failed (exit {code})",
                }
            )
            continue
        rows.append(summary_row(app, root / app, minutes, keys))

    sys.path.insert(0, str(ROOT / "shared" / "src"))
    from lora_shared.reports import markdown_table

    table = markdown_table(rows, ["app", "model", "trainable %", "adapter MB", "minutes", "metric"])
    total = (time.perf_counter() - t_start) / 60
    text = f"# make demo summary\n\n{table}\n\nTotal: {total:.1f} min. Runs in {root}.\n"
    (root / "summary.md").write_text(text)
    (root / "summary.json").write_text(json.dumps(rows, indent=2))
    print("\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
