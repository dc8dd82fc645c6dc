"""Formats -> messages, record validation (exit 2 with file:line or skip+count), the assistant-only loss
mask, padding-free batches, and the committed built-in data sets."""

import importlib.util
import json
from pathlib import Path

import pytest
from llm_chat.data import (
    IGNORE_INDEX,
    assistant_char_spans,
    builtin_path,
    collate_fn,
    load_splits,
    read_dialogs,
    to_messages,
    tokenize_dialog,
)
from llm_chat_testutils import dialog
from lora_shared.errors import DataError

PKG = Path(__file__).resolve().parents[1]


def write_jsonl(path, records):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    )
    return path


# ---------------------------------------------------------------------------------------------- formats
def test_openai_messages_multi_turn_with_parts():
    rec = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}]},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ]
    }
    msgs, fmt = to_messages(rec)
    assert fmt == "openai"
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "你好"


def test_sharegpt_conversations_and_role_aliases():
    rec = {
        "system": "sys",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    msgs, fmt = to_messages(rec)
    assert fmt == "sharegpt"
    assert msgs == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_alpaca_with_input_system_and_history():
    rec = {
        "instruction": "翻译",
        "input": "hello",
        "output": "你好",
        "system": "s",
        "history": [["q0", "a0"]],
    }
    msgs, fmt = to_messages(rec)
    assert fmt == "alpaca"
    assert msgs == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q0"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "翻译\n\nhello"},
        {"role": "assistant", "content": "你好"},
    ]


def test_odd_keys_are_normalised_and_reported(tmp_path):
    path = write_jsonl(
        tmp_path / "odd.jsonl",
        [
            {"dialog": [{"speaker": "customer", "text": "q"}, {"speaker": "agent", "text": "a"}], "id": 7},
            {"prompt": "p", "response": "r"},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ],
    )
    records, report = read_dialogs(path)
    assert len(records) == 3 and records[0]["id"] == 7
    assert records[1]["messages"][-1] == {"role": "assistant", "content": "r"}
    assert report.formats == {"openai": 2, "alpaca": 1}
    text = str(report)
    assert "dialog->messages" in text and "role customer->user" in text and "prompt->instruction" in text


def test_json_array_file(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"instruction": "i", "output": "o"}]))
    records, _ = read_dialogs(p)
    assert records[0]["messages"][0] == {"role": "user", "content": "i"}


# ---------------------------------------------------------------------------------------------- bad records
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
BAD = [
    ("{not json", "not valid JSON"),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "expected assistant, got user",
    ),
    (
        {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]},
        "empty content",
    ),
    ({"messages": [{"role": "user", "content": "q"}]}, "last turn is a user message"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "expected user, got assistant"),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "wizard", "content": "a"}]},
        "unknown role 'wizard'",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "system", "content": "s"},
            ]
        },
        "system only first",
    ),
    (
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
        "content must be text",
    ),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "no content"),
    ({"messages": []}, "no messages"),
    ({"foo": 1}, "unknown record format"),
    ({"instruction": "i", "output": ""}, "empty content"),
    ([1, 2], "expected a JSON object"),
]


@pytest.mark.parametrize("bad,match", BAD, ids=[m for _, m in BAD])
def test_bad_record_names_file_and_line(tmp_path, bad, match):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, bad if isinstance(bad, str) else json.dumps(bad), GOOD])
    with pytest.raises(DataError) as e:
        read_dialogs(path)
    msg = str(e.value)
    assert f"{path}:2:" in msg and match in msg and "--skip_bad_records" in msg
    records, report = read_dialogs(path, skip_bad=True)
    assert len(records) == 2 and report.skipped == 1 and "skipped 1" in str(report)


def test_all_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["{x"])
    with pytest.raises(DataError, match="no valid dialogs"):
        read_dialogs(path, skip_bad=True)


def test_forced_format_mismatch(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "i", "output": "o"}])
    with pytest.raises(DataError, match="looks like alpaca"):
        read_dialogs(path, fmt="openai")


# ---------------------------------------------------------------------------------------------- loss mask
def _masked_spans(row, tokenizer):
    spans, cur = [], []
    for tok, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == tok
            cur.append(tok)
        elif cur:
            spans.append(tokenizer.decode(cur))
            cur = []
    if cur:
        spans.append(tokenizer.decode(cur))
    return spans


def test_loss_mask_covers_exactly_the_assistant_tokens(tokenizer):
    msgs = dialog("你好", "您好，请问有什么可以帮您？", "查订单", "请提供订单号。", system="客服")
    row = tokenize_dialog(tokenizer, msgs)
    assert _masked_spans(row, tokenizer) == [
        "您好，请问有什么可以帮您？<|im_end|>",
        "请提供订单号。<|im_end|>",
    ]
    # Every other token (system, user turns, role headers) is masked out.
    n_assistant = (
        len(tokenizer("您好，请问有什么可以帮您？请提供订单号。", add_special_tokens=False)["input_ids"]) + 2
    )
    assert sum(lab != IGNORE_INDEX for lab in row["labels"]) == n_assistant


def test_template_without_prefix_property_is_rejected(tokenizer):
    import copy

    from lora_shared.errors import UsageError

    tok = copy.deepcopy(tokenizer)
    # A template that renders only the last two messages: earlier turns vanish once later ones exist.
    tok.chat_template = "{% for m in messages[-2:] %}{{ m['role'] + ':' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(UsageError, match="prefix-stable"):
        assistant_char_spans(tok, dialog("a", "b", "c", "d"))


def test_truncation_keeps_prompt_only_dialogs_out(tokenizer):
    msgs = dialog("很长的问题" * 20, "答")
    assert tokenize_dialog(tokenizer, msgs, max_length=16) is None
    row = tokenize_dialog(tokenizer, msgs, max_length=4096)
    assert len(row["input_ids"]) > 16


def test_collate_padded_and_packed(tokenizer):
    rows = [
        tokenize_dialog(tokenizer, dialog("q", "a")),
        tokenize_dialog(tokenizer, dialog("问题二", "回答二")),
    ]
    padded = collate_fn(rows, tokenizer.pad_token_id)
    assert (
        padded["input_ids"].shape
        == padded["attention_mask"].shape
        == (2, max(len(r["input_ids"]) for r in rows))
    )
    assert (padded["labels"][padded["attention_mask"] == 0] == IGNORE_INDEX).all()
    packed = collate_fn(rows, tokenizer.pad_token_id, packing=True)
    n0, n1 = (len(r["input_ids"]) for r in rows)
    assert packed["input_ids"].shape == (1, n0 + n1) and "attention_mask" not in packed
    assert packed["position_ids"][0].tolist() == list(range(n0)) + list(range(n1))
    assert packed["labels"][0, n0] == IGNORE_INDEX  # no prediction across the boundary


# ---------------------------------------------------------------------------------------------- built-in sets
def test_builtin_sets_are_the_scripts_output_and_big_enough():
    spec = importlib.util.spec_from_file_location("make_data", PKG / "scripts" / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = mod.build()
    for fname, records in built.items():
        committed = (PKG / "src" / "llm_chat" / "builtin_data" / fname).read_text(encoding="utf-8")
        assert committed == mod.dumps(records), f"{fname} differs from scripts/make_data.py output; re-run it"
    cs = built["customer_service_train.jsonl"] + built["customer_service_test.jsonl"]
    assert len(cs) >= 1000
    assert {r["intent"] for r in cs} >= {"order_status", "refund", "shipping", "account", "complaint"}
    assert sum(r["turns"] > 1 for r in cs) >= 50
    bank = built["banking_train.jsonl"] + built["banking_test.jsonl"]
    assert len(built["banking_test.jsonl"]) >= 16 and all(r["keywords"] for r in bank)
    assert {r["category"] for r in bank} == {"账户", "贷款", "理财", "信用卡", "网络安全", "外汇", "保险"}
    # Each held-out banking answer's keywords appear in it (the comparison's premise).
    for r in bank:
        assert all(k in r["messages"][-1]["content"] for k in r["keywords"]), r["keywords"]
    mt = built["multitask_train.jsonl"] + built["multitask_test.jsonl"]
    assert len(mt) >= 121
    assert {r["task"] for r in built["multitask_test.jsonl"]} == {
        "scene_cls",
        "qtype_cls",
        "dp_qa",
        "filename_extract",
    }
    # Held-out questions are not training questions.
    train_q = {
        r["messages"][-2]["content"] for r in built["multitask_train.jsonl"] + built["banking_train.jsonl"]
    }
    assert not train_q & {
        r["messages"][-2]["content"] for r in built["multitask_test.jsonl"] + built["banking_test.jsonl"]
    }


def test_load_splits_mixes_builtin_and_files(tmp_path):
    from llm_chat.config import ChatDataArgs

    f = write_jsonl(tmp_path / "mine.jsonl", [GOOD] * 10)
    args = ChatDataArgs(dataset=f"banking,{f}", val_fraction=0.2, system_prompt="S")
    train, held, reports = load_splits(args)
    n_bank = sum(1 for _ in builtin_path("banking", "train").open())
    assert len(train) == n_bank + 8 and len(held) == len(read_dialogs(builtin_path("banking", "test"))[0]) + 2
    assert all(r["messages"][0]["role"] == "system" for r in train)
    assert any(r["messages"][0]["content"] == "S" for r in train)
