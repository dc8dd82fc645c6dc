"""--dataset through datasets.load_dataset: the imagefolder builder with a metadata.jsonl of
objects{bbox, category} (the transformers object-detection layout), and a hub id offline."""

import json
import time

import numpy as np
import pytest
from lora_shared.errors import DataError, UsageError
from vision_det.config import DetDataArgs
from vision_det.data import load_splits, make_shapes_image


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path, monkeypatch):
    """Offline, with a datasets cache of this test's own (load_dataset writes Arrow files there)."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _write_split(folder, n, seed, mutate=None):
    folder.mkdir(parents=True)
    lines = []
    for i in range(n):
        img, objects = make_shapes_image(np.random.default_rng([seed, i]), 48)
        img.save(folder / f"{i}.png")
        rec = {
            "file_name": f"{i}.png",
            "objects": {"bbox": [b for _, b in objects], "category": [c for c, _ in objects]},
        }
        lines.append(json.dumps(mutate(i, rec) if mutate else rec))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    return lines


def test_imagefolder_with_objects_metadata(tmp_path):
    lines = _write_split(tmp_path / "d" / "train", 5, 0)
    _write_split(tmp_path / "d" / "validation", 2, 1)
    train, ev, cats = load_splits(DetDataArgs(dataset="imagefolder", data_dir=str(tmp_path / "d")))
    assert (len(train), len(ev)) == (5, 2)
    first = json.loads(lines[0])["objects"]
    assert train.sort("image_id")[0]["objects"]["category"] == first["category"]
    assert len(cats) >= 1 and train[0]["image"].size == (48, 48)


def test_box_outside_the_image_is_named(tmp_path):
    def bad(i, rec):
        if i == 3:
            rec["objects"]["bbox"][0] = [40.0, 40.0, 30.0, 30.0]
        return rec

    _write_split(tmp_path / "d", 5, 0, bad)
    with pytest.raises(DataError, match=r"imagefolder \(.*\)\[train\]: row 3 objects\[0\]"):
        load_splits(DetDataArgs(dataset="imagefolder", data_dir=str(tmp_path / "d")))
    # --fix_boxes clips it, as for COCO files and datasets dirs.
    train, ev, _ = load_splits(
        DetDataArgs(dataset="imagefolder", data_dir=str(tmp_path / "d"), fix_boxes=True, val_fraction=0.2)
    )
    assert len(train) + len(ev) == 5


def test_hub_id_offline_fails_in_seconds():
    start = time.perf_counter()
    with pytest.raises(UsageError) as e:
        load_splits(DetDataArgs(dataset="cppe-5"))
    took = time.perf_counter() - start
    assert str(e.value).startswith(
        "--dataset cppe-5: no local file or folder"
    ) and "hub is unreachable" in str(e.value)
    assert took < 15, took  # seconds
