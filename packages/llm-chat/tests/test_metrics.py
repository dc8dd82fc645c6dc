"""Metrics on hand-made outputs with known answers."""

import pytest
from llm_chat import metrics as M
from llm_chat.metrics import score_record


def test_normalize_and_exact_match():
    assert M.normalize(" 数据开发。") == "数据开发"
    assert M.exact_match("ＡＢＣ！", "abc") == 1.0
    assert M.exact_match("数据查询", "数据开发") == 0.0


def test_label_match():
    labels = ["数据开发", "数据查询", "任务运维"]
    assert M.label_match("数据开发", "数据开发", labels) == 1.0
    assert M.label_match("这属于数据开发场景", "数据开发", labels) == 1.0
    assert M.label_match("数据开发或数据查询", "数据开发", labels) == 0.0  # hedging is wrong
    assert M.label_match("任务运维", "数据开发", labels) == 0.0


def test_set_match():
    assert M.set_match("a.csv, b.sql", "a.csv,b.sql") == {"exact": 1.0, "f1": 1.0}
    s = M.set_match("a.csv", "a.csv,b.sql")
    assert s["exact"] == 0.0 and s["f1"] == pytest.approx(2 / 3)


def test_rouge_l_chars():
    assert M.rouge_l("今天天气好", "今天天气好") == 1.0
    # LCS("今天好", "今天天气好") = 3: P = 1, R = 3/5 -> F1 = 0.75
    assert M.rouge_l("今天好", "今天天气好") == pytest.approx(0.75)
    assert M.rouge_l("", "abc") == 0.0


def test_bleu_chars():
    assert M.bleu("今天天气很好", "今天天气很好") == pytest.approx(1.0)
    assert M.bleu("完全不同", "今天天气") == 0.0
    partial = M.bleu("今天天气不好", "今天天气很好")
    assert 0.2 < partial < 1.0
    # Shorter than the reference: brevity penalty exp(1 - 6/3).
    short = M.bleu("今天天", "今天天气很好")
    assert short < M.bleu("今天天气很", "今天天气很好")


def test_keyword_match_and_completeness():
    kws = ["95519", "挂失", "身份证", "补卡"]
    assert M.keyword_match("请拨打95519挂失，再带身份证补卡", kws) == 1.0
    assert M.keyword_match("请拨打 95519", kws) == 0.25
    assert M.keyword_match("x", []) == 0.0
    ref = "请立即拨打95519挂失，之后带身份证到网点补卡。"
    assert M.completeness("请拨打95519挂失，再带身份证去网点补卡。", kws, ref, True) == 1.0
    assert M.completeness("请拨打95519", kws, ref, False) == 0.0
    assert M.completeness("请拨打95519挂失，再带身份证去网点补卡。", kws, ref, False) == pytest.approx(2 / 3)


def test_perplexity():
    assert M.perplexity(0.0) == 1.0
    assert M.perplexity(1.0) == pytest.approx(2.718281828)


def test_score_record_by_task():
    def rec(task, ans, **kw):
        return {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ans}],
            "task": task,
            **kw,
        }

    assert score_record(
        rec("scene_cls", "数据开发"), "数据开发", {"scene_cls": ["数据开发", "数据查询"]}
    ) == {"accuracy": 1.0}
    assert score_record(rec("filename_extract", "a.py,b.md"), "b.md,a.py", {}) == {
        "exact_match": 1.0,
        "item_f1": 1.0,
    }
    s = score_record(rec(None, "请拨打95519挂失", keywords=["95519", "补卡"]), "请拨打95519挂失", {})
    assert s["keyword_match"] == 0.5 and s["rouge_l"] == 1.0 and s["bleu"] == pytest.approx(1.0)
