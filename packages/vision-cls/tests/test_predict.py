"""predict only prints (it writes no file, so it can overwrite none) and sees rotated phone photos upright."""

import shutil

import numpy as np
import pytest
from PIL import Image
from vision_cls import predict as predict_mod
from vision_cls.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--config", "tiny", "--output_dir", str(out), "--max_steps", "1"]
    assert main(argv + ["--demo_images_per_class", "5"]) == 0
    return out


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_sees_a_rotated_phone_photo_upright_and_writes_nothing(run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    arr = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x30, shown 30x40
    Image.fromarray(arr).save(folder / "phone.jpg", exif=exif)
    Image.fromarray(arr).save(folder / "plain.png")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = snapshot(tmp_path)
    seen = []
    classify = predict_mod.classify

    def spy(model, images, *args, **kw):
        seen.extend(im.size for im in images)
        return classify(model, images, *args, **kw)

    monkeypatch.setattr(predict_mod, "classify", spy)
    capsys.readouterr()
    assert main(["predict", "--adapter_dir", str(copy), str(folder)]) == 0
    assert seen == [(30, 40), (40, 30)]  # phone.jpg turned as shown; plain.png as stored
    assert "phone.jpg:" in capsys.readouterr().out
    assert snapshot(tmp_path) == before  # no file created or changed anywhere (inputs, run dir)
