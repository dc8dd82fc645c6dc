"""predict outputs never replace an input, a run's own file or a user's file (lora_shared.outputs)."""

import json
import os

import pytest
from lora_shared.errors import UsageError
from lora_shared.outputs import check_outputs, png_bytes, written_by_predict
from PIL import Image


def test_marked_pngs_and_results_json_are_recognised(tmp_path):
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    (tmp_path / "ours.png").write_bytes(png_bytes(img))
    img.save(tmp_path / "photo.png")
    (tmp_path / "results.json").write_text(json.dumps([{"image_id": 1, "category_id": 0, "score": 0.5}]))
    (tmp_path / "empty.json").write_text("[]")  # predict on images with no detections
    (tmp_path / "keypoints.json").write_text(json.dumps({"keypoints": ["head"], "skeleton": []}))
    (tmp_path / "notes.txt").write_text("mine")
    assert written_by_predict(tmp_path / "ours.png") and written_by_predict(tmp_path / "results.json")
    assert written_by_predict(tmp_path / "empty.json")
    for name in ("photo.png", "keypoints.json", "notes.txt", "missing.png"):
        assert not written_by_predict(tmp_path / name), name
    assert Image.open(tmp_path / "ours.png").getpixel((0, 0)) == (1, 2, 3)


@pytest.fixture
def folders(tmp_path):
    photos, default = tmp_path / "photos", tmp_path / "run" / "predictions"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "0.png")
    return photos, default


def test_an_output_over_an_input_is_refused(folders):
    photos, default = folders
    with pytest.raises(
        UsageError, match=r"0\.png would overwrite the input .*photos/0\.png; pick another --pred"
    ):
        check_outputs([photos / "0.png"], [photos / "0.png"], photos, default)
    # ... also in predict's own default folder (predicting on earlier drawings)
    with pytest.raises(UsageError, match="would overwrite the input"):
        check_outputs([photos / "0.png"], [photos / "0.png"], photos, photos)


@pytest.mark.parametrize("link", [os.link, os.symlink])
def test_an_input_reached_through_a_link_is_refused(folders, tmp_path, link):
    photos, default = folders
    out = tmp_path / "out"
    out.mkdir()
    link(photos / "0.png", out / "0.png")
    with pytest.raises(UsageError, match="would overwrite the input"):
        check_outputs([out / "0.png"], [photos / "0.png"], out, default)


def test_a_file_predict_did_not_write_is_refused_outside_the_default_folder(folders, tmp_path):
    photos, default = folders
    run = tmp_path / "run"
    run.mkdir()
    (run / "keypoints.json").write_text('{"keypoints": []}')
    with pytest.raises(UsageError, match=r"run/keypoints\.json: exists and was not written by predict"):
        check_outputs([run / "keypoints.json"], [photos / "0.png"], run, default)
    # earlier predict outputs in a folder of the user's choice are replaced, as a re-run expects
    out = tmp_path / "out"
    out.mkdir()
    (out / "keypoints.json").write_text("[]")
    (out / "0_pose.png").write_bytes(png_bytes(Image.new("RGB", (4, 4))))
    check_outputs(
        [out / "keypoints.json", out / "0_pose.png", out / "new.png"], [photos / "0.png"], out, default
    )


def test_the_default_folder_replaces_earlier_outputs_as_before(folders):
    photos, default = folders
    default.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(default / "0.png")  # unmarked: written by an older version
    check_outputs([default / "0.png", default / "predictions.json"], [photos / "0.png"], default, default)


def test_a_predictions_dir_that_is_a_file_or_an_output_that_is_a_folder(folders, tmp_path):
    photos, default = folders
    with pytest.raises(UsageError, match=r"--predictions_dir .*0\.png/sub: .*0\.png is a file, not a folder"):
        check_outputs([photos / "0.png" / "sub" / "x.png"], [], photos / "0.png" / "sub", default)
    (tmp_path / "out" / "predictions.json").mkdir(parents=True)
    with pytest.raises(UsageError, match="this is a folder"):
        check_outputs([tmp_path / "out" / "predictions.json"], [], tmp_path / "out", default)
