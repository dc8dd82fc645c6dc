"""lora_shared.hubdata's pure parts: which --dataset values go to load_dataset, --data_files parsing, and the
HubDataArgs mixin the apps' DataArgs inherit."""

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from lora_shared import helptext
from lora_shared.errors import UsageError
from lora_shared.hubdata import HubDataArgs, check_unused, parse_data_files, wants_load_dataset


@pytest.mark.parametrize(
    "spec, want",
    [
        ("beans", True),
        ("HuggingFaceH4/ultrachat_200k", True),
        ("json", True),
        ("imagefolder", True),
        ("data/train.jsonl", False),  # a data-file suffix: a path the user mistyped, not a hub id
        ("./beans", False),
        ("/abs/dir", False),
        ("~/dir", False),
        ("a/b/c", False),
        ("bad id!", False),
        ("", False),
    ],
)
def test_which_specs_go_to_load_dataset(spec, want, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert wants_load_dataset(spec) is want


def test_local_paths_win_except_a_builder_with_data_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "beans").mkdir()
    (tmp_path / "json").mkdir()
    (tmp_path / "data").mkdir()
    assert not wants_load_dataset("beans")  # the folder named beans
    assert not wants_load_dataset("data/set")  # under an existing folder: a path
    assert not wants_load_dataset("json", SimpleNamespace(data_dir=None, data_files=None))
    assert wants_load_dataset("json", SimpleNamespace(data_dir=None, data_files=["a.jsonl"]))


def test_parse_data_files(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x\n")
    b.write_text("x\n")
    assert parse_data_files(None) is None
    assert parse_data_files([str(a), str(b)]) == [str(a), str(b)]
    assert parse_data_files([f"train={a},validation={b}"]) == {"train": [str(a)], "validation": [str(b)]}
    assert parse_data_files([f"validation={b}", str(a)]) == {"validation": [str(b)], "train": [str(a)]}
    assert parse_data_files([str(tmp_path / "*.csv")]) == [str(tmp_path / "*.csv")]  # globs pass through
    with pytest.raises(UsageError, match=r"--data_files .*: file not found"):
        parse_data_files([f"train={tmp_path / 'gone.csv'}"])
    with pytest.raises(UsageError, match="expected PATH or SPLIT=PATH"):
        parse_data_files([f"my split={a}"])
    # A hub repo's files are repo paths: not checked here.
    assert parse_data_files(["data/train-*.parquet"], local=False) == ["data/train-*.parquet"]


def test_unused_builder_flags_are_named():
    check_unused(SimpleNamespace(dataset="demo", dataset_config=None, data_dir=None, data_files=None))
    with pytest.raises(UsageError, match="--data_files is only read .*--dataset demo does not use it"):
        check_unused(SimpleNamespace(dataset="demo", dataset_config=None, data_dir=None, data_files=["x"]))


@dataclass
class _AppData(HubDataArgs):
    """An app's DataArgs: its own --dataset and --data_dir words, one flag of its own."""

    dataset: str = field(default="demo", metadata={"help": "demo | a hub dataset id."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of --dataset imagefolder."})
    val_fraction: float = field(default=0.2, metadata={"help": "Held-out fraction."})


def test_an_app_data_group_keeps_dataset_first_then_the_hub_flags_then_its_own():
    # `--help`, the parser and resolved_config.yaml list fields in dataclass order: a base field keeps its
    # place when re-declared, so `dataset` is declared in the mixin to stay the first data flag.
    order = ["dataset", "dataset_config", "data_dir", "data_files", "dataset_train_split"]
    order += ["dataset_test_split", "val_fraction"]
    assert [f.name for f in dataclasses.fields(_AppData)] == order
    args = _AppData()
    assert (args.dataset, args.dataset_train_split, args.data_files) == ("demo", "train", None)
    (group,) = helptext.groups_from_classes([_AppData])
    owners = {f.name: (f.owner_module, f.help) for f in group.fields}
    assert owners["data_dir"] == (__name__, "Folder of --dataset imagefolder.")  # the app's words win
    assert owners["dataset_config"][0] == "lora_shared.hubdata"
