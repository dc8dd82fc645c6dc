"""`make demo`: fetch the offline models, run every app's `offline` config on its built-in data, summarise.

    uv run --frozen python tools/demo.py                       # all apps that ship an offline config
    uv run --frozen python tools/demo.py --only vision-cls     # one app
    uv run --frozen python tools/demo.py --budget_scale 3      # longer schedules (better numbers)

Steps: `make models` (idempotent), then for each app under packages/ that ships
`configs/offline.yaml`: `<app> train --config offline` on its built-in data with a short schedule
(the app's own progress bars stream through), scored on its held-out split, read back from the run's
metrics.json, and one summary table: app, model, trainable %, adapter MB, minutes, metric. Apps that
are not installed or ship no offline config yet are skipped with a line saying so.

Time: every app gets a short schedule passed as CLI overrides (DEMO_OVERRIDES, only the flags the
app's `train --help` lists) sized to a planned time (DEMO_BUDGET_MIN) so that the whole demo stays
under 20 min on 2 idle CPU cores. The wall-clock limit is --time_limit x that plan (default 3x: a
busy or slower machine still finishes); an app still running then is interrupted (it saves a
checkpoint) and reported as timed out. --budget_scale scales step caps and plans together.

Exit status: 0 every app that ran succeeded; 1 some app failed or timed out; 2 `make models` failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"

# Run order: the quick, most convincing apps first.
APP_ORDER = ("vision-cls", "text-classifier", "vision-det", "vision-pose", "llm-chat")

# Headline metric per app, as regexes over metrics.json keys (first match in list order wins).
HEADLINE = {
    "vision-cls": [r"eval_accuracy"],
    "text-classifier": [r"eval_accuracy", r"eval_f1.*"],
    "vision-det": [r"eval_(ap|map)[_@]?50", r"eval_(ap|map)"],
    "vision-pose": [r"eval_pck[_@]?0?\.?1(0)?", r"eval_pck.*"],
    "llm-chat": [r"eval_(\w+_)?keyword_match", r"eval_loss"],
}
FALLBACK_HEADLINE = [r"eval_accuracy", r"eval_f1", r"eval_loss"]

# Short schedules for the demo, as `train` CLI overrides. A flag is passed only if the app's
# `train --help` lists it, so apps that land later with different knobs still run.
DEMO_OVERRIDES: dict[str, dict[str, object]] = {
    "vision-cls": {},  # its offline config is already a demo-length schedule
    "text-classifier": {"max_steps": 60, "max_eval_samples": 400},
    "vision-det": {"max_steps": 60, "max_eval_samples": 50},
    "vision-pose": {"max_steps": 60, "max_eval_samples": 50},
    # ~130 s/step measured on a loaded 2-core box with its offline batch (8 packed dialogs): few steps.
    "llm-chat": {"max_steps": 12, "max_eval_samples": 16},
}
DEFAULT_OVERRIDES: dict[str, object] = {"max_steps": 40}

# Apps whose headline metric comes from a separate `<app> eval --adapter_dir <run>` (it writes
# eval_metrics.json): llm-chat scores generated answers (keyword match), which `train` does not.
DEMO_EVAL: dict[str, dict[str, object]] = {
    "llm-chat": {"eval_tasks": "banking", "max_eval_items": 8, "max_new_tokens": 48},
}

# Planned minutes per app on 2 idle CPU cores; the sum stays under 20 with `make models` up to date.
DEMO_BUDGET_MIN = {
    "vision-cls": 3.0,  # measured: 2.7 min of CPU time incl. `make models` (up to date)
    "text-classifier": 4.0,
    "vision-det": 3.5,
    "vision-pose": 3.0,
    "llm-chat": 5.0,  # train + a short generation eval
}
DEFAULT_BUDGET_MIN = 3.0
TIME_LIMIT_FACTOR = 3.0  # wall-clock limit = factor x plan: a safety net, not the schedule
SIGINT_GRACE_S = 60  # after the limit: SIGINT (the app checkpoints and exits), then SIGKILL

COLUMNS = ["app", "model", "trainable %", "adapter MB", "minutes", "metric"]


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


@dataclass
class App:
    name: str  # distribution / CLI name, e.g. "vision-cls"
    module: str  # import name, e.g. "vision_cls"
    skip_reason: str | None = None
    overrides: dict[str, object] = field(default_factory=dict)
    budget_min: float = DEFAULT_BUDGET_MIN


def offline_config_path(module: str, packages: Path | None = None) -> Path | None:
    """The app's bundled configs/offline.yaml: from the installed package, else the source tree."""
    packages = PACKAGES if packages is None else packages
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / "configs" / "offline.yaml"
            if path.is_file():
                return path
    path = packages / module.replace("_", "-") / "src" / module / "configs" / "offline.yaml"
    return path if path.is_file() else None


def discover_apps(packages: Path | None = None, order: tuple[str, ...] | None = None) -> list[App]:
    """Every app: the known ones in `order` (present or not), then any other dir under packages/."""
    packages = PACKAGES if packages is None else packages
    order = APP_ORDER if order is None else order
    present = (
        sorted(p.name for p in packages.iterdir() if (p / "pyproject.toml").is_file())
        if packages.is_dir()
        else []
    )
    names = [*order, *(n for n in present if n not in order)]
    apps = []
    for name in names:
        module = name.replace("-", "_")
        app = App(name, module, budget_min=DEMO_BUDGET_MIN.get(name, DEFAULT_BUDGET_MIN))
        app.overrides = dict(DEMO_OVERRIDES.get(name, DEFAULT_OVERRIDES))
        if name not in present:
            app.skip_reason = "not in this checkout yet"
        elif importlib.util.find_spec(module) is None:
            app.skip_reason = "not installed (run `uv sync`)"
        elif importlib.util.find_spec(f"{module}.cli") is None:
            app.skip_reason = "not implemented yet (no cli.py)"
        elif offline_config_path(module, packages) is None:
            app.skip_reason = "no offline config yet (configs/offline.yaml)"
        apps.append(app)
    return apps


def supported_flags(help_text: str) -> set[str]:
    """`--flag` names an argparse/HfArgumentParser help lists (e.g. {"max_steps", "output_dir"})."""
    return set(re.findall(r"--([A-Za-z0-9_]+)", help_text))


def override_args(
    overrides: dict[str, object], flags: set[str], scale: float = 1.0, config: dict | None = None
) -> list[str]:
    """CLI arguments for the overrides the app supports; `max_*` caps are scaled by `scale` and never
    raise a smaller cap the app's own offline config already sets (`config`: that YAML's keys)."""
    args: list[str] = []
    for key, value in overrides.items():
        if key not in flags:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and key.startswith("max_"):
            value = max(1, math.ceil(value * scale))
            own = (config or {}).get(key)
            if isinstance(own, int) and 0 < own <= value:
                continue  # the config's own cap is already tighter
        args += [f"--{key}", str(value)]
    return args


def read_yaml(path: Path | None) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) if path else None
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------
# Running one app
# ---------------------------------------------------------------------------------------------


def app_flags(module: str, verb: str = "train") -> set[str]:
    """Flags `<app> <verb>` accepts: the fields of the app's config dataclasses (CONFIG_TYPES, plus
    PREDICT_TYPES for other verbs), read in-process; else parsed from `<app> <verb> --help` (a
    subprocess that costs a full torch import)."""
    import dataclasses

    try:
        config = importlib.import_module(f"{module}.config")
        types = list(config.CONFIG_TYPES) + (
            list(getattr(config, "PREDICT_TYPES", ())) if verb != "train" else []
        )
        return {f.name for t in types for f in dataclasses.fields(t)}
    except Exception:  # noqa: BLE001 - any app that does not follow the convention: ask its CLI
        return supported_flags(verb_help(module, verb))


def verb_help(module: str, verb: str = "train") -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, verb, "--help"], capture_output=True, text=True, timeout=300
    )
    return proc.stdout + proc.stderr


def run_streaming(cmd: list[str], log: Path, limit_s: float) -> tuple[int, float, bool]:
    """Run `cmd`, copying its raw output (progress bars with their carriage returns) to the terminal
    and to `log`. Returns (exit code, minutes, timed_out)."""
    t0 = time.perf_counter()
    timed_out = False
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        os.set_blocking(proc.stdout.fileno(), False)
        interrupted_at = None
        while True:
            chunk = proc.stdout.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                fh.write(chunk)
            elif proc.poll() is not None:
                rest = proc.stdout.read()
                if rest:
                    sys.stdout.buffer.write(rest)
                    fh.write(rest)
                break
            else:
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            if interrupted_at is None and elapsed > limit_s:
                timed_out, interrupted_at = True, elapsed
                print(f"\n--- over its {limit_s / 60:.1f} min time limit: interrupting", flush=True)
                proc.send_signal(signal.SIGINT)
            elif interrupted_at is not None and elapsed > interrupted_at + SIGINT_GRACE_S:
                proc.kill()
        code = proc.wait()
    return code, (time.perf_counter() - t0) / 60, timed_out


def headline_metric(app: str, metrics: dict) -> tuple[str, float] | None:
    """(name, value) of the app's headline metric in its metrics.json, or None."""
    for pattern in HEADLINE.get(app, []) + FALLBACK_HEADLINE:
        for key, value in metrics.items():
            if re.fullmatch(pattern, key, flags=re.IGNORECASE) and isinstance(value, int | float):
                return key.removeprefix("eval_"), float(value)
    return None


def model_name(run_dir: Path) -> str:
    """Model of a run from its resolved config: `model_name_or_path` (last path part), or for apps
    that build a model from a config around a pretrained backbone (vision-det), `model_type+backbone`."""
    resolved = read_yaml(run_dir / "resolved_config.yaml")

    def short(value) -> str:
        return Path(str(value)).name or str(value) if value else ""

    name, backbone = short(resolved.get("model_name_or_path")), short(resolved.get("backbone"))
    if backbone and not name:
        name = "+".join(filter(None, [str(resolved.get("model_type") or ""), backbone]))
    return name or str(resolved.get("model_type") or "?")


def _fmt(value, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def read_metrics(run_dir: Path) -> dict:
    """metrics.json of the train run, updated by eval_metrics.json when a separate eval ran."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    extra = run_dir / "eval_metrics.json"
    if extra.is_file():
        metrics.update(json.loads(extra.read_text()))
    return metrics


def summary_row(app: str, run_dir: Path, minutes: float) -> dict:
    metrics = read_metrics(run_dir)
    headline = headline_metric(app, metrics)
    return {
        "app": app,
        "model": model_name(run_dir),
        "trainable %": _fmt(metrics.get("trainable_pct"), 2),
        "adapter MB": _fmt(metrics.get("adapter_mb"), 2),
        "minutes": f"{minutes:.1f}",
        "metric": f"{headline[0]} = {headline[1]:.3f}" if headline else "n/a",
    }


def failed_row(app: str, minutes: float, why: str) -> dict:
    return {
        "app": app,
        "model": "-",
        "trainable %": "-",
        "adapter MB": "-",
        "minutes": f"{minutes:.1f}",
        "metric": why,
    }


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    line = lambda cells: "| " + " | ".join(str(v).ljust(w) for v, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line([r[c] for c in columns]) for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", nargs="+", metavar="APP", help="run only these apps")
    p.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "demo", help="run dirs + summary")
    p.add_argument("--skip_models", action="store_true", help="don't run `make models` first")
    p.add_argument(
        "--dry_run", action="store_true", help="print which apps would run, with which command, and stop"
    )
    p.add_argument(
        "--budget_scale",
        type=float,
        default=1.0,
        help="multiply every app's step/sample caps and planned time (e.g. 3 for better numbers, slower)",
    )
    p.add_argument(
        "--time_limit",
        type=float,
        default=TIME_LIMIT_FACTOR,
        help="interrupt an app after this many times its planned minutes (0: never)",
    )
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    # 1. Offline models (idempotent: a second run downloads and converts nothing).
    if not args.skip_models and not args.dry_run:
        print("=== make models (idempotent: up-to-date models are reused)", flush=True)
        if subprocess.call([sys.executable, str(ROOT / "tools" / "make_models.py")]) != 0:
            print("demo: `make models` failed; see above", file=sys.stderr)
            return 2

    # 2. Which apps can run.
    apps = discover_apps()
    if args.only:
        unknown = sorted(set(args.only) - {a.name for a in apps})
        if unknown:
            print(
                f"demo: unknown app(s) {', '.join(unknown)}; known: {', '.join(a.name for a in apps)}",
                file=sys.stderr,
            )
            return 2
        apps = [a for a in apps if a.name in args.only]
    for app in apps:
        if app.skip_reason:
            print(f"--- {app.name}: skipped ({app.skip_reason})", flush=True)
    runnable = [a for a in apps if not a.skip_reason]

    # 3. Train + evaluate each app with its offline config and a short schedule.
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    for i, app in enumerate(runnable, 1):
        run_dir = args.output_dir / app.name
        own = read_yaml(offline_config_path(app.module))
        flags = app_flags(app.module)
        extra = override_args(app.overrides, flags, args.budget_scale, own)
        if "overwrite_output_dir" in flags:  # a new demo replaces the last one's run (else: exit 2)
            extra.append("--overwrite_output_dir")
        cmd = [
            sys.executable,
            "-m",
            app.module,
            "train",
            "--config",
            "offline",
            "--output_dir",
            str(run_dir),
            *extra,
        ]
        plan_s = app.budget_min * args.budget_scale * 60
        limit_s = plan_s * args.time_limit if args.time_limit > 0 else math.inf
        print(
            f"\n=== [{i}/{len(runnable)}] {app.name} (plan {plan_s / 60:.1f} min): {' '.join(cmd[2:])}",
            flush=True,
        )
        if args.dry_run:
            continue
        for stale in ("metrics.json", "eval_metrics.json"):  # never report a previous run's numbers
            (run_dir / stale).unlink(missing_ok=True)
        log = args.output_dir / f"{app.name}.log"
        code, minutes, timed_out = run_streaming(cmd, log, limit_s)
        if code == 0 and (run_dir / "metrics.json").is_file() and app.name in DEMO_EVAL:
            eval_extra = override_args(DEMO_EVAL[app.name], app_flags(app.module, "eval"), args.budget_scale)
            eval_cmd = [sys.executable, "-m", app.module, "eval", "--adapter_dir", str(run_dir), *eval_extra]
            left_s = max(limit_s - minutes * 60, 60.0)
            print(f"\n=== {app.name} eval: {' '.join(eval_cmd[2:])}", flush=True)
            eval_code, eval_minutes, _ = run_streaming(
                eval_cmd, args.output_dir / f"{app.name}-eval.log", left_s
            )
            minutes += eval_minutes
            if eval_code != 0:  # the train metrics (eval loss) still make a row
                print(f"--- {app.name} eval: exit {eval_code}; reporting train metrics", file=sys.stderr)
        if code == 0 and (run_dir / "metrics.json").is_file():
            rows.append(summary_row(app.name, run_dir, minutes))
            continue
        why = f"timed out after {minutes:.1f} min" if timed_out else f"failed (exit {code})"
        print(
            f"--- {app.name}: {why}; log: {args.output_dir / f'{app.name}.log'}", file=sys.stderr, flush=True
        )
        failed.append(app.name)
        rows.append(failed_row(app.name, minutes, why))

    if args.dry_run:
        return 0

    # 4. One summary table (also written to summary.md / summary.json).
    total = (time.perf_counter() - t_start) / 60
    skipped = [f"{a.name} ({a.skip_reason})" for a in apps if a.skip_reason]
    text = "# make demo summary\n\n" + (markdown_table(rows) if rows else "(no app ran)") + "\n"
    if skipped:
        text += "\nSkipped: " + "; ".join(skipped) + "\n"
    text += f"\nTotal: {total:.1f} min (make models included). Runs, logs and plots in {args.output_dir}.\n"
    (args.output_dir / "summary.md").write_text(text)
    (args.output_dir / "summary.json").write_text(
        json.dumps({"rows": rows, "skipped": skipped, "minutes": total}, indent=2)
    )
    print("\n" + text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
