"""predict never writes over a run's keypoints.json, its inputs or a user's file; phone photos are upright."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from vision_pose.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--config", "tiny", "--output_dir", str(out), "--max_steps", "1"]
    assert main(argv + ["--figures_train", "4", "--figures_val", "2"]) == 0
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def photo(path, size=(48, 64), orientation=None):
    arr = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, exif=exif)
    return path


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("vision-pose predict: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_predictions_dir_run_keeps_the_runs_keypoints_json(run_copy, tmp_path, capsys):
    """Issue 14.3: --predictions_dir <run> wrote results over the run's schema; every later predict crashed."""
    img = photo(tmp_path / "in" / "person.png")
    before = snapshot(run_copy)
    argv = ["predict", "--adapter_dir", str(run_copy), str(img)]
    assert main([*argv, "--predictions_dir", str(run_copy)]) == 2
    line = error_line(capsys)
    assert "keypoints.json: exists and was not written by predict" in line and "--predictions_dir" in line
    assert snapshot(run_copy) == before
    assert main(argv) == 0  # the run still works: default <run>/predictions
    results = json.loads((run_copy / "predictions" / "keypoints.json").read_text())
    assert results[0]["drawing"] == "person_pose.png"
    assert (run_copy / "predictions" / "person_pose.png").is_file()
    assert main(argv) == 0  # and again: its own outputs are replaced


def test_a_damaged_schema_is_one_clear_line(run_copy, tmp_path, capsys):
    (run_copy / "keypoints.json").write_text("[]")  # what an older predict --predictions_dir <run> left
    assert main(["predict", "--adapter_dir", str(run_copy), str(photo(tmp_path / "p.png"))]) == 2
    assert "keypoints.json: not the run's keypoint schema" in error_line(capsys)


def test_custom_folder_rerun_and_a_users_file_in_the_way(run, tmp_path, capsys):
    img = photo(tmp_path / "in" / "me.png")
    out = tmp_path / "out"
    argv = ["predict", "--adapter_dir", str(run), "--predictions_dir", str(out), str(img)]
    assert main(argv) == 0 and main(argv) == 0
    Image.new("RGB", (4, 4)).save(out / "me_pose.png")  # replaced by a file of the user's own
    mine = (out / "me_pose.png").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert "me_pose.png: exists and was not written by predict" in error_line(capsys)
    assert (out / "me_pose.png").read_bytes() == mine


def test_predicting_into_the_inputs_folder_never_overwrites_an_input(run, tmp_path, capsys):
    folder = tmp_path / "in"
    photo(folder / "a.png")
    (folder / "keypoints.json").write_text(json.dumps({"note": "a user's file"}))
    before = snapshot(folder)
    assert main(["predict", "--adapter_dir", str(run), "--predictions_dir", str(folder), str(folder)]) == 2
    assert "keypoints.json" in error_line(capsys)
    assert snapshot(folder) == before


def test_rotated_phone_photo_is_predicted_upright(run, tmp_path):
    img = photo(tmp_path / "phone.jpg", size=(64, 48), orientation=6)  # stored 64x48, shown 48x64
    out = tmp_path / "pred"
    assert main(["predict", "--adapter_dir", str(run), "--predictions_dir", str(out), str(img)]) == 0
    (r,) = json.loads((out / "keypoints.json").read_text())
    assert r["bbox"] == [0.0, 0.0, 48.0, 64.0]  # the whole image as shown
    w, h = Image.open(out / "phone_pose.png").size
    assert h > w
    # A COCO file listing the photo with its size as shown is accepted too.
    coco = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": 48, "height": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 30, 40, 30], "keypoints": [0] * 15}
        ],
        "categories": [
            {
                "id": 1,
                "name": "person",
                "keypoints": json.loads((run / "keypoints.json").read_text())["keypoints"],
            }
        ],
    }
    k = len(coco["categories"][0]["keypoints"])
    coco["annotations"][0]["keypoints"] = [0] * (3 * k)
    (tmp_path / "people.json").write_text(json.dumps(coco))
    out2 = tmp_path / "pred2"
    argv = [
        "predict",
        "--adapter_dir",
        str(run),
        "--predictions_dir",
        str(out2),
        str(tmp_path / "people.json"),
    ]
    assert main(argv) == 0
