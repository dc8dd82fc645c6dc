"""The web UI's run manager (serving/training.py): launch, poll, stop, resume, errors, without Gradio.

Process handling is tested on a stand-in app (`fakeapp`, written below: a loop that logs metrics.jsonl rows
and saves a checkpoint on SIGINT, as the real apps' InterruptCallback does) so it takes seconds; the real
apps' parsers check the one-line errors. The browser test launches a real `llm-chat --config tiny` run.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

FAKE_MAIN = r"""
import json, signal, sys, time
from pathlib import Path

argv = sys.argv[1:]
def flag(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default

out = Path(flag("--output_dir"))
data = flag("--data_files")
if data and not Path(data).exists():
    print(f"fakeapp train: error: --data_files {data}: not found; pass an existing file", file=sys.stderr)
    sys.exit(2)
out.mkdir(parents=True, exist_ok=True)
max_steps = int(flag("--max_steps", "3"))
start = 0
if "--resume" in argv:
    start = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
for step in range(start + 1, max_steps + 1):
    time.sleep(0.3)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
    if stop:
        (out / f"checkpoint-{step}").mkdir()
        print(f"fakeapp train: interrupted at step {step}: checkpoint saved", file=sys.stderr)
        sys.exit(130)
(out / "metrics.json").write_text(json.dumps({"train_loss": 1.0 / max_steps}))
print("done")
"""


@pytest.fixture()
def fakeapp(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "fakeapp"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.setenv("PYTHONPATH", str(pkg.parent))  # the child process finds it too
    return "fakeapp"


@pytest.fixture()
def runs(tmp_path):
    from llm_chat.serving.training import RunManager

    mgr = RunManager(tmp_path / "logs")
    yield mgr
    mgr.shutdown(timeout=5)


def _wait(runs, until, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        st = runs.status()
        if until(st):
            return st
        assert time.time() < deadline, st
        time.sleep(0.1)


def test_launch_polls_live_metrics_then_finishes(fakeapp, runs, tmp_path):
    out = tmp_path / "run"
    run = runs.launch(fakeapp, ["train", "--config", "tiny", "--output_dir", str(out), "--max_steps", "4"])
    assert run.max_steps == 4 and run.proc.pid
    mid = _wait(runs, lambda s: s["step"] >= 1)
    assert mid["state"] in ("running", "finished") and mid["rows"][0] == {"step": 1, "loss": 1.0}
    st = _wait(runs, lambda s: s["state"] == "finished")
    assert [r["step"] for r in st["rows"]] == [1, 2, 3, 4] and st["loss"] == 0.25
    assert st["adapter_dir"] == str(out) and st["metrics"] == {"train_loss": 0.25}
    assert st["returncode"] == 0 and "error" not in st and st["elapsed_s"] > 0
    assert st["log"].splitlines()[0] == f"$ fakeapp train --config tiny --output_dir {out} --max_steps 4"
    assert "done" in st["log"]


def test_stop_sends_sigint_and_resume_continues_from_the_checkpoint(fakeapp, runs, tmp_path):
    out = tmp_path / "run"
    runs.launch(fakeapp, ["train", "--config", "tiny", "--output_dir", str(out), "--max_steps", "30"])
    _wait(runs, lambda s: s["step"] >= 2)
    assert runs.stop().startswith("stopping fakeapp")
    st = _wait(runs, lambda s: s["state"] not in ("running", "stopping"))
    assert st["state"] == "stopped" and st["returncode"] == 130
    stopped_at = st["step"]
    assert stopped_at < 30 and (out / f"checkpoint-{stopped_at}").is_dir()
    assert st["error"] == f"fakeapp train: interrupted at step {stopped_at}: checkpoint saved"

    run = runs.resume()
    assert run.argv[-1] == "--resume" and run.argv.count("--resume") == 1
    st = _wait(runs, lambda s: s["state"] == "finished", timeout=90)
    steps = [r["step"] for r in st["rows"]]
    assert steps == list(range(1, 31))  # no step lost or repeated across the stop
    assert runs.stop() == "no run is going"


def test_a_second_launch_while_one_runs_is_refused(fakeapp, runs, tmp_path):
    from lora_shared.errors import UsageError

    first = runs.launch(
        fakeapp, ["train", "--config", "x", "--output_dir", str(tmp_path / "a"), "--max_steps", "50"]
    )
    with pytest.raises(UsageError, match=r"a run is already going \(fakeapp train .*pid \d+\); stop it"):
        runs.launch(fakeapp, ["train", "--config", "x", "--output_dir", str(tmp_path / "b")])
    assert runs.run is first and first.proc.poll() is None  # the first one keeps running
    assert not (tmp_path / "b").exists()


def test_the_apps_exit_2_line_is_the_runs_error(fakeapp, runs, tmp_path):
    missing = tmp_path / "nope.jsonl"
    runs.launch(
        fakeapp, ["train", "--config", "x", "--output_dir", str(tmp_path / "r"), "--data_files", str(missing)]
    )
    st = _wait(runs, lambda s: s["state"] != "running")
    assert st["state"] == "failed" and st["returncode"] == 2
    assert st["error"] == f"fakeapp train: error: --data_files {missing}: not found; pass an existing file"


def test_shutdown_stops_a_running_child(fakeapp, runs, tmp_path):
    run = runs.launch(
        fakeapp, ["train", "--config", "x", "--output_dir", str(tmp_path / "r"), "--max_steps", "500"]
    )
    _wait(runs, lambda s: s["step"] >= 1)
    runs.shutdown(timeout=20)
    assert run.proc.poll() == 130  # SIGINT: it saved its checkpoint and left


# ------------------------------------------------------------------------------------------------------------
# Real apps: argv from the knobs, bad input as the CLI's own line (in-process, no model built)
# ------------------------------------------------------------------------------------------------------------
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_train_argv_maps_the_knobs():
    from llm_chat.serving.training import train_argv

    knobs = {
        "data_path": "data/train.jsonl",
        "lora_target_modules": "q_proj, v_proj",
        "lora_r": " 8 ",
        "learning_rate": "",
    }
    assert train_argv("llm-chat", "tiny", "/tmp/o", knobs, "--max_length 512") == [
        "train", "--config", "tiny", "--output_dir", "/tmp/o",
        "--data_files", "data/train.jsonl", "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "8",
        "--max_length", "512",
    ]  # fmt: skip
    if _installed("vision_cls"):  # a folder-of-images app takes the data path as --data_dir
        assert train_argv("vision-cls", "tiny", "/tmp/o", {"data_path": "data/imgs"})[-2:] == [
            "--data_dir",
            "data/imgs",
        ]


@pytest.mark.parametrize("app", ["llm-chat", "text-classifier"])
def test_bad_input_is_refused_with_the_clis_line_before_any_process(app, runs, tmp_path):
    from llm_chat.serving.training import APPS, bundled_configs, train_argv
    from lora_shared.errors import UsageError

    if not _installed(APPS[app]):
        pytest.skip(f"{app} is not installed in this environment")
    assert {"tiny", "default"} <= set(bundled_configs(app))
    out = str(tmp_path / "r")
    with pytest.raises(UsageError) as e:
        runs.launch(app, train_argv(app, "tiny", out, extra="--learnig_rate 1"))
    assert (
        str(e.value)
        == "unknown flag --learnig_rate; did you mean --learning_rate? (`--help` lists the flags)"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus_key: 1\n")
    with pytest.raises(UsageError, match=rf"^{bad}: unknown config key\(s\) 'bogus_key'"):
        runs.launch(app, train_argv(app, str(bad), out))
    with pytest.raises(UsageError, match=r"^no bundled config named 'nope'"):
        runs.launch(app, train_argv(app, "nope", out))
    assert runs.run is None and not Path(out).exists()  # nothing was started


def test_validate_returns_the_exact_cli_line(tmp_path):
    from llm_chat.cli import main
    from llm_chat.serving.training import train_argv, validate

    argv = train_argv("llm-chat", "tiny", str(tmp_path / "r"), {"learning_rate": "abc"})
    line = validate("llm-chat", argv)
    assert line.startswith("llm-chat train: error: ") and "--learning_rate" in line and "'abc'" in line
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    assert err.getvalue().strip().splitlines()[-1] == line  # the page shows what the terminal would


def test_read_metrics_skips_a_half_written_line(tmp_path):
    from llm_chat.serving.training import read_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + '{"step": 2, "lo')
    assert read_metrics(p) == [{"step": 1, "loss": 2.0}]
    assert read_metrics(tmp_path / "missing.jsonl") == []
