"""`make demo`: fetch the offline models, run every app's `offline` config on its built-in data, summarise.

    uv run --frozen python tools/demo.py                       # all apps that ship an offline config
    uv run --frozen python tools/demo.py --only vision-cls     # one app
    uv run --frozen python tools/demo.py --budget_scale 3      # longer schedules (better numbers)

Steps: `make models` (idempotent), then for each app under packages/ that ships
`configs/offline.yaml`: `<app> train --config offline` on its built-in data with a short schedule
(the app's own progress bars stream through), scored on its held-out split, read back from the run's
metrics.json, and one summary table: app, model, trainable %, minutes, base -> tuned on the headline
metric, the bar it must reach and whether it met it. Apps that are not installed or ship no offline
config yet are skipped with a line saying so.

Base = the same held-out data scored before any training: for the task apps the Trainer's evaluation at
step 0 (`--eval_on_start`: pretrained backbone, LoRA at init = identity, new head random), read from the
run's metrics.jsonl; for llm-chat the chat model with its adapter off (`llm-chat eval --with_base`).

Time: every app gets a short schedule passed as CLI overrides (DEMO_OVERRIDES, only the flags the
app's `train --help` lists) sized to a planned time (DEMO_BUDGET_MIN) so that the whole demo stays
around 20 min on 2 idle CPU cores. The wall-clock limit is --time_limit x that plan (default 3x: a
busy or slower machine still finishes); an app still running then is interrupted (it saves a
checkpoint) and reported as timed out. --budget_scale scales step caps and plans together.

Exit status: 0 every app that ran succeeded; 1 some app failed or timed out; 2 `make models` failed.
A missed bar is marked in the table, not in the exit status (the run itself worked).
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
BASE_MODEL_DIR = (
    "base_model"  # lora_shared.runs.BASE_MODEL_DIR: a run's saved random base (not imported: no torch)
)
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
    # One epoch (39 steps of 16): the 60-step run had 0.964 at its epoch-1 eval, 0.959 at the end.
    "text-classifier": {"max_steps": 39, "max_eval_samples": 400},
    # D-FINE (offline config), batch 8: AP50 0.746 after a 300-step run, 0.64 at step 250 of it (README); saves off.
    "vision-det": {"max_steps": 250, "max_eval_samples": 100, "save_strategy": "no"},
    # 200 steps (2.1 min idle) reached PCK@0.1 0.754, 500 steps 0.917 (3.8 min): 400 keeps a margin.
    "vision-pose": {"max_steps": 400, "max_eval_samples": 50},
    # Banking only (the keyword-match bar's set); no dropout: its masks cost CPU time, one epoch does not overfit.
    "llm-chat": {
        "dataset": "banking",
        "max_steps": 21,  # one epoch: 12 steps (0.57 epoch) gave +15.6 keyword points, 1 epoch +40 (compare)
        "learning_rate": 1e-3,
        "lora_dropout": 0.0,
        # LoRA on the upper 12 of 24 layers: backward stops there, ~27% cheaper steps; keyword match 0.406
        # where all 24 layers gave 0.375 (8 questions, README)
        "lora_layers": "12-23",
        "max_eval_samples": 8,
    },
}
DEFAULT_OVERRIDES: dict[str, object] = {"max_steps": 40}

# Apps whose headline metric comes from a separate `<app> eval --adapter_dir <run>` (it writes
# eval_metrics.json): llm-chat scores generated answers (keyword match), which `train` does not.
# `with_base` scores the chat model with its adapter off on the same questions: base_eval_* keys.
DEMO_EVAL: dict[str, dict[str, object]] = {
    "llm-chat": {"eval_tasks": "banking", "max_eval_items": 8, "max_new_tokens": 64, "with_base": True},
}

# Every other app gets its base score from an evaluation before the first step (Trainer's eval_on_start:
# a step-0 eval row in metrics.jsonl), on the same held-out split as the final one: it costs one eval
# pass, where a separate base run would cost a model load and, for some apps, is refused (max_steps 0).
BASE_OVERRIDES: dict[str, object] = {"eval_on_start": True}

# Planned minutes per app on 2 idle CPU cores: the fresh-clone `make demo` of 2026-12-01 (README), 19.1 min in
# all with `make models` up to date.
DEMO_BUDGET_MIN = {
    "vision-cls": 1.0,  # 0.5 measured
    "text-classifier": 3.5,  # 3.6: one epoch of Gemma-3-270M + three evals of 222 questions
    "vision-det": 4.5,  # 4.5: 250 D-FINE steps + evals of 100 images at start, epochs 1 and 2, end
    "vision-pose": 3.5,  # 3.2: 400 steps + evals
    "llm-chat": 7.5,  # 7.0: 21 steps (upper-half LoRA) + a batched generation eval (base and tuned)
}
DEFAULT_BUDGET_MIN = 3.0
# The caps --budget_scale multiplies: steps and how many samples/items are used. Not max_new_tokens or
# max_length: a longer answer would change what the metric measures, not how long the run is.
SCALED_CAP = re.compile(r"max_(steps|\w*samples|\w*items)")
TIME_LIMIT_FACTOR = 3.0  # wall-clock limit = factor x plan: a safety net, not the schedule
SIGINT_GRACE_S = 60  # after the limit: SIGINT (the app checkpoints and exits), then SIGKILL

COLUMNS = ["app", "model", "trainable %", "minutes", "base", "tuned", "bar", "met/missed"]


@dataclass(frozen=True)
class Bar:
    """What an app's headline metric must reach for the demo to count it as learned."""

    label: str  # the metric as the table shows it, e.g. "PCK@0.1"
    pattern: str  # regex the headline metric's name must match (a fallback metric is not judged)
    threshold: float
    relative: bool = False  # threshold is a gain over the base score, not an absolute value

    def text(self) -> str:
        return f"{self.label} >= " + (
            f"base + {self.threshold:.2f}" if self.relative else f"{self.threshold:.2f}"
        )

    def judge(self, metric: str | None, base: float | None, tuned: float | None) -> str:
        """Verdict: "met", or "missed" (saying why when the bar could not be measured)."""
        if tuned is None or metric is None or not re.fullmatch(self.pattern, metric, flags=re.IGNORECASE):
            return f"missed (no {self.label})"
        if self.relative and base is None:
            return "missed (no base score)"
        goal = self.threshold + (base if self.relative else 0.0)
        return "met" if tuned >= goal - 1e-9 else "missed"  # 1e-9: 0.5 - 0.3 is 0.19999999999999998


# Issue 16's bars on each app's headline metric (held-out data).
BARS: dict[str, Bar] = {
    "vision-cls": Bar("accuracy", r"accuracy", 0.95),
    "text-classifier": Bar("accuracy", r"accuracy", 0.95),
    "vision-det": Bar("AP50", r"(ap|map)[_@]?50", 0.5),
    "vision-pose": Bar("PCK@0.1", r"pck[_@]?0?\.?1(0)?", 0.8),
    "llm-chat": Bar("keyword match", r"(\w+_)?keyword_match", 0.20, relative=True),
}


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
    """CLI arguments for the overrides the app supports; step/sample/item caps are scaled by `scale` and
    never raise a smaller cap the app's own offline config already sets (`config`: that YAML's keys)."""
    args: list[str] = []
    for key, value in overrides.items():
        if key not in flags:
            continue
        if isinstance(value, bool):
            value = str(value).lower()  # HfArgumentParser's bool flags take "true" / "false"
        elif isinstance(value, int) and SCALED_CAP.fullmatch(key):
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


def headline_key(app: str, metrics: dict) -> str | None:
    """The metrics.json key of the app's headline metric (e.g. "eval_accuracy"), or None."""
    for pattern in HEADLINE.get(app, []) + FALLBACK_HEADLINE:
        for key, value in metrics.items():
            if re.fullmatch(pattern, key, flags=re.IGNORECASE) and isinstance(value, int | float):
                return key
    return None


def headline_metric(app: str, metrics: dict) -> tuple[str, float] | None:
    """(name, value) of the app's headline metric in its metrics.json, or None."""
    key = headline_key(app, metrics)
    return (key.removeprefix("eval_"), float(metrics[key])) if key else None


def base_metrics(run_dir: Path) -> dict:
    """The base model's scores on the run's held-out data, keyed like the tuned ones (eval_*):
    `base_eval_*` keys of eval_metrics.json (`eval --with_base`), else the step-0 eval row that
    `--eval_on_start` logged to metrics.jsonl before the first optimizer step. {} when neither exists."""
    extra = run_dir / "eval_metrics.json"
    if extra.is_file():
        scores = json.loads(extra.read_text())
        base = {k.removeprefix("base_"): v for k, v in scores.items() if k.startswith("base_eval_")}
        if base:
            return base
    jsonl = run_dir / "metrics.jsonl"
    if not jsonl.is_file():
        return {}
    for line in jsonl.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if row.get("step") != 0:
            return {}  # the run logged a trained step first: it did not evaluate on start
        if any(k.startswith("eval_") for k in row):
            return {k: v for k, v in row.items() if k.startswith("eval_")}
    return {}


def model_name(run_dir: Path) -> str:
    """Model of a run from its resolved config: `model_name_or_path` (last path part), or for apps that
    build a model from a config around a pretrained backbone (vision-det), `model_type + backbone`: their
    model_name_or_path is the run's own saved random base (`base_model`), a name that says nothing."""
    resolved = read_yaml(run_dir / "resolved_config.yaml")

    def short(value) -> str:
        return Path(str(value)).name or str(value) if value else ""

    name, backbone = short(resolved.get("model_name_or_path")), short(resolved.get("backbone"))
    if name == BASE_MODEL_DIR or (backbone and not name):
        # else the saved base's config.json names the architecture (resolved model_type is null there)
        model_type = resolved.get("model_type") or read_json(run_dir / BASE_MODEL_DIR / "config.json").get(
            "model_type"
        )
        name = " + ".join(filter(None, [str(model_type or ""), backbone])) or name
    return name or str(resolved.get("model_type") or "?")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
    """One table row: base -> tuned on the headline metric and whether it met the app's bar."""
    metrics = read_metrics(run_dir)
    key = headline_key(app, metrics)
    metric = key.removeprefix("eval_") if key else None
    tuned = float(metrics[key]) if key else None
    base = base_metrics(run_dir).get(key) if key else None
    base = float(base) if isinstance(base, int | float) else None
    bar = BARS.get(app)
    return {
        "app": app,
        "model": model_name(run_dir),
        "trainable %": _fmt(metrics.get("trainable_pct"), 2),
        "adapter MB": _fmt(metrics.get("adapter_mb"), 2),
        "minutes": f"{minutes:.1f}",
        "metric": metric or "n/a",
        "base": _fmt(base, 3),
        "tuned": _fmt(tuned, 3),
        "bar": bar.text() if bar else f"{metric or 'n/a'} (no bar)",
        "met/missed": bar.judge(metric, base, tuned) if bar else "-",
    }


def failed_row(app: str, minutes: float, why: str) -> dict:
    bar = BARS.get(app)
    return {
        "app": app,
        "model": "-",
        "trainable %": "-",
        "adapter MB": "-",
        "minutes": f"{minutes:.1f}",
        "metric": "n/a",
        "base": "-",
        "tuned": why,
        "bar": bar.text() if bar else "-",
        "met/missed": "missed" if bar else "-",
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
        if subprocess.call([sys.executable, "-m", "loraworks_models"]) != 0:
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
        base_from_eval = bool(DEMO_EVAL.get(app.name, {}).get("with_base"))
        overrides = app.overrides if base_from_eval else {**app.overrides, **BASE_OVERRIDES}
        extra = override_args(overrides, flags, args.budget_scale, own)
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
        # Never report a previous run's numbers (metrics.jsonl: its step-0 row is the base score).
        for stale in ("metrics.json", "eval_metrics.json", "metrics.jsonl"):
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
    judged = [r for r in rows if r["met/missed"] != "-"]
    if judged:
        met = sum(r["met/missed"] == "met" for r in judged)
        text += (
            f"\nBars met: {met} of {len(judged)}. base = the same held-out data before training "
            "(pretrained model, new head untrained; llm-chat: the chat model without adapter).\n"
        )
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
