"""`make demo` (tools/demo.py): discovery, overrides, headline metrics, base -> tuned, bars, summary.

Fast tests run fake apps (a tiny argparse CLI per app) and fake run dirs with known metrics. The one
`slow` test runs the demo's own plan for vision-cls and vision-det on the real offline MobileNetV2 (`make models`).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_demo():
    if "demo" in sys.modules:
        return sys.modules["demo"]
    spec = importlib.util.spec_from_file_location("demo", ROOT / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


demo = _load_demo()

FAKE_CLI = """
import argparse, json, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("verb")
p.add_argument("--config")
p.add_argument("--output_dir")
p.add_argument("--max_steps", type=int)
p.add_argument("--sleep", type=float, default=0)
p.add_argument("--adapter_dir")
p.add_argument("--max_eval_items", type=int)
p.add_argument("--eval_on_start")
p.add_argument("--with_base")
a = p.parse_args()
if a.verb == "eval":  # like llm-chat: generation metrics land in eval_metrics.json next to the adapter
    path = pathlib.Path(a.adapter_dir) / "eval_metrics.json"
    scores = {"eval_banking_keyword_match": a.max_eval_items / 4}
    if a.with_base == "true":  # the chat model with its adapter off, on the same questions
        scores["base_eval_banking_keyword_match"] = 0.5
    path.write_text(json.dumps(scores))
    sys.exit(0)
out = pathlib.Path(a.output_dir)
out.mkdir(parents=True, exist_ok=True)
print("eval_on_start", a.eval_on_start)
rows = [{"step": 0, "epoch": 0, "eval_loss": 2.0, "eval_accuracy": 0.2}] if a.eval_on_start == "true" else []
rows += [{"step": 5, "epoch": 0.5, "loss": 1.0}]
with open(out / "metrics.jsonl", "a") as f:  # appends, as MetricsJsonlCallback does
    f.write("".join(json.dumps(r) + "\\n" for r in rows))
time.sleep(a.sleep)
if a.max_steps == 13:
    sys.exit(3)
(out / "resolved_config.yaml").write_text("# model\\nmodel_name_or_path: /models/tiny-base\\n")
(out / "metrics.json").write_text(json.dumps(
    {"eval_loss": 0.5, "eval_accuracy": 0.25 + a.max_steps / 100, "trainable_pct": 1.234, "adapter_mb": 0.5}))
print("steps", a.max_steps, "\\r done")
"""


def _fake_app(packages: Path, name: str, offline: bool = True, cli: bool = True) -> None:
    module = name.replace("-", "_")
    src = packages / name / "src" / module
    (src / "configs").mkdir(parents=True)
    (packages / name / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    (src / "__init__.py").write_text("")
    if cli:
        (src / "cli.py").write_text("")
        (src / "__main__.py").write_text(FAKE_CLI)
    if offline:
        (src / "configs" / "offline.yaml").write_text("num_train_epochs: 2\n")


def _fake_run(run: Path, metrics: dict, jsonl: list[dict] | None = None, eval_metrics: dict | None = None):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({"trainable_pct": 2.5, **metrics}))
    if jsonl is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jsonl))
    if eval_metrics is not None:
        (run / "eval_metrics.json").write_text(json.dumps(eval_metrics))
    return run


# ---------------------------------------------------------------------------------------------
# Headline metric, model column, overrides, discovery
# ---------------------------------------------------------------------------------------------


def test_demo_headline_metric_per_app():
    assert demo.headline_metric("vision-cls", {"eval_loss": 0.1, "eval_accuracy": 0.97}) == ("accuracy", 0.97)
    assert demo.headline_metric("vision-det", {"eval_map": 0.2, "eval_AP50": 0.41}) == ("AP50", 0.41)
    assert demo.headline_metric("vision-det", {"eval_map_50": 0.4}) == ("map_50", 0.4)
    assert demo.headline_metric("vision-pose", {"eval_pck@0.1": 0.7, "eval_pck@0.2": 0.9}) == ("pck@0.1", 0.7)
    assert demo.headline_metric("llm-chat", {"eval_loss": 2.0, "eval_keyword_match": 0.6}) == (
        "keyword_match",
        0.6,
    )
    assert demo.headline_metric("llm-chat", {"eval_loss": 2.0}) == ("loss", 2.0)
    assert demo.headline_metric("some-new-app", {"eval_f1": 0.5}) == ("f1", 0.5)
    assert demo.headline_metric("vision-cls", {"train_loss": 1.0}) is None
    # base_eval_* keys (llm-chat eval --with_base) are never the tuned headline
    assert demo.headline_key("llm-chat", {"base_eval_banking_keyword_match": 0.1}) is None


def test_demo_model_column(tmp_path):
    (tmp_path / "resolved_config.yaml").write_text("# model\nmodel_name_or_path: /m/gemma-3-270m\n")
    assert demo.model_name(tmp_path) == "gemma-3-270m"
    (tmp_path / "resolved_config.yaml").write_text(
        "# model\nmodel_name_or_path: null\nmodel_type: conditional_detr\nbackbone: mobilenet_v2-imagenet\n"
    )
    assert demo.model_name(tmp_path) == "conditional_detr + mobilenet_v2-imagenet"
    (tmp_path / "resolved_config.yaml").unlink()
    assert demo.model_name(tmp_path) == "?"


def test_demo_model_column_names_vision_det_real_model_not_its_saved_base(tmp_path):
    # What vision-det's run writes: model_name_or_path is the run's own saved random base, model_type is
    # null, and only base_model/config.json names the architecture.
    run = tmp_path / "vision-det"
    (run / "base_model").mkdir(parents=True)
    (run / "base_model" / "config.json").write_text(json.dumps({"model_type": "conditional_detr"}))
    (run / "resolved_config.yaml").write_text(
        f"# DetModelArgs\nmodel_name_or_path: {run / 'base_model'}\nmodel_type: null\n"
        "image_size: 128\nbackbone: mobilenet_v2-imagenet\nbackbone_stage: stage3\n"
    )
    assert demo.model_name(run) == "conditional_detr + mobilenet_v2-imagenet"
    # a random tiny base without a backbone: its architecture, not "base_model"
    (run / "resolved_config.yaml").write_text(f"model_name_or_path: {run / 'base_model'}\n")
    assert demo.model_name(run) == "conditional_detr"


def test_demo_overrides_only_pass_flags_the_app_has():
    flags = demo.supported_flags("usage: x train [--max_steps MAX_STEPS] [--output_dir DIR]")
    assert {"max_steps", "output_dir"} <= flags
    args = demo.override_args({"max_steps": 40, "max_eval_samples": 50, "learning_rate": 1e-3}, flags, 1.5)
    assert args == ["--max_steps", "60"]
    # Real apps: flags come from their config dataclasses (no subprocess).
    assert {"max_steps", "max_eval_samples", "image_size", "output_dir"} <= demo.app_flags("vision_cls")
    # A tighter cap in the app's own offline config wins; a looser one is overridden.
    assert demo.override_args({"max_steps": 40}, flags, 1.0, {"max_steps": 25}) == []
    assert demo.override_args({"max_steps": 40}, flags, 1.0, {"max_steps": 500}) == ["--max_steps", "40"]


def test_demo_overrides_write_bools_for_hf_parser_and_scale_only_step_and_sample_caps():
    flags = {"with_base", "max_new_tokens", "max_eval_items", "max_length"}
    overrides = {"with_base": True, "max_new_tokens": 64, "max_eval_items": 8, "max_length": 512}
    assert demo.override_args(overrides, flags, 2.0) == [
        "--with_base",
        "true",
        "--max_new_tokens",
        "64",  # answer length is what the metric measures: not scaled
        "--max_eval_items",
        "16",
        "--max_length",
        "512",
    ]


def test_demo_base_scores_come_from_flags_every_task_app_has():
    # The step-0 base row needs Trainer's eval_on_start in each task app's train flags, and llm-chat's
    # base needs `eval --with_base`: a renamed flag would silently drop the base column.
    for module in ("vision_cls", "text_classifier", "vision_det", "vision_pose"):
        assert "eval_on_start" in demo.app_flags(module), module
    assert demo.DEMO_EVAL["llm-chat"]["with_base"] is True
    assert "with_base" in demo.app_flags("llm_chat", "eval")


def test_demo_discovers_apps_and_says_why_it_skips(tmp_path, monkeypatch):
    packages = tmp_path / "packages"
    _fake_app(packages, "demo-ready")
    _fake_app(packages, "demo-nooffline", offline=False)
    _fake_app(packages, "demo-nocli", cli=False)
    monkeypatch.syspath_prepend(str(packages / "demo-ready" / "src"))
    monkeypatch.syspath_prepend(str(packages / "demo-nooffline" / "src"))
    monkeypatch.syspath_prepend(str(packages / "demo-nocli" / "src"))
    apps = {a.name: a for a in demo.discover_apps(packages, order=("demo-missing", "demo-ready"))}
    assert list(apps) == ["demo-missing", "demo-ready", "demo-nocli", "demo-nooffline"]
    assert apps["demo-ready"].skip_reason is None
    assert "not in this checkout" in apps["demo-missing"].skip_reason
    assert "no offline config" in apps["demo-nooffline"].skip_reason
    assert "not implemented" in apps["demo-nocli"].skip_reason
    assert apps["demo-ready"].overrides == demo.DEFAULT_OVERRIDES


# ---------------------------------------------------------------------------------------------
# base -> tuned and the bars
# ---------------------------------------------------------------------------------------------


def test_demo_base_is_the_step0_eval_row_tuned_the_final_metrics(tmp_path):
    run = _fake_run(
        tmp_path / "vision-cls",
        {"eval_accuracy": 0.975, "eval_loss": 0.1},
        jsonl=[
            {"step": 0, "epoch": 0, "eval_loss": 1.6, "eval_accuracy": 0.21, "eval_runtime": 1.0},
            {"step": 5, "epoch": 0.3, "loss": 1.2},
            {"step": 15, "epoch": 1.0, "eval_loss": 0.1, "eval_accuracy": 0.9},  # a later eval: not the base
        ],
    )
    assert demo.base_metrics(run) == {"eval_loss": 1.6, "eval_accuracy": 0.21, "eval_runtime": 1.0}
    row = demo.summary_row("vision-cls", run, 2.34)
    assert (row["base"], row["tuned"], row["bar"], row["met/missed"]) == (
        "0.210",
        "0.975",
        "accuracy >= 0.95",
        "met",
    )
    assert row["trainable %"] == "2.50" and row["minutes"] == "2.3"


def test_demo_without_an_eval_on_start_row_there_is_no_base(tmp_path):
    # A run whose first row is a trained step (an app without eval_on_start) has no base; a later eval
    # row must not pass for one. The absolute bar is still judged.
    run = _fake_run(
        tmp_path / "text-classifier",
        {"eval_accuracy": 0.9},
        jsonl=[{"step": 5, "loss": 1.0}, {"step": 10, "eval_accuracy": 0.5}],
    )
    assert demo.base_metrics(run) == {}
    row = demo.summary_row("text-classifier", run, 1.0)
    assert (row["base"], row["tuned"], row["met/missed"]) == ("-", "0.900", "missed")
    (run / "metrics.jsonl").unlink()
    assert demo.base_metrics(run) == {}


def test_demo_llm_chat_base_is_the_with_base_eval(tmp_path):
    run = _fake_run(
        tmp_path / "llm-chat",
        {"eval_loss": 1.5},
        jsonl=[{"step": 5, "loss": 3.0}],
        eval_metrics={
            "eval_banking_keyword_match": 0.55,
            "base_eval_banking_keyword_match": 0.3,
            "base_eval_banking_perplexity": 9.0,
        },
    )
    assert demo.base_metrics(run) == {"eval_banking_keyword_match": 0.3, "eval_banking_perplexity": 9.0}
    row = demo.summary_row("llm-chat", run, 7.0)
    assert (row["base"], row["tuned"], row["bar"]) == ("0.300", "0.550", "keyword match >= base + 0.20")
    assert row["met/missed"] == "met"
    # eval without --with_base: no base, so the relative bar cannot be met
    (run / "eval_metrics.json").write_text(json.dumps({"eval_banking_keyword_match": 0.55}))
    row = demo.summary_row("llm-chat", run, 7.0)
    assert (row["base"], row["met/missed"]) == ("-", "missed (no base score)")


@pytest.mark.parametrize(
    "app, metric, base, tuned, verdict",
    [
        ("vision-cls", "accuracy", 0.2, 0.95, "met"),
        ("vision-cls", "accuracy", 0.2, 0.949, "missed"),
        ("text-classifier", "accuracy", 0.33, 0.978, "met"),
        ("text-classifier", "accuracy", 0.33, 0.9, "missed"),
        ("vision-det", "AP50", 0.0, 0.5, "met"),
        ("vision-det", "map_50", 0.0, 0.49, "missed"),
        ("vision-det", "AP", 0.0, 0.9, "missed (no AP50)"),  # the fallback metric is not the bar's
        ("vision-pose", "pck@0.1", 0.04, 0.8, "met"),
        ("vision-pose", "pck@0.1", 0.04, 0.799, "missed"),
        ("vision-pose", "pck@0.05", 0.04, 0.9, "missed (no PCK@0.1)"),
        # relative: +0.20 over the base, exact in decimal but not in binary floats (0.5 - 0.3 < 0.2)
        ("llm-chat", "banking_keyword_match", 0.3, 0.5, "met"),
        ("llm-chat", "banking_keyword_match", 0.3, 0.49, "missed"),
        ("llm-chat", "banking_keyword_match", 0.7, 0.8, "missed"),  # above 0.5 but only +0.10
        ("llm-chat", "banking_keyword_match", None, 0.9, "missed (no base score)"),
        ("llm-chat", "loss", 2.0, 1.0, "missed (no keyword match)"),  # eval failed: loss fallback
        ("vision-cls", None, None, None, "missed (no accuracy)"),
    ],
)
def test_demo_bars(app, metric, base, tuned, verdict):
    assert demo.BARS[app].judge(metric, base, tuned) == verdict


def test_demo_bars_are_issue_16s():
    assert {app: bar.text() for app, bar in demo.BARS.items()} == {
        "vision-cls": "accuracy >= 0.95",
        "text-classifier": "accuracy >= 0.95",
        "vision-det": "AP50 >= 0.50",
        "vision-pose": "PCK@0.1 >= 0.80",
        "llm-chat": "keyword match >= base + 0.20",
    }


def test_demo_failed_app_misses_its_bar():
    row = demo.failed_row("vision-det", 1.25, "failed (exit 3)")
    assert (row["tuned"], row["bar"], row["met/missed"]) == ("failed (exit 3)", "AP50 >= 0.50", "missed")
    assert demo.failed_row("new-app", 1.0, "x")["met/missed"] == "-"


# ---------------------------------------------------------------------------------------------
# main: fake apps end to end
# ---------------------------------------------------------------------------------------------


def test_demo_main_runs_apps_and_prints_one_table(tmp_path, monkeypatch, capsys):
    packages = tmp_path / "packages"
    names = ("demo-good", "demo-plain", "demo-bad", "demo-slow")
    for name in names:
        _fake_app(packages, name)
        monkeypatch.syspath_prepend(str(packages / name / "src"))
    _fake_app(packages, "demo-later", offline=False)
    monkeypatch.syspath_prepend(str(packages / "demo-later" / "src"))
    monkeypatch.setenv("PYTHONPATH", ":".join(str(packages / n / "src") for n in names))
    monkeypatch.setattr(demo, "PACKAGES", packages)
    monkeypatch.setattr(demo, "APP_ORDER", ("demo-good",))
    monkeypatch.setitem(demo.DEMO_OVERRIDES, "demo-bad", {"max_steps": 13})  # the fake exits 3
    monkeypatch.setitem(demo.DEMO_OVERRIDES, "demo-slow", {"max_steps": 5, "sleep": 30})
    monkeypatch.setitem(demo.DEMO_BUDGET_MIN, "demo-slow", 0.5 / 60)  # x3 = 1.5 s limit
    monkeypatch.setattr(demo, "SIGINT_GRACE_S", 5)
    # demo-good: like llm-chat (a separate eval scores the tuned and the base model)
    monkeypatch.setitem(
        demo.DEMO_EVAL, "demo-good", {"max_eval_items": 3, "eval_tasks": "x", "with_base": True}
    )
    monkeypatch.setitem(demo.HEADLINE, "demo-good", demo.HEADLINE["llm-chat"])
    monkeypatch.setitem(demo.BARS, "demo-good", demo.BARS["llm-chat"])
    # demo-plain: like a task app (base = the step-0 eval row; 0.65 < 0.95)
    monkeypatch.setitem(demo.BARS, "demo-plain", demo.BARS["vision-cls"])
    monkeypatch.setitem(demo.BARS, "demo-bad", demo.BARS["vision-det"])
    out = tmp_path / "demo"
    (out / "demo-plain").mkdir(parents=True)
    # a previous demo's log: its step-0 row must not become this run's base
    (out / "demo-plain" / "metrics.jsonl").write_text('{"step": 0, "eval_accuracy": 0.99}\n')

    code = demo.main(["--skip_models", "--output_dir", str(out)])
    text = capsys.readouterr().out
    assert code == 1  # one app failed, one timed out; a missed bar does not change the exit status
    assert "demo-later: skipped (no offline config yet" in text
    summary = (out / "summary.md").read_text()
    assert summary in text
    rows = {r["app"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    good = rows["demo-good"]
    # train's metrics.json + the separate eval's keyword match and base (only flags the fake has were passed)
    assert good["model"] == "tiny-base" and good["metric"] == "banking_keyword_match"
    assert (good["base"], good["tuned"], good["met/missed"]) == ("0.500", "0.750", "met")
    assert good["trainable %"] == "1.23" and good["adapter MB"] == "0.50"
    plain = rows["demo-plain"]
    assert (plain["base"], plain["tuned"], plain["bar"], plain["met/missed"]) == (
        "0.200",
        "0.650",
        "accuracy >= 0.95",
        "missed",
    )
    assert rows["demo-bad"]["tuned"] == "failed (exit 3)" and rows["demo-bad"]["met/missed"] == "missed"
    assert rows["demo-slow"]["tuned"].startswith("timed out")
    assert float(rows["demo-slow"]["minutes"]) < 0.5
    assert "steps 40" in (out / "demo-good.log").read_text()  # DEFAULT_OVERRIDES reached the app
    # eval_on_start only where the base is not scored by a separate eval
    assert "eval_on_start true" in (out / "demo-plain.log").read_text()
    assert "eval_on_start None" in (out / "demo-good.log").read_text()
    header = summary.splitlines()[2]
    assert [c.strip() for c in header.strip("|").split("|")] == demo.COLUMNS
    assert "Bars met: 1 of 3" in summary and "Total: " in summary
    assert "demo-later (no offline config" in summary


# ---------------------------------------------------------------------------------------------
# slow: the demo's real plan for one app
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("app", "model"),
    [("vision-cls", "mobilenet_v2-imagenet"), ("vision-det", "d_fine + mobilenet_v2-imagenet")],
)
def test_demo_app_meets_its_bar(tmp_path, app, model):
    from lora_shared.models import models_dir

    if not (models_dir() / "mobilenet_v2-imagenet").is_dir():
        pytest.skip(f"needs `make models` (no {models_dir() / 'mobilenet_v2-imagenet'})")
    cmd = [sys.executable, str(ROOT / "tools" / "demo.py"), "--only", app, "--skip_models"]
    proc = subprocess.run(
        [*cmd, "--output_dir", str(tmp_path)], capture_output=True, text=True, timeout=1800, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert row["model"] == model
    assert row["met/missed"] == "met", row
    assert float(row["base"]) < float(row["tuned"])  # the base is the untrained head, scored before step 1
