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


def test_deeply_nested_json_is_a_bad_record_not_a_recursion_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, "[" * 100_000, GOOD])
    with pytest.raises(
        DataError, match=rf"{path}:2: not valid JSON \(nested 100000 levels deep.*--skip_bad_records"
    ):
        read_dialogs(path)
    records, report = read_dialogs(path, skip_bad=True)
    assert len(records) == 2 and report.skipped == 1
    arr = tmp_path / "d.json"
    arr.write_text('[\n{"instruction": "i", "output": "o"},\n' + "[" * 100_000)
    with pytest.raises(DataError, match=rf"{arr}:3: not valid JSON \(nested 100001 levels deep"):
        read_dialogs(arr)


def test_line_separator_inside_content_is_not_a_line_break(tmp_path):
    rec = {"messages": [{"role": "user", "content": "一\u2028二"}, {"role": "assistant", "content": "好"}]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")  # a raw U+2028 in the line
    records, _ = read_dialogs(path)
    assert records[0]["messages"][0]["content"] == "一\u2028二"


def test_dialog_over_the_character_cap(tmp_path):
    from llm_chat.config import ChatDataArgs
    from llm_chat.data import MAX_DIALOG_CHARS

    assert ChatDataArgs().max_dialog_chars == MAX_DIALOG_CHARS
    big = {"messages": [{"role": "user", "content": "q" * 60}, {"role": "assistant", "content": "a" * 50}]}
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, big])
    with pytest.raises(DataError) as e:
        read_dialogs(path, max_chars=100)
    assert str(e.value) == (
        f"{path}:2: dialog of 110 characters (2 turns) is over --max_dialog_chars 100; split it into shorter "
        "dialogs, raise --max_dialog_chars, or pass --skip_bad_records"
    )
    records, report = read_dialogs(path, skip_bad=True, max_chars=100)
    assert len(records) == 1 and report.skipped == 1 and "over --max_dialog_chars" in str(report)
    assert len(read_dialogs(path, max_chars=0)[0]) == 2  # 0: no cap
    args = ChatDataArgs(dataset=str(path), max_dialog_chars=100)
    with pytest.raises(DataError, match="over --max_dialog_chars 100"):
        load_splits(args)
    args.max_dialog_chars = 110
    assert len(load_splits(args)[0]) == 2


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


def test_template_that_drops_turns_is_rejected(tokenizer):
    import copy

    from lora_shared.errors import UsageError

    tok = copy.deepcopy(tokenizer)
    # A template that renders only the last two messages: earlier turns vanish once later ones exist.
    tok.chat_template = "{% for m in messages[-2:] %}{{ m['role'] + ':' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(UsageError, match=r"does not render message 1 \(assistant\).*--chat_template_path"):
        assistant_char_spans(tok, dialog("a", "b", "c", "d"))


# Templates whose rendering of a prefix is a prefix of the full rendering: the masks must be exactly those of
# the older method (render each prefix, diff), kept here as the oracle.
QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if (message.role == "
    "'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}{{- "
    "'<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
    "system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama-3 style: contents trimmed, an end-of-turn string that is not one token of the tiny tokenizer.
TRIMMING = (
    "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
    "m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# No end-of-turn text at all.
PLAIN = (
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def _oracle(tokenizer, messages, max_length=None):
    """The older tokenize_dialog: re-render per assistant turn, test every token against every span."""
    from llm_chat.data import render

    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            before = render(tokenizer, messages[:i], add_generation_prompt=True)
            upto = render(tokenizer, messages[: i + 1])
            assert upto.startswith(before) and full.startswith(upto)
            spans.append((len(before), len(upto.rstrip())))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for i, (start, end) in enumerate(offsets):
        if end > start and any(s <= start < e for s, e in spans):
            labels[i] = ids[i]
    if max_length and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    if all(lab == IGNORE_INDEX for lab in labels):
        return None
    return {"input_ids": ids, "labels": labels}


# Contents that trip naive searches: substrings of the scaffolding, whitespace at either end, multi-byte text.
_PIECES = [
    "a",
    "assistant",
    "user",
    "im",
    "\\n",
    " x ",
    "数据平台",
    "😀",
    "  lead",
    "trail  ",
    "<",
    "end",
    "q",
    "好",
]


@pytest.mark.parametrize(
    "template", [None, QWEN25, SMOLLM2, TRIMMING, PLAIN], ids=["tiny", "qwen2.5", "smollm2", "trim", "plain"]
)
def test_masks_equal_the_prefix_diff_method_on_prefix_stable_templates(tokenizer, template):
    import copy
    import random

    tok = copy.deepcopy(tokenizer)
    if template:
        tok.chat_template = template
    rng = random.Random(0)
    for n in range(30):
        turns = [
            "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 4)))
            for _ in range(2 * rng.randint(1, 4))
        ]
        turns = [t if t.strip() else "x" for t in turns]
        msgs = dialog(*turns, system="系统" if n % 3 == 0 else None)
        for max_length in (None, 7, 40, 4096):
            assert tokenize_dialog(tok, msgs, max_length) == _oracle(tok, msgs, max_length), (
                msgs,
                max_length,
            )


# Qwen3's rule: an assistant content's <think>...</think> block is dropped from turns before the last user
# message, and the answer after it gets a <think> block (empty unless the content carries one). Rendering a
# prefix therefore differs from the same turns inside a longer dialog: not prefix-stable.
QWEN3_LIKE = """
{%- set ns = namespace(last_query=-1) %}
{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}
{%- for m in messages %}
  {%- if m.role == 'assistant' %}
    {%- set content = m.content %}
    {%- set reasoning = '' %}
    {%- if '</think>' in content %}
      {%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}
      {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
    {%- endif %}
    {%- if loop.index0 > ns.last_query %}
      {{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content }}
    {%- else %}
      {{- '<|im_start|>assistant\\n' + content }}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
  {%- else %}
    {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


@pytest.fixture
def qwen3_tokenizer(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = QWEN3_LIKE
    return tok


def test_qwen3_template_is_not_prefix_stable(qwen3_tokenizer):
    from llm_chat.data import render

    msgs = dialog("q1", "<think>想想</think>答一", "q2", "答二")
    assert not render(qwen3_tokenizer, msgs).startswith(render(qwen3_tokenizer, msgs[:2]))


@pytest.mark.parametrize(
    "last", ["答三", "<think>\n推理三\n</think>\n\n答三"], ids=["plain-last", "thinking-last"]
)
def test_qwen3_template_multi_turn_labels_every_answer_and_nothing_else(qwen3_tokenizer, last):
    msgs = dialog("问一", "<think>先想一想</think>答一", "问二", "答二，不想", "问三", last, system="客服")
    text = qwen3_tokenizer.apply_chat_template(msgs, tokenize=False)
    assert "先想一想" not in text and text.count("<think>") == 1  # the template did rewrite the dialog
    row = tokenize_dialog(qwen3_tokenizer, msgs)
    # Earlier answers as rendered (old reasoning dropped); the last one with the reasoning its content
    # carries, but not the template's empty <think> scaffold.
    want_last = "<think>\n推理三\n</think>\n\n答三" if "推理" in last else "答三"
    assert _masked_spans(row, qwen3_tokenizer) == [
        "答一<|im_end|>",
        "答二，不想<|im_end|>",
        f"{want_last}<|im_end|>",
    ]
    # Nothing else: the labelled tokens are exactly those of the three spans.
    n = sum(
        len(qwen3_tokenizer(t, add_special_tokens=False)["input_ids"])
        for t in ("答一", "答二，不想", want_last)
    )
    assert sum(lab != IGNORE_INDEX for lab in row["labels"]) == n + 3
    # Truncated inside the second answer: the first answer whole, the second up to the cut.
    cut = tokenize_dialog(qwen3_tokenizer, msgs, max_length=len(row["input_ids"]) // 2)
    assert cut["labels"] == row["labels"][: len(cut["labels"])]


def test_truncation_keeps_prompt_only_dialogs_out(tokenizer):
    msgs = dialog("很长的问题" * 20, "答")
    assert tokenize_dialog(tokenizer, msgs, max_length=16) is None
    row = tokenize_dialog(tokenizer, msgs, max_length=4096)
    assert len(row["input_ids"]) > 16


def _long_dialog(turns: int) -> list[dict]:
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"第{i}个问题" if i % 2 == 0 else f"第{i}个回答。",
        }
        for i in range(turns)
    ]


def test_preparation_is_linear_two_renders_and_tokens_only_up_to_max_length(tokenizer):
    """The older method rendered the template once per assistant turn and scanned every span per token
    (10k turns: 8 minutes); now a dialog costs two renders, whatever its length, and the tokenizer sees only
    a prefix of the text that covers max_length tokens."""
    import copy

    tok = copy.deepcopy(tokenizer)
    renders, encoded = [], []

    class Spy(type(tok)):
        def apply_chat_template(self, conversation, *args, **kwargs):
            renders.append(len(conversation))
            return super().apply_chat_template(conversation, *args, **kwargs)

        def __call__(self, text, *args, **kwargs):
            encoded.append(len(text))
            return super().__call__(text, *args, **kwargs)

    tok.__class__ = Spy
    tokenize_dialog(tok, dialog("q", "a"))  # learns the template's shape once (tiny probe renders)
    renders.clear()
    encoded.clear()
    msgs = _long_dialog(2000)
    row = tokenize_dialog(tok, msgs, max_length=256)
    assert renders == [2000, 2000]
    full = len(tok.apply_chat_template(msgs, tokenize=False))
    assert len(row["input_ids"]) == 256 and max(encoded) < full / 20
    assert row == _oracle(tokenizer, msgs[:40], 256)  # the same tokens and labels as a short dialog


def test_ten_thousand_turn_dialog_prepares_in_seconds(tokenizer):
    import time

    t0 = time.perf_counter()
    row = tokenize_dialog(tokenizer, _long_dialog(10_000), max_length=768)
    assert time.perf_counter() - t0 < 60  # ~1 s here; the older method needed minutes (500 turns: 5 s)
    assert len(row["input_ids"]) == 768 and row == _oracle(tokenizer, _long_dialog(60), 768)


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
