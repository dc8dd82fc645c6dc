"""`compare`: overall score, the per-question win / tie / loss tally on hand-made answers, base-only runs."""

import json
from contextlib import contextmanager

import pytest
from llm_chat import metrics as M
from llm_chat import predict as P
from llm_chat.cli import main

KW = ["95519", "挂失", "身份证", "补卡"]
REF = "请立即拨打95519挂失，之后带身份证到网点补卡。"
GOOD = "请拨打95519挂失，再带身份证去网点补卡。"  # all keywords, reference-sized, finished: 1.0
HALF = "请拨打95519挂失，然后等待通知就可以了。"  # 2 of 4 keywords: keyword 0.5, completeness 1.0


def test_overall_score_is_the_mean_of_keyword_match_and_completeness():
    assert M.answer_scores(GOOD, KW, REF, True) == {"keyword_match": 1.0, "completeness": 1.0, "overall": 1.0}
    s = M.answer_scores(HALF, KW, REF, True)
    assert (s["keyword_match"], s["completeness"], s["overall"]) == (0.5, 1.0, 0.75)
    # cut at max_new_tokens: completeness loses its "ended by itself" third
    assert M.answer_scores(GOOD, KW, REF, False)["overall"] == pytest.approx((1 + 2 / 3) / 2)


def test_win_tie_loss():
    outcomes, tally = M.win_tie_loss([0.5, 0.5, 1.0, 0.2], [0.75, 0.5, 0.5, 0.2 + 1e-9])
    assert outcomes == ["win", "tie", "loss", "tie"]  # within the tolerance: a tie
    assert tally == {"win": 1, "tie": 2, "loss": 1}
    with pytest.raises(ValueError):
        M.win_tie_loss([0.1], [])


@contextmanager
def _as(side, current):
    current.append(side)
    yield
    current.pop()


def test_compare_tallies_hand_made_answers(monkeypatch):
    """Scripted base and tuned answers to three questions: one win, one tie, one loss."""
    questions = [
        {
            "messages": [{"role": "user", "content": f"q{i}"}],
            "question": f"q{i}",
            "keywords": KW,
            "reference": REF,
        }
        for i in range(3)
    ]
    scripted = {  # (question, side) -> answer
        ("q0", "base"): "不清楚。",
        ("q0", "tuned"): GOOD,
        ("q1", "base"): HALF,
        ("q1", "tuned"): HALF,
        ("q2", "base"): GOOD,
        ("q2", "tuned"): HALF,
    }
    current = []
    monkeypatch.setattr(P, "side_of", lambda model, side: _as(side, current))

    def fake(model, tokenizer, messages, **kw):
        text = scripted[(messages[-1]["content"], current[-1])]
        return {"text": text, "completion_tokens": 10, "finish_reason": "stop", "seconds": 0.5}

    monkeypatch.setattr(P, "answer", fake)
    rows = P.compare_answers(None, None, questions, ("base", "tuned"), {})
    assert [r["outcome"] for r in rows] == ["win", "tie", "loss"]
    assert rows[0]["tuned"]["tokens_per_s"] == 20.0
    summary = M.compare_summary(rows, ("base", "tuned"))
    assert (summary["wins"], summary["ties"], summary["losses"], summary["questions"]) == (1, 1, 1, 3)
    base_overall = M.mean([r["base"]["overall"] for r in rows])
    assert summary["base_overall"] == round(base_overall, 4)
    assert summary["overall_gain_points"] == round(
        100 * (summary["tuned_overall"] - summary["base_overall"]), 2
    )
    assert summary["tuned_tokens_per_s"] == 20.0 and summary["tuned_latency_s"] == 0.5
    metrics_md, answers_md = M.compare_tables(summary, rows, ("base", "tuned"))
    assert "| tokens_per_s | 20.0000 | 20.0000 |" in metrics_md and "| overall |" in metrics_md
    assert answers_md.count("| win |") == 1 and answers_md.count("| loss |") == 1


def test_base_only_compare_writes_base_files(tmp_path):
    args = ["compare", "--config", "tiny", "--base_only", "true", "--max_eval_items", "2"]
    assert main([*args, "--max_new_tokens", "3", "--output_dir", str(tmp_path)]) == 0
    assert not (tmp_path / "compare.json").exists()
    data = json.loads((tmp_path / "base_compare.json").read_text())
    s = data["summary"]
    assert s["questions"] == 2 and {"base_overall", "base_tokens_per_s", "base_keyword_match"} <= s.keys()
    assert not any(k.startswith("tuned_") for k in s) and "wins" not in s
    assert all(set(r) == {"question", "keywords", "base"} for r in data["rows"])
    assert "| tokens_per_s |" in (tmp_path / "base_compare.md").read_text()


def test_compare_refuses_a_file_as_output_dir_before_loading(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["compare", "--config", "tiny", "--base_only", "true", "--output_dir", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "mine"


def test_questions_file_must_hold_questions(tmp_path):
    from lora_shared.errors import UsageError

    empty = tmp_path / "q.jsonl"
    empty.write_text("\n")
    with pytest.raises(UsageError, match="q.jsonl: no questions"):
        P.compare_questions(str(empty))
    empty.write_text('{"question": "怎么挂失？", "keywords": ["95519"]}\n')
    assert P.compare_questions(str(empty))[0]["messages"] == [{"role": "user", "content": "怎么挂失？"}]
