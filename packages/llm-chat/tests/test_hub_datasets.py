"""--dataset through datasets.load_dataset: the json builder on local dialogs (OpenAI, ShareGPT, Alpaca,
a renamed messages column), record errors, and a hub id offline."""

import json
import time

import pytest
from llm_chat.config import ChatDataArgs
from llm_chat.data import load_splits
from lora_shared.errors import DataError, UsageError


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path, monkeypatch):
    """Offline, with a datasets cache of this test's own (load_dataset writes Arrow files there)."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _openai(i):
    return {
        "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
        "topic": "t",
    }


def _write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return str(path)


def test_json_builder_splits_and_formats(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_openai(i) for i in range(6)])
    val = _write(tmp_path / "val.jsonl", [_openai(i) for i in range(6, 8)])
    args = ChatDataArgs(dataset="json", data_files=[f"train={train}", f"validation={val}"])
    tr, held, reports = load_splits(args)
    assert (len(tr), len(held)) == (6, 2)
    assert held[0]["messages"][0] == {"role": "user", "content": "q6"} and held[0]["topic"] == "t"
    assert {r["source"] for r in tr} == {"json"} and reports[0].formats["openai"] == 6
    # No held-out split in the data: --val_fraction splits one off, as for a file.
    tr, held, _ = load_splits(ChatDataArgs(dataset="json", data_files=[train], val_fraction=0.5))
    assert (len(tr), len(held)) == (3, 3)


def test_sharegpt_alpaca_and_messages_column(tmp_path):
    share = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}] * 2
    tr, _, _ = load_splits(
        ChatDataArgs(dataset="json", data_files=[_write(tmp_path / "s.jsonl", share)], eval_dataset="banking")
    )
    assert tr[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    alpaca = [{"instruction": "add", "input": "1 2", "output": "3"}] * 2
    tr, _, _ = load_splits(
        ChatDataArgs(
            dataset="json", data_files=[_write(tmp_path / "a.jsonl", alpaca)], eval_dataset="banking"
        )
    )
    assert tr[0]["messages"][0] == {"role": "user", "content": "add\n\n1 2"}
    chosen = [{"chosen": _openai(i)["messages"], "id": i} for i in range(2)]
    path = _write(tmp_path / "c.jsonl", chosen)
    tr, _, _ = load_splits(
        ChatDataArgs(dataset="json", data_files=[path], messages_column="chosen", eval_dataset="banking")
    )
    assert [r["messages"][1]["content"] for r in tr] in (["a0", "a1"], ["a1", "a0"]) and "chosen" not in tr[0]
    with pytest.raises(UsageError, match=r"no column 'turns' \(columns: chosen, id\); set --messages_column"):
        load_splits(ChatDataArgs(dataset="json", data_files=[path], messages_column="turns"))


def test_bad_record_gets_the_file_readers_message(tmp_path):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "again"}]}
    path = _write(tmp_path / "d.jsonl", [_openai(0), bad, _openai(1)])
    with pytest.raises(DataError, match=r"^json \(.*d\.jsonl\)\[train\] row 1: turn 1: expected assistant"):
        load_splits(ChatDataArgs(dataset="json", data_files=[path]))
    tr, held, reports = load_splits(
        ChatDataArgs(dataset="json", data_files=[path], skip_bad_records=True, eval_dataset="banking")
    )
    assert len(tr) == 2 and reports[0].skipped == 1


def test_flags_without_a_builder_and_missing_split(tmp_path):
    with pytest.raises(UsageError, match="--dataset_config is only read with a load_dataset --dataset"):
        load_splits(ChatDataArgs(dataset="banking", dataset_config="x"))
    path = _write(tmp_path / "d.jsonl", [_openai(0), _openai(1)])
    with pytest.raises(
        UsageError, match=r"no split 'sft' \(splits: train\); pick one with --dataset_train_split"
    ):
        load_splits(ChatDataArgs(dataset="json", data_files=[path], dataset_train_split="sft"))


def test_hub_id_offline_fails_in_seconds():
    start = time.perf_counter()
    with pytest.raises(UsageError) as e:
        load_splits(ChatDataArgs(dataset="banking,HuggingFaceH4/ultrachat_200k"))
    took = time.perf_counter() - start
    msg = str(e.value)
    assert (
        msg.startswith("--dataset HuggingFaceH4/ultrachat_200k: no local file or folder") and "\n" not in msg
    )
    assert "hub is unreachable" in msg and "save_to_disk" in msg
    assert took < 15, took  # seconds
