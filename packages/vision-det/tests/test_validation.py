"""Every bad-annotation case exits 2 through the real CLI, naming the file and the record; --fix_boxes clips."""

import logging

import pytest
from vision_det.cli import main
from vision_det.config import DetDataArgs
from vision_det.data import load_splits, read_coco


def _box(i, bbox):
    def mutate(coco):
        coco["annotations"][i]["bbox"] = bbox

    return mutate


def _set(key, i, field, value):
    def mutate(coco):
        coco[key][i][field] = value

    return mutate


def _dup_image_id(coco):
    coco["images"][1]["id"] = coco["images"][0]["id"]


CASES = {
    "zero width": (
        _box(0, [5, 5, 0, 10]),
        r"annotations\[0\] \(id 1, image_id 1\): box \[5, 5, 0, 10\] has non-positive",
    ),
    "negative height": (_box(2, [5, 5, 10, -3]), r"annotations\[2\] .*non-positive width or height"),
    "outside image": (_box(1, [40, 40, 50, 10]), r"annotations\[1\] .*outside its 64x64 image.*--fix_boxes"),
    "unknown category": (
        _set("annotations", 0, "category_id", 99),
        r"annotations\[0\] .*unknown category_id 99",
    ),
    "unknown image": (
        _set("annotations", 0, "image_id", 404),
        r"annotations\[0\] .*image_id 404 is not in 'images'",
    ),
    "missing image": (
        _set("images", 2, "file_name", "train/nope.png"),
        r"images\[2\] .*nope.png.* not found",
    ),
    "duplicate image id": (_dup_image_id, r"images\[1\] .*duplicate image id 1 \(first at images\[0\]\)"),
    "wrong size": (_set("images", 0, "width", 65), r"images\[0\] .*says 65x64 but the file is 64x64"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_annotation_exits_2_naming_the_record(case, coco_file, shapes, tmp_path, capsys):
    mutate, pattern = CASES[case]
    path = coco_file(mutate)
    out = tmp_path / "out"
    argv = [
        "train",
        "--config",
        "tiny",
        "--dataset",
        str(path),
        "--image_root",
        str(shapes),
        "--output_dir",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    import re

    assert str(path) in err and re.search(pattern, err), err
    assert "Traceback" not in err
    assert not (out / "adapter_model.safetensors").exists() and not (out / "base_model").exists()


def test_invalid_json_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    assert (
        main(["train", "--config", "tiny", "--dataset", str(bad), "--output_dir", str(tmp_path / "o")]) == 2
    )
    assert "bad.json:2: not valid JSON" in capsys.readouterr().err


def test_fix_boxes_clips_and_drops_with_counts(coco_file, shapes, caplog):
    def mutate(coco):
        coco["annotations"][0]["bbox"] = [50, 50, 30, 30]  # partly outside: clipped to [50, 50, 14, 14]
        coco["annotations"][1]["bbox"] = [5, 5, 0, 4]  # no area: dropped
        coco["annotations"][2]["bbox"] = [70, 70, 5, 5]  # entirely outside: dropped

    path = coco_file(mutate)
    n_before = len(read_coco(shapes / "train.json")[0][0]["objects"]["bbox"])
    with caplog.at_level(logging.WARNING):
        records, _ = read_coco(path, shapes, fix_boxes=True)
    assert "clipped 1 box(es)" in caplog.text and "dropped 2" in caplog.text
    first = records[0]["objects"]["bbox"]
    assert first[0] == [50.0, 50.0, 14.0, 14.0]
    assert (
        sum(len(r["objects"]["bbox"]) for r in records)
        == sum(len(r["objects"]["bbox"]) for r in read_coco(shapes / "train.json")[0]) - 2
    )
    assert n_before >= 1
    # the same file without the flag is an error, with it the splits load
    train, ev, _ = load_splits(
        DetDataArgs(dataset=str(path), image_root=str(shapes), fix_boxes=True, val_fraction=0.34)
    )
    assert len(train) + len(ev) == 6
