"""`eval`: the multi-task set of the reference system (seed 004), its test modes (tasks, interactive,
accuracy, sequence), base-only scoring and the base/tuned metrics file."""

import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest
from llm_chat import predict as P
from llm_chat.cli import main
from llm_chat.data import builtin_path, read_dialogs

PKG = Path(__file__).resolve().parents[1]
SCENES = {"数据平台相关问题", "通用问题", "无关问题"}  # seed 004's labels, verbatim
QTYPES = {"问题回答", "任务处理"}


@pytest.fixture(scope="module")
def make_data():
    spec = importlib.util.spec_from_file_location("make_data", PKG / "scripts" / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def multitask():
    return {split: read_dialogs(builtin_path("multitask", split), "openai")[0] for split in ("train", "test")}


def _input(record) -> str:
    return record["messages"][0]["content"].split("\n输入: ", 1)[1]


# ---------------------------------------------------------------------------------------------- the data
def test_multitask_uses_the_reference_prompt_format_and_labels(multitask, make_data):
    assert make_data.MT_TASKS == P.MT_TASKS  # the data and the interactive mode build the same prompts
    for records in multitask.values():
        for r in records:  # read_dialogs validated the roles; the format is seed 004's: no system prompt
            assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
            user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
            assert re.fullmatch(r"任务: (\S+)\n输入: (.+)", user, re.S), user
            assert user.startswith(f"任务: {P.MT_TASKS[r['task']]}\n输入: ") and "输出" not in user
            if r["task"] == "scene_cls":
                assert answer in SCENES and set(r["labels"]) == SCENES
            elif r["task"] == "qtype_cls":
                assert answer in QTYPES and set(r["labels"]) == QTYPES
            elif r["task"] == "filename_extract":
                assert answer and answer in _input(r)  # the name as the user wrote it
            else:
                assert all(k in answer for k in r["keywords"]), r["keywords"]
    test = multitask["test"]
    assert {r["messages"][1]["content"] for r in test if r["task"] == "scene_cls"} == SCENES
    assert {r["messages"][1]["content"] for r in test if r["task"] == "qtype_cls"} == QTYPES
    # Seed 004's own examples come out of the templates with their labels and answers.
    pattern, qtype = make_data.DP_TEMPLATES[0]
    assert pattern.format(data="西安市地类图斑") == "我有一批西安市地类图斑的数据，怎么进行发服务"
    assert qtype == "问题回答"
    assert make_data.DP_QA[0][0][0] == "数据清洗流程"
    assert make_data.DP_QA[0][2].startswith("数据清洗流程需要先配置清洗规则，再配置清洗方案")


def test_multitask_split_shares_no_template_and_is_big_enough(multitask):
    train, test = multitask["train"], multitask["test"]
    assert not {r["template"] for r in train} & {r["template"] for r in test}
    assert not {_input(r) for r in train} & {_input(r) for r in test}
    assert 250 <= len(train) and 60 <= len(test) <= 100
    for task in P.MT_TASKS:
        assert sum(r["task"] == task for r in test) >= 15, task


# ---------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize(
    "flags, match",
    [
        (["--eval_mode", "everything"], "--eval_mode 'everything' is not one of accuracy, tasks"),
        (["--base_only", "true", "--with_base", "true"], "exclude each other"),
        (["--examples_per_task", "0"], "--examples_per_task 0: must be 1 or more"),
        ([], "--base_only true"),  # no adapter: says how to score the base model instead
    ],
)
def test_bad_eval_flags_exit_2_with_one_line(flags, match, capsys, tmp_path):
    assert main(["eval", "--config", "tiny", "--output_dir", str(tmp_path), *flags]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if " INFO " not in x]  # log lines aside
    assert len(err) == 1 and err[0].startswith("llm-chat eval: error:") and match in err[0], err
    assert not list(tmp_path.iterdir())


def test_compare_without_adapter_names_base_only(capsys):
    assert main(["compare", "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "--adapter_dir" in err and "--base_only true" in err


# ---------------------------------------------------------------------------------------------- base only
def test_base_only_eval_writes_base_keys(tmp_path, capsys):
    args = ["eval", "--config", "tiny", "--base_only", "true", "--output_dir", str(tmp_path)]
    assert main([*args, "--eval_tasks", "multitask", "--max_eval_items", "6", "--max_new_tokens", "3"]) == 0
    # Only the base model was scored: its own files, so a run's eval_metrics.json is never overwritten.
    assert not (tmp_path / "eval_metrics.json").exists()
    metrics = json.loads((tmp_path / "base_eval_metrics.json").read_text())
    assert metrics and all(k.startswith("base_eval_") for k in metrics)
    assert "base_eval_multitask_perplexity" in metrics
    report = (tmp_path / "base_eval_report.md").read_text()
    assert "| task | set | n | metric | base |" in report and "random tiny qwen2" in report
    rows = [json.loads(x) for x in (tmp_path / "base_eval_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("prediction" in r and "base_prediction" not in r for r in rows)


def _patch_answers(monkeypatch, fake) -> None:
    """Route predict.answer and its batched form (eval's path) through `fake`."""
    monkeypatch.setattr(P, "answer", fake)
    monkeypatch.setattr(
        P, "answer_many", lambda m, t, prompts, batch_size=8, **kw: [fake(m, t, p) for p in prompts]
    )


def _oracle(answer_of):
    """A stand-in for predict.answer whose text is answer_of(user content)."""

    def fake(model, tokenizer, messages, **kw):
        text = answer_of(messages[-1]["content"])
        return {"text": text, "completion_tokens": 1, "finish_reason": "stop", "seconds": 0.01}

    return fake


def test_accuracy_scores_known_answers(monkeypatch, tmp_path, multitask):
    """Right answers score 1 on every task; one constant label scores its share of the items."""
    test = multitask["test"][:20]
    expected = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in test}
    _patch_answers(monkeypatch, _oracle(expected.get))
    args = ["eval", "--config", "tiny", "--base_only", "true", "--eval_tasks", "multitask"]
    args += ["--max_eval_items", "20", "--output_dir", str(tmp_path)]
    assert main(args) == 0
    m = json.loads((tmp_path / "base_eval_metrics.json").read_text())
    for task in P.MT_TASKS:
        for k, v in m.items():
            if k.startswith(f"base_eval_{task}_"):
                assert v == 1.0, k
    assert m["base_eval_classification_accuracy"] == 1.0

    _patch_answers(monkeypatch, _oracle(lambda _: "无关问题"))
    assert main([*args, "--output_dir", str(tmp_path / "const")]) == 0
    m = json.loads((tmp_path / "const" / "base_eval_metrics.json").read_text())
    scene = [r["messages"][1]["content"] for r in test if r["task"] == "scene_cls"]
    assert m["base_eval_scene_cls_accuracy"] == round(scene.count("无关问题") / len(scene), 4)
    assert m["base_eval_qtype_cls_accuracy"] == 0.0


def test_merge_scores_drops_a_stale_base_value(tmp_path):
    from llm_chat.evaluate import merge_scores

    path = tmp_path / "eval_metrics.json"
    both = {"eval_a_accuracy": 0.5, "base_eval_a_accuracy": 0.25, "base_eval_b_accuracy": 0.1}
    merge_scores(path, both, ("base", "tuned"))
    merge_scores(path, {"eval_a_accuracy": 0.75}, ("tuned",))
    # The old base value of task a came from another run: dropped; task b's pair was not re-scored: kept.
    assert json.loads(path.read_text()) == {"eval_a_accuracy": 0.75, "base_eval_b_accuracy": 0.1}


# ---------------------------------------------------------------------------------------------- test modes
def test_tasks_mode_shows_each_task_and_writes_nothing(tmp_path, capsys):
    args = ["eval", "--config", "tiny", "--base_only", "true", "--eval_mode", "tasks", "--eval_tasks"]
    args += ["multitask", "--examples_per_task", "2", "--max_new_tokens", "2", "--output_dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for task, name in P.MT_TASKS.items():
        assert f"## multitask: {task} ({name})" in out
    assert out.count("预期: ") == 8 and out.count("\nbase: ") == 8
    assert not list(tmp_path.iterdir())


def test_interactive_mode_picks_tasks_from_stdin(monkeypatch, capsys):
    seen = []

    def fake(model, tokenizer, messages, **kw):
        seen.append(messages)
        return {
            "text": f"answer {len(seen)}",
            "completion_tokens": 1,
            "finish_reason": "stop",
            "seconds": 0.0,
        }

    monkeypatch.setattr(P, "answer", fake)
    lines = [
        "数据清洗流程是什么？",  # the first task until one is picked
        "/task 2",
        "帮我把西安市地类图斑发布成服务",
        "/task 文件名称提取",
        "我有一批西安市地类图斑的数据，怎么进行发服务",
        "/task 9",
        "",
        "/task 0",
        "你好",
        "/exit",
        "never answered",
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["eval", "--config", "tiny", "--base_only", "true", "--eval_mode", "interactive"]) == 0
    assert [m[-1]["content"] for m in seen] == [
        "任务: 问题场景分类\n输入: 数据清洗流程是什么？",
        "任务: 问题类型分类\n输入: 帮我把西安市地类图斑发布成服务",
        "任务: 文件名称提取\n输入: 我有一批西安市地类图斑的数据，怎么进行发服务",
        "你好",  # task 0: free chat, the line as typed
    ]
    assert all(len(m) == 1 for m in seen)  # no system prompt, as in seed 004
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["answer 1", "answer 2", "answer 3", "answer 4"]
    assert "unknown task '9'" in captured.err


def test_sequence_mode_runs_tasks_accuracy_then_interactive(monkeypatch, tmp_path, capsys):
    _patch_answers(monkeypatch, _oracle(lambda _: "数据平台相关问题"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    args = ["eval", "--config", "tiny", "--base_only", "true", "--eval_mode", "sequence", "--eval_tasks"]
    args += ["multitask", "--examples_per_task", "1", "--max_eval_items", "8", "--output_dir", str(tmp_path)]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    # tasks first (one example per task), then the accuracy table, then the interactive answer.
    assert out.index("## multitask: scene_cls") < out.index("| task | set | n | metric |")
    assert out.rstrip().endswith("数据平台相关问题") and "interactive" in captured.err
    assert (tmp_path / "base_eval_metrics.json").is_file()
