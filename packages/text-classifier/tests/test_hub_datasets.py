"""--dataset through datasets.load_dataset: the json / csv builders on local files, and a hub id offline."""

import json
import time

import pytest
from lora_shared.errors import DataError, UsageError
from text_classifier.config import TextDataArgs
from text_classifier.data import load_splits

ROWS = [("good service", "pos"), ("slow and rude", "neg")] * 6


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path, monkeypatch):
    """Offline, with a datasets cache of this test's own (load_dataset writes Arrow files there)."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _jsonl(path, rows, text_key="text", label_key="label"):
    path.write_text("".join(json.dumps({text_key: t, label_key: lbl}) + "\n" for t, lbl in rows), "utf-8")
    return path


def test_json_builder_with_named_splits(tmp_path):
    train = _jsonl(tmp_path / "a.jsonl", ROWS)
    val = _jsonl(tmp_path / "b.jsonl", ROWS[:4])
    args = TextDataArgs(dataset="json", data_files=[f"train={train}", f"validation={val}"])
    tr, ev, names = load_splits(args)
    assert names == ["neg", "pos"] and (len(tr), len(ev)) == (12, 4)
    assert tr.features["label"].names == names and set(tr["text"]) == {"good service", "slow and rude"}


def test_csv_builder_plain_files_split_off_val_fraction_and_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("review,stars\n" + "".join(f"{t},{lbl}\n" for t, lbl in ROWS), "utf-8")
    args = TextDataArgs(
        dataset="csv", data_files=[str(path)], text_column="review", label_column="stars", val_fraction=0.5
    )
    tr, ev, names = load_splits(args)
    assert names == ["neg", "pos"] and (len(tr), len(ev)) == (6, 6)
    args.label_column = "label"
    with pytest.raises(
        DataError, match=r"no column 'label' \(columns: \['review', 'stars'\]\); set --text_column"
    ):
        load_splits(args)


def test_bad_row_gets_the_file_readers_message(tmp_path):
    rows = [*ROWS[:3], ("   ", "pos"), *ROWS[3:]]
    path = _jsonl(tmp_path / "a.jsonl", rows)
    with pytest.raises(DataError, match=r"^json \(.*a\.jsonl\)\[train\] record:3: empty text; fill it in"):
        load_splits(TextDataArgs(dataset="json", data_files=[str(path)]))


def test_builder_flag_errors(tmp_path):
    with pytest.raises(UsageError, match="--dataset json needs --data_dir DIR or --data_files FILE"):
        load_splits(TextDataArgs(dataset="json"))
    with pytest.raises(UsageError, match=r"--data_files .*: file not found"):
        load_splits(TextDataArgs(dataset="json", data_files=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(UsageError, match="--data_files is only read with a load_dataset --dataset"):
        load_splits(TextDataArgs(dataset="questions", data_files=["x.jsonl"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": \n', "utf-8")
    with pytest.raises(DataError, match=r"--dataset json: cannot read .*bad\.jsonl"):
        load_splits(TextDataArgs(dataset="json", data_files=[str(bad)]))


def test_unreachable_hub_fails_in_seconds(monkeypatch):
    """No HF_HUB_OFFLINE: the TCP probe finds the hub unreachable and load_dataset runs cache-only."""
    import datasets
    import huggingface_hub.constants
    from lora_shared.models import hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    # go_offline flips these for the process; monkeypatch puts them back after the test.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    hub_reachable.cache_clear()
    try:
        start = time.perf_counter()
        with pytest.raises(UsageError) as e:
            load_splits(TextDataArgs(dataset="someone/reviews"))
        took = time.perf_counter() - start
    finally:
        hub_reachable.cache_clear()
    msg = str(e.value)
    assert msg.startswith("--dataset someone/reviews: no local file or folder") and "\n" not in msg
    assert "hub is unreachable" in msg and "save_to_disk" in msg
    assert took < 15, took  # seconds (a retrying load_dataset takes ~50 s here)


def test_path_like_specs_are_not_hub_ids(tmp_path):
    # A missing file keeps the file reader's message: nothing is asked of the hub.
    with pytest.raises(DataError, match="not found or not a .csv/.tsv/.jsonl file"):
        load_splits(TextDataArgs(dataset="data/train.jsonl"))
