import numpy as np
import pytest
import torch
from lora_shared.errors import DataError
from vision_cls.config import ClsDataArgs
from vision_cls.data import (
    DEMO_CLASSES,
    build_transforms,
    collate_fn,
    load_splits,
    make_demo_dataset,
    make_digits_dataset,
    transform_batch,
)


def test_demo_is_deterministic_and_balanced():
    a, b = make_demo_dataset(4, 32, seed=3), make_demo_dataset(4, 32, seed=3)
    assert np.array_equal(np.asarray(a[7]["image"]), np.asarray(b[7]["image"]))
    assert sorted(a["label"]) == sorted(list(range(len(DEMO_CLASSES))) * 4)
    c = make_demo_dataset(4, 32, seed=4)
    assert not np.array_equal(np.asarray(a[7]["image"]), np.asarray(c[7]["image"]))


def test_digits_are_real():
    ds = make_digits_dataset()
    assert len(ds) == 1797 and ds.features["label"].names[3] == "3"
    assert ds[0]["image"].size == (32, 32)


def test_demo_split_is_stratified():
    train, ev, names = load_splits(
        ClsDataArgs(demo_images_per_class=10, demo_image_size=32, val_fraction=0.2)
    )
    assert names == DEMO_CLASSES and len(train) == 40 and len(ev) == 10
    assert sorted(ev["label"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_transforms_and_collate_shapes():
    ds = make_demo_dataset(1, 48)
    for train in (True, False):
        tf = build_transforms(32, (0.5,) * 3, (0.5,) * 3, train)
        batch = transform_batch({"image": ds["image"][:3], "label": [0, 1, 2]}, tf)
        out = collate_fn(
            [{"pixel_values": p, "labels": lbl} for p, lbl in zip(batch["pixel_values"], batch["labels"])]
        )
        assert out["pixel_values"].shape == (3, 3, 32, 32) and out["pixel_values"].dtype == torch.float32
        assert out["labels"].tolist() == [0, 1, 2]
    # eval transform is deterministic
    tf = build_transforms(32, (0.5,) * 3, (0.5,) * 3, False)
    assert torch.equal(tf(ds[0]["image"]), tf(ds[0]["image"]))


def test_image_folder_and_csv(image_folder, tmp_path):
    train, ev, names = load_splits(ClsDataArgs(dataset=str(image_folder), val_fraction=0.25))
    assert names == ["circle", "square"] and len(train) + len(ev) == 12
    rows = ["path,label"] + [
        f"imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    train, ev, names = load_splits(ClsDataArgs(dataset=str(tmp_path / "data.csv"), val_fraction=0.25))
    assert names == ["circle", "square"] and len(train) == 9


def test_corrupt_and_empty_images_are_named(image_folder):
    bad = image_folder / "circle" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match="bad.png"):
        load_splits(ClsDataArgs(dataset=str(image_folder)))
    empty = image_folder / "square" / "empty.png"
    empty.write_bytes(b"")
    bad.unlink()
    with pytest.raises(DataError, match="empty.png.*0 bytes"):
        load_splits(ClsDataArgs(dataset=str(image_folder)))
    train, ev, _ = load_splits(
        ClsDataArgs(dataset=str(image_folder), skip_bad_images=True, val_fraction=0.25)
    )
    assert len(train) + len(ev) == 12  # the bad one skipped, the 12 good kept


def test_csv_errors(image_folder, tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("path,label\nimgs/circle/missing.png,circle\n")
    with pytest.raises(DataError, match=r"d.csv:2: image .*missing.png not found"):
        load_splits(ClsDataArgs(dataset=str(csv)))
    csv.write_text("path,label\n../../etc/passwd,circle\n")
    with pytest.raises(DataError, match=r"d.csv:2.*escapes"):
        load_splits(ClsDataArgs(dataset=str(csv)))
    csv.write_text("file,label\nx.png,a\n")
    with pytest.raises(DataError, match=r"d.csv:1.*'path'"):
        load_splits(ClsDataArgs(dataset=str(csv)))


def test_unknown_eval_label_and_empty_folder(image_folder, tmp_path):
    ev = tmp_path / "ev"
    (ev / "hexagon").mkdir(parents=True)
    next(image_folder.rglob("*.png")).rename(ev / "hexagon" / "a.png")
    with pytest.raises(DataError, match="'hexagon'"):
        load_splits(ClsDataArgs(dataset=str(image_folder), eval_dataset=str(ev)))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_splits(ClsDataArgs(dataset=str(tmp_path / "empty")))


def test_empty_class_folder_is_named(image_folder):
    (image_folder / "aaa_empty").mkdir()
    with pytest.raises(DataError, match="aaa_empty: class folder has no images"):
        load_splits(ClsDataArgs(dataset=str(image_folder)))


def test_rotated_phone_photos_train_upright(image_folder):
    """Images with an EXIF Orientation are checked and trained as shown (turned), not as stored."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    for p in image_folder.rglob("*.png"):
        Image.open(p).convert("RGB").resize((40, 30)).save(p, exif=exif)
    train, ev, _ = load_splits(ClsDataArgs(dataset=str(image_folder), val_fraction=0.25))
    assert {im.size for im in [*train["image"], *ev["image"]]} == {(30, 40)}


def test_unreadable_exif_is_named_or_skipped(image_folder, monkeypatch):
    """Broken EXIF fails up front naming the file (datasets would crash on it mid-training)."""
    import PIL.ImageOps
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    bad = image_folder / "circle" / "odd_exif.png"
    Image.new("RGB", (32, 32)).save(bad, exif=exif)
    monkeypatch.setattr(PIL.ImageOps, "exif_transpose", lambda img: 1 / 0)
    with pytest.raises(DataError, match="odd_exif.png: unreadable EXIF"):
        load_splits(ClsDataArgs(dataset=str(image_folder)))
    train, ev, _ = load_splits(ClsDataArgs(dataset=str(image_folder), skip_bad_images=True))
    assert len(train) + len(ev) == 12
