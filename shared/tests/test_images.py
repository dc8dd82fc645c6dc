"""EXIF orientation in the shared image loader, and the COCO width/height check that knows about it."""

import numpy as np
import pytest
from lora_shared.errors import DataError
from lora_shared.images import check_coco_size, check_image, collect_inputs, open_image, upright
from PIL import Image


def phone_photo(path, orientation=6, size=(40, 30)):
    """A photo stored `size` (landscape) with a red top-left corner and an EXIF Orientation tag."""
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_open_image_turns_a_rotated_phone_photo_upright(tmp_path, suffix):
    img = open_image(phone_photo(tmp_path / f"phone{suffix}"))
    # Orientation 6: viewers turn it 90 degrees clockwise, so 40x30 stored is 30x40 shown and the stored
    # top-left corner ends up top-right.
    assert img.size == (30, 40) and img.mode == "RGB"
    r, g, b = img.getpixel((29, 0))
    assert r > 200 and g < 60 and b < 60
    assert img.getpixel((0, 0))[0] < 60
    assert img.getexif().get(0x0112) is None  # applied once: a second upright() is a no-op
    assert upright(img).size == (30, 40)


def test_upright_leaves_untagged_images_alone(tmp_path):
    plain = Image.new("RGB", (40, 30))
    assert upright(plain) is plain
    assert open_image(phone_photo(tmp_path / "up.png", orientation=1)).size == (40, 30)


def test_unreadable_exif_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    import PIL.ImageOps

    path = phone_photo(tmp_path / "broken.jpg")

    def boom(img):
        raise ZeroDivisionError("division by zero")  # what Pillow raised on a zero EXIF rational

    monkeypatch.setattr(PIL.ImageOps, "exif_transpose", boom)
    with pytest.raises(DataError, match=r"broken\.jpg: unreadable EXIF metadata .*without EXIF"):
        open_image(path)
    assert "EXIF" in check_image(path)  # --skip_bad_images counts it instead of crashing mid-training


def test_coco_size_of_the_photo_as_shown_is_accepted(tmp_path):
    path = phone_photo(tmp_path / "phone.jpg")
    check_coco_size("train.json: images[0]", path, (30, 40), open_image(path).size, "boxes")


def test_coco_size_of_the_stored_pixels_blames_the_orientation(tmp_path):
    path = phone_photo(tmp_path / "phone.jpg")
    with pytest.raises(DataError) as e:
        check_coco_size("train.json: images[0]", path, (40, 30), open_image(path).size, "boxes")
    msg = str(e.value)
    assert msg.startswith("train.json: images[0]: ") and "phone.jpg" in msg
    assert "EXIF orientation 6" in msg and "30x40" in msg and "Orientation" in msg
    assert "fix width/height" not in msg  # editing width/height would not fix the boxes


def test_coco_size_that_matches_nothing_asks_to_fix_width_height(tmp_path):
    path = phone_photo(tmp_path / "phone.jpg")
    with pytest.raises(
        DataError, match=r"says 50x50 but the file is 30x40 as shown \(stored 40x30.*fix width"
    ):
        check_coco_size("x.json: images[3]", path, (50, 50), open_image(path).size, "keypoints")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (40, 30)).save(plain)
    with pytest.raises(DataError, match=r"says 41x30 but the file is 40x30; fix width/height \(keypoints"):
        check_coco_size("x.json: images[0]", plain, (41, 30), (40, 30), "keypoints")


def test_collect_inputs_expands_directories_sorted_and_keeps_files_as_given(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for rel in ("b.png", "a.JPG", "sub/c.webp", "notes.txt"):
        (d / rel).write_bytes(b"x")
    single = tmp_path / "people.json"  # a file is taken as given, whatever its suffix (pose reads COCO .json)
    single.write_text("{}")
    got = collect_inputs([str(single), str(d)])
    assert got == [single, d / "a.JPG", d / "b.png", d / "sub" / "c.webp"]


def test_collect_inputs_errors_name_the_path_and_what_predict_takes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images in this directory$"):
        collect_inputs([str(tmp_path / "empty")])
    with pytest.raises(DataError, match=r"missing\.png: file not found$"):
        collect_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(DataError, match=r"^predict needs at least one image file or directory$"):
        collect_inputs([])
    with pytest.raises(
        DataError, match=r"^predict needs at least one image, directory or COCO keypoints \.json$"
    ):
        collect_inputs([], "image, directory or COCO keypoints .json")
