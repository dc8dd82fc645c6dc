"""--dataset through datasets.load_dataset: the imagefolder builder on local images, and a hub id offline."""

import time

import pytest
from lora_shared.errors import DataError, UsageError
from vision_cls.cli import main
from vision_cls.config import ClsDataArgs
from vision_cls.data import load_splits


@pytest.fixture
def split_folder(image_folder, tmp_path):
    """imagefolder layout with train/ and validation/ split folders (2 classes)."""
    root = tmp_path / "split"
    for i, f in enumerate(sorted(image_folder.rglob("*.png"))):
        split = "validation" if i % 3 == 0 else "train"
        dest = root / split / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    return root


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path, monkeypatch):
    """Offline, with a datasets cache of this test's own (load_dataset writes Arrow files there)."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_imagefolder_builder_uses_its_splits(split_folder):
    train, ev, names = load_splits(ClsDataArgs(dataset="imagefolder", data_dir=str(split_folder)))
    n_train = len(list((split_folder / "train").rglob("*.png")))
    n_val = len(list((split_folder / "validation").rglob("*.png")))
    assert names == ["circle", "square"]
    assert (len(train), len(ev)) == (n_train, n_val)
    assert train[0]["image"].mode == "RGB" and set(train["label"]) == {0, 1}
    # Eval labels keep the training ids (same names, same order).
    assert ev.features["label"].names == names


def test_imagefolder_without_eval_split_uses_val_fraction(image_folder):
    train, ev, names = load_splits(
        ClsDataArgs(dataset="imagefolder", data_dir=str(image_folder), val_fraction=0.25)
    )
    assert names == ["circle", "square"] and len(train) + len(ev) == 12 and len(ev) == 3
    assert sorted(set(ev["label"])) == [0, 1]  # stratified: both classes held out


def test_named_splits_and_missing_split(split_folder):
    train, ev, _ = load_splits(
        ClsDataArgs(
            dataset="imagefolder",
            data_dir=str(split_folder),
            dataset_train_split="validation",
            dataset_test_split="train",
        )
    )
    assert len(train) < len(ev)
    with pytest.raises(
        UsageError, match=r"no split 'dev' \(splits: train, validation\).*--dataset_test_split"
    ):
        load_splits(ClsDataArgs(dataset="imagefolder", data_dir=str(split_folder), dataset_test_split="dev"))


def test_corrupt_image_is_named_or_skipped(image_folder):
    bad = image_folder / "circle" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ClsDataArgs(dataset="imagefolder", data_dir=str(image_folder))
    with pytest.raises(DataError, match=r"imagefolder \(.*\)\[train\] row \d+: .*broken\.png"):
        load_splits(args)
    args.skip_bad_images = True
    train, ev, _ = load_splits(args)
    assert len(train) + len(ev) == 12


def test_column_mapping_and_missing_column(image_folder):
    with pytest.raises(UsageError, match=r"no column 'img' \(columns: image, label\); set --image_column"):
        load_splits(ClsDataArgs(dataset="imagefolder", data_dir=str(image_folder), image_column="img"))


def test_builder_needs_data_dir_and_flags_need_a_builder(image_folder):
    with pytest.raises(UsageError, match="--dataset imagefolder needs --data_dir"):
        load_splits(ClsDataArgs(dataset="imagefolder"))
    with pytest.raises(UsageError, match="--data_dir is only read with a load_dataset --dataset"):
        load_splits(ClsDataArgs(dataset=str(image_folder), data_dir=str(image_folder)))
    with pytest.raises(UsageError, match="--dataset_config is only read"):  # a built-in name is no hub id
        load_splits(ClsDataArgs(dataset="demo", dataset_config="x"))
    # A local folder still wins over the hub: the old ImageFolder reader takes it.
    train, ev, names = load_splits(ClsDataArgs(dataset=str(image_folder)))
    assert names == ["circle", "square"] and len(train) + len(ev) == 12


def test_hub_id_offline_fails_fast_with_one_line(tmp_path, capsys):
    start = time.perf_counter()
    code = main(["train", "--config", "tiny", "--dataset", "beans", "--output_dir", str(tmp_path / "run")])
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # the rest is the INFO log
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("vision-cls train: error: --dataset beans:")
    assert "hub is unreachable" in errors[0] and "save_to_disk" in errors[0] and "--data_dir" in errors[0]
    assert took < 30  # seconds, on a loaded 2-core box; no retry loop (a retrying load takes ~50 s here)
    run = tmp_path / "run"  # nothing that looks like a finished run
    assert not (run / "adapter_model.safetensors").exists() and not (run / "metrics.json").exists()


def test_save_to_disk_dir_gets_the_same_checks(tmp_path):
    """A datasets dir goes through the same column / label / image checks as load_dataset data."""
    from datasets import DatasetDict
    from vision_cls.data import make_demo_dataset

    ds = make_demo_dataset(2, 32, seed=0)  # 10 images, ClassLabel over the 5 demo classes
    DatasetDict(train=ds, validation=ds.select(range(5))).save_to_disk(str(tmp_path / "hf"))
    train, ev, names = load_splits(ClsDataArgs(dataset=str(tmp_path / "hf")))
    assert names == ds.features["label"].names and (len(train), len(ev)) == (10, 5)
    # String labels (as many hub datasets have) become classes, sorted.
    strings = ds.map(lambda r: {"name": ds.features["label"].int2str(r["label"])}).remove_columns("label")
    strings.save_to_disk(str(tmp_path / "str"))
    train, ev, names = load_splits(
        ClsDataArgs(dataset=str(tmp_path / "str"), label_column="name", val_fraction=0.5)
    )
    assert names == sorted(ds.features["label"].names) and len(train) + len(ev) == 10
