import json

import numpy as np
import pytest
import torch
from vision_det.config import DetDataArgs
from vision_det.data import (
    SHAPE_CLASSES,
    apply_transform,
    build_transforms,
    coco_to_detr,
    collate_fn,
    detr_to_coco,
    load_splits,
    make_shapes_image,
    transform_batch,
)


def test_box_formats_round_trip():
    coco = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 200.0, 100.0], [150.5, 60.25, 0.5, 39.75]])
    detr = coco_to_detr(coco, (100, 200))  # (height, width)
    # centre + size, normalised by width for x/w and height for y/h
    torch.testing.assert_close(detr[0], torch.tensor([25 / 200, 40 / 100, 30 / 200, 40 / 100]))
    torch.testing.assert_close(detr[1], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert detr.min() >= 0 and detr.max() <= 1
    torch.testing.assert_close(detr_to_coco(detr, (100, 200)), coco)


def test_shapes_are_deterministic_coco(shapes, tmp_path):
    from vision_det.data import write_shapes_dataset

    again = write_shapes_dataset(tmp_path / "again", 6, 3, size=64, seed=1)
    assert (shapes / "train.json").read_bytes() == (again / "train.json").read_bytes()
    assert (shapes / "val" / "000002.png").read_bytes() == (again / "val" / "000002.png").read_bytes()
    coco = json.loads((shapes / "val.json").read_text())
    assert [c["name"] for c in coco["categories"]] == SHAPE_CLASSES
    assert len(coco["images"]) == 3 and all((shapes / im["file_name"]).is_file() for im in coco["images"])
    per_image = [sum(a["image_id"] == im["id"] for a in coco["annotations"]) for im in coco["images"]]
    assert all(1 <= n <= 6 for n in per_image)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64.01 and y + h <= 64.01


def test_shape_boxes_are_tight():
    """Each generated box is the bounding box of the pixels its shape painted (the last-drawn one)."""
    rng = np.random.default_rng(7)
    img, objects = make_shapes_image(rng, 96)
    assert objects
    cls, (x, y, w, h) = objects[-1]  # drawn last: nothing covers it
    arr = np.asarray(img).astype(int)
    colour = arr[int(y + h / 2), int(x + w / 2)]
    mask = (np.abs(arr - colour).sum(-1) < 10)[int(y) : int(y + h) + 1, int(x) : int(x + w) + 1]
    assert mask.mean() > 0.4  # the shape fills its box (a triangle at least ~40%)


def _scene(size=64):
    """Uniform grey image with a red square near a corner and a blue rectangle in the middle."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (128, 128, 128))
    d = ImageDraw.Draw(img)
    d.rectangle([1, 1, 10, 10], fill=(255, 0, 0))  # COCO box [1, 1, 10, 10]
    d.rectangle([24, 20, 43, 47], fill=(0, 0, 255))  # COCO box [24, 20, 20, 28]
    return img, [[1, 1, 10, 10], [24, 20, 20, 28]], [0, 1]


def _mask_box(arr, colour):
    m = np.abs(arr.astype(int) - np.array(colour)).sum(-1) < 60
    if m.sum() == 0:
        return None, 0
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], int(m.sum())


def _iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_augmentation_moves_boxes_with_the_objects():
    args = DetDataArgs(aug_hflip=0.5, aug_scale=[0.7, 1.4], aug_translate=0.2, aug_color_jitter=0.0)
    tf = build_transforms(args, train=True)
    img, boxes, cats = _scene()
    colours = {0: (255, 0, 0), 1: (0, 0, 255)}
    dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out_img, out_boxes, out_cats = apply_transform(tf, img, boxes, cats)
        arr = out_img.permute(1, 2, 0).numpy() if torch.is_tensor(out_img) else np.asarray(out_img)
        assert arr.shape[:2] == (64, 64)
        kept = dict(zip(out_cats.tolist(), out_boxes.tolist()))
        for cat, colour in colours.items():
            seen, pixels = _mask_box(arr, colour)
            if cat in kept:
                assert seen is not None, (
                    f"seed {seed}: box kept for class {cat} but its object left the image"
                )
                assert _iou(kept[cat], seen) > 0.6, (seed, cat, kept[cat], seen)
                x, y, w, h = kept[cat]
                assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64  # clamped to the image
            else:
                dropped += 1
                assert pixels < 20, (
                    f"seed {seed}: class {cat} still shows {pixels} px but its box was dropped"
                )
    assert dropped > 0  # the corner square leaves the image under some zoom/shift draws


def test_train_augmentation_is_seeded_per_image_so_resume_replays_it(shapes):
    # The Trainer fetches a batch ahead of each checkpoint, so draws from one running RNG replay differently
    # after --resume; per (seed, epoch, image_id) draws do not depend on what was fetched before.
    from lora_shared.seed import SeededAugment
    from transformers import DetrImageProcessor

    train, _, _ = load_splits(DetDataArgs(dataset=str(shapes)))
    assert len(train) >= 4
    proc = DetrImageProcessor(size={"max_height": 48, "max_width": 48})
    args = DetDataArgs(aug_hflip=0.5, aug_scale=[0.6, 1.4], aug_translate=0.2, aug_color_jitter=0.3)

    def augment(seed):
        return SeededAugment(build_transforms(args, train=True), seed=seed)

    def fetch(aug, rows):  # (image, boxes, classes) per image, as the Trainer's batches get them
        batch = transform_batch(rows if isinstance(rows, dict) else train[list(rows)], aug, proc)
        return [(p, t["boxes"], t["class_labels"]) for p, t in zip(batch["pixel_values"], batch["labels"])]

    def same(a, b):
        return all(torch.equal(x, y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))

    first = augment(7)
    in_order = fetch(first, range(4))
    torch.manual_seed(123)  # the global RNG is elsewhere after --resume: the draws do not read it
    resumed = fetch(augment(7), (3, 1))  # a fresh object, fetched out of order
    assert same(resumed, [in_order[3], in_order[1]])
    assert same(fetch(first, (2,)), [in_order[2]])  # the same image twice in an epoch: the same draw
    assert not same(fetch(augment(8), range(4)), in_order)
    first.epoch = 1  # what epoch_callback sets: a new epoch draws anew
    assert not same(fetch(first, range(4)), in_order)
    # The draw follows the image_id: one image under one id twice is augmented alike, under two ids not.
    twice = train[[0, 0]]
    a, b = fetch(first, twice)
    assert same([a], [b])
    twice["image_id"] = [101, 102]
    a, b = fetch(first, twice)
    assert not same([a], [b])


def test_eval_transform_is_identity():
    img, boxes, cats = _scene()
    out_img, out_boxes, out_cats = apply_transform(
        build_transforms(DetDataArgs(), train=False), img, boxes, cats
    )
    assert out_boxes.tolist() == boxes and out_cats.tolist() == cats


def test_transform_batch_and_collate(shapes):
    from transformers import DetrImageProcessor

    train, ev, cats = load_splits(DetDataArgs(dataset=str(shapes)))
    assert (len(train), len(ev), [c["name"] for c in cats]) == (6, 3, SHAPE_CLASSES)
    proc = DetrImageProcessor(size={"max_height": 48, "max_width": 48})
    batch = transform_batch(ev[:3], build_transforms(DetDataArgs(), False), proc)
    out = collate_fn(
        [{"pixel_values": p, "labels": t} for p, t in zip(batch["pixel_values"], batch["labels"])]
    )
    assert out["pixel_values"].shape == (3, 3, 48, 48) and out["pixel_mask"].shape == (3, 48, 48)
    t = out["labels"][0]
    n = len(ev[0]["objects"]["bbox"])
    assert t["boxes"].shape == (n, 4) and t["class_labels"].shape == (n,)
    # targets are the COCO boxes in normalised cxcywh
    expected = coco_to_detr(torch.tensor(ev[0]["objects"]["bbox"]), (64, 64))
    torch.testing.assert_close(t["boxes"], expected, atol=1e-4, rtol=0)


def test_datasets_dir_with_objects(shapes, tmp_path):
    """The HF object-detection layout: image + objects{bbox, category (ClassLabel)}."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value

    coco = json.loads((shapes / "train.json").read_text())
    rows = {"image": [], "image_id": [], "objects": []}
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        rows["image"].append(str(shapes / im["file_name"]))
        rows["image_id"].append(im["id"])
        rows["objects"].append(
            {"bbox": [a["bbox"] for a in anns], "category": [a["category_id"] - 1 for a in anns]}
        )
    feats = Features(
        {
            "image": Image(),
            "image_id": Value("int64"),
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(ClassLabel(names=SHAPE_CLASSES)),
            },
        }
    )
    ds = Dataset.from_dict(rows, features=feats)
    DatasetDict({"train": ds.select(range(4)), "validation": ds.select(range(4, 6))}).save_to_disk(
        tmp_path / "hf"
    )
    train, ev, cats = load_splits(DetDataArgs(dataset=str(tmp_path / "hf")))
    assert (len(train), len(ev), [c["name"] for c in cats]) == (4, 2, SHAPE_CLASSES)
    assert train[0]["objects"]["category"] == rows["objects"][0]["category"]


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_bad_val_fraction(coco_file, fraction):
    from lora_shared.errors import DataError

    with pytest.raises(DataError, match="val_fraction"):
        load_splits(DetDataArgs(dataset=str(coco_file()), val_fraction=fraction))


def _phone_photo(path, size=(64, 48)):
    """A landscape-stored photo with EXIF Orientation 6 (shown portrait) and a red stored top-left corner."""
    from PIL import Image

    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif)
    return path


def _phone_coco(tmp_path, declared):
    """COCO file with a plain image and a rotated phone photo whose entry says `declared` (w, h)."""
    from PIL import Image

    Image.new("RGB", (64, 48)).save(tmp_path / "plain.png")
    _phone_photo(tmp_path / "phone.jpg")
    coco = {
        "images": [
            {"id": 1, "file_name": "plain.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "phone.jpg", "width": declared[0], "height": declared[1]},
        ],
        # the phone box sits low in the portrait photo: outside the stored 64x48, inside the shown 48x64
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [30, 50, 10, 10]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    return path


def test_rotated_phone_photo_is_read_as_shown(tmp_path):
    """COCO width/height and boxes describe the photo as shown (EXIF applied), and training sees it so."""
    from vision_det.data import _records_dataset, read_coco

    records, _ = read_coco(_phone_coco(tmp_path, (48, 64)))
    phone = records[1]
    assert (phone["width"], phone["height"]) == (48, 64) and phone["objects"]["bbox"] == [[30, 50, 10, 10]]
    img = _records_dataset(records)[1]["image"].convert("RGB")  # what transform_batch gets in training
    assert img.size == (48, 64)
    assert img.getpixel((47, 0))[0] > 200 and img.getpixel((0, 0))[0] < 60  # stored top-left is now top-right


def test_coco_with_the_stored_size_of_a_rotated_photo_blames_exif(tmp_path):
    from lora_shared.errors import DataError
    from vision_det.data import read_coco

    with pytest.raises(DataError) as e:
        read_coco(_phone_coco(tmp_path, (64, 48)))
    msg = str(e.value)
    assert "images[1]" in msg and "phone.jpg" in msg and "EXIF orientation 6" in msg
    assert "fix width/height" not in msg
