"""predict never writes over its inputs, a run's files or a user's file; rotated phone photos are upright."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from vision_det.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("shapes") / "tiny"
    argv = ["train", "--config", "tiny", "--output_dir", str(out), "--shapes_cache_dir", str(cache)]
    assert main(argv + ["--max_steps", "1", "--shapes_train_images", "4", "--shapes_val_images", "2"]) == 0
    return out


def photos(folder, names, size=(64, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
    return folder


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("vision-det predict: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_predicting_into_the_photos_folder_never_overwrites_a_photo(run, tmp_path, capsys):
    folder = photos(tmp_path / "photos", ["0.png", "1.png"])
    before = snapshot(folder)
    assert main(["predict", "--adapter_dir", str(run), "--predictions_dir", str(folder), str(folder)]) == 2
    line = error_line(capsys)
    assert "0.png would overwrite the input" in line and "pick another --predictions_dir" in line
    assert snapshot(folder) == before  # refused before anything was written


def test_outputs_next_to_jpgs_are_replaced_on_a_rerun_but_a_users_file_is_kept(run, tmp_path, capsys):
    folder = photos(tmp_path / "photos", ["a.jpg", "b.jpg"])
    jpgs = snapshot(folder)
    argv = ["predict", "--adapter_dir", str(run), "--predictions_dir", str(folder)]
    argv += [str(folder / "a.jpg"), str(folder / "b.jpg")]
    assert main(argv) == 0
    assert {p.name for p in folder.iterdir()} == {"a.jpg", "b.jpg", "a.png", "b.png", "predictions.json"}
    assert main(argv) == 0  # its own earlier outputs: replaced, as a re-run expects
    assert all(folder.joinpath(p.name).read_bytes() == b for p, b in jpgs.items())
    Image.new("RGB", (5, 5)).save(folder / "b.png")  # now a file of the user's own is in the way
    mine = (folder / "b.png").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert "b.png: exists and was not written by predict" in error_line(capsys)
    assert (folder / "b.png").read_bytes() == mine


def test_predicting_into_the_run_dir_keeps_the_runs_files(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = snapshot(copy)
    src = photos(tmp_path / "in", ["curves.png"])  # the same name as the run's loss plot
    argv = ["predict", "--adapter_dir", str(copy), "--predictions_dir", str(copy), str(src / "curves.png")]
    assert main(argv) == 2
    assert "curves.png: exists and was not written by predict" in error_line(capsys)
    assert snapshot(copy) == before


def test_rotated_phone_photo_is_predicted_upright(run, tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48, shown 48x64
    Image.fromarray(arr).save(tmp_path / "phone.jpg", exif=exif)
    out = tmp_path / "pred"
    argv = ["predict", "--adapter_dir", str(run), "--threshold", "0", "--predictions_dir", str(out)]
    assert main(argv + [str(tmp_path / "phone.jpg")]) == 0
    assert Image.open(out / "phone.png").size == (48, 64)
    boxes = [r["bbox"] for r in json.loads((out / "predictions.json").read_text())]
    assert boxes and all(x + w <= 48.01 and y + h <= 64.01 for x, y, w, h in boxes)
