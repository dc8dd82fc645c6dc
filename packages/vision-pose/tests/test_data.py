import json
import random

import numpy as np
import pytest
import torch
from lora_shared.errors import DataError
from vision_pose.config import PoseDataArgs
from vision_pose.data import (
    CropSettings,
    PoseDataset,
    collate_fn,
    figures_split,
    flip_pairs,
    flip_permutation,
    heatmap_to_image,
    load_coco,
    load_splits,
    make_sample,
)
from vision_pose.figures import FIGURE_KEYPOINTS, make_figures


def test_flip_pairs_from_names():
    names = [
        "nose",
        "left_eye",
        "right_eye",
        "Left Hand",
        "Right Hand",
        "l_foot",
        "r_foot",
        "knee_L",
        "knee_R",
    ]
    assert sorted(tuple(sorted(p)) for p in flip_pairs(names)) == [(1, 2), (3, 4), (5, 6), (7, 8)]
    perm = flip_permutation(names)
    assert perm.tolist() == [0, 2, 1, 4, 3, 6, 5, 8, 7]
    assert flip_permutation(FIGURE_KEYPOINTS)[FIGURE_KEYPOINTS.index("left_hand")] == FIGURE_KEYPOINTS.index(
        "right_hand"
    )


def _settings(**kw):
    return CropSettings(64, 48, 32, 24, flip_perm=flip_permutation(FIGURE_KEYPOINTS), **kw)


def test_crop_roundtrip_recovers_image_coordinates():
    split = figures_split(3, 64, seed=1, split="val")
    st = _settings()
    for a in split.people:
        s = make_sample(split.image(a["image_id"]), a, st)
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        back = heatmap_to_image(s["labels"][:, :2].numpy(), s["matrix"], st.stride)
        lab = kp[:, 2] > 0
        np.testing.assert_allclose(back[lab], kp[lab, :2], atol=1e-3)
        assert s["pixel_values"].shape == (3, 64, 48)
        assert (s["labels"][:, 2].numpy() == lab).all()


def test_flip_swaps_left_and_right():
    split = figures_split(2, 64, seed=1, split="val")
    a = split.people[0]
    img = split.image(a["image_id"])
    plain = make_sample(img, a, _settings())
    flipped = make_sample(img, a, _settings(flip_prob=1.0), random.Random(0))
    li, ri = FIGURE_KEYPOINTS.index("left_hand"), FIGURE_KEYPOINTS.index("right_hand")
    hi = FIGURE_KEYPOINTS.index("head")
    w = 24  # heatmap width: u -> w - 1 - u mirrors pixel centres
    p, f = plain["labels"].numpy(), flipped["labels"].numpy()
    np.testing.assert_allclose(f[li, 0], w - 1 - p[ri, 0], atol=1e-4)
    np.testing.assert_allclose(f[li, 1], p[ri, 1], atol=1e-4)
    np.testing.assert_allclose(f[ri, 0], w - 1 - p[li, 0], atol=1e-4)
    np.testing.assert_allclose(f[hi, 0], w - 1 - p[hi, 0], atol=1e-4)  # unpaired keypoint just mirrors
    # and the pixels are mirrored too
    np.testing.assert_allclose(
        flipped["pixel_values"].numpy(), plain["pixel_values"].numpy()[..., ::-1], atol=1e-5
    )


def test_figures_are_deterministic_and_valid():
    a, pa = make_figures(5, 64, seed=3, split="train")
    b, pb = make_figures(5, 64, seed=3, split="train")
    c, _ = make_figures(5, 64, seed=3, split="val")
    assert a == b and a != c
    assert np.array_equal(np.asarray(pa[2]), np.asarray(pb[2]))
    ann = a["annotations"][0]
    assert len(ann["keypoints"]) == 3 * len(FIGURE_KEYPOINTS) and ann["area"] > 0
    many, _ = make_figures(60, 64, seed=0)
    vis = np.concatenate([np.asarray(x["keypoints"]).reshape(-1, 3)[:, 2] for x in many["annotations"]])
    assert (vis == 1).any() and (vis == 2).mean() > 0.8  # occluded (v=1) keypoints occur, but rarely


def test_collate_shapes():
    split = figures_split(3, 64, seed=1, split="val")
    st = _settings()
    batch = collate_fn(
        [
            {k: v for k, v in make_sample(split.image(a["image_id"]), a, st).items() if k != "matrix"}
            for a in split.people[:3]
        ]
    )
    assert batch["pixel_values"].shape == (3, 3, 64, 48) and batch["labels"].shape == (3, 13, 5)


def test_train_augmentation_is_seeded_per_person_so_resume_replays_it():
    # The Trainer fetches a batch ahead of each checkpoint, so draws from one running RNG replay differently
    # after --resume; per (seed, epoch, person) draws do not depend on what was fetched before.
    split = figures_split(4, 64, seed=1, split="train")
    st = _settings(flip_prob=0.5, rotation_deg=30.0, scale_jitter=0.25)

    def labels(ds, order):
        return [ds[i]["labels"] for i in order]

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    first = PoseDataset(split, st, train=True, seed=7)
    assert len(first) >= 4
    in_order = labels(first, range(4))
    resumed = PoseDataset(split, st, train=True, seed=7)  # a fresh object, fetched out of order
    assert same(labels(resumed, (3, 1)), [in_order[3], in_order[1]])
    assert same(labels(first, (2,)), [in_order[2]])  # the same person twice in an epoch: the same draw
    assert not same(labels(PoseDataset(split, st, train=True, seed=8), range(4)), in_order)
    first.seeds.epoch = 1  # what epoch_callback sets: a new epoch draws anew
    assert not same(labels(first, range(4)), in_order)
    plain = PoseDataset(split, st, train=False, seed=7)  # eval crops are never augmented
    person = split.people[0]
    assert torch.equal(plain[0]["labels"], make_sample(split.image(person["image_id"]), person, st)["labels"])


def test_load_dir_splits_by_image(coco_dir):
    train, ev = load_splits(PoseDataArgs(dataset=str(coco_dir), val_fraction=0.25))
    assert len(train.images) == 3 and len(ev.images) == 1
    assert not set(train.images) & set(ev.images)
    assert train.image(next(iter(train.images))).size == (64, 64)


def _edit(coco_dir, fn):
    path = coco_dir / "train.json"
    coco = json.loads(path.read_text())
    fn(coco)
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: c["annotations"][1].update(keypoints=c["annotations"][1]["keypoints"][:-3]),
         r"annotations\[1\] \(id=\d+\): keypoints has 36 values, expected 39"),
        (lambda c: c["annotations"][0]["keypoints"].__setitem__(0, 500.0),
         r"annotations\[0\].*keypoint 'head' at \(500, .*outside its 64x64 image"),
        (lambda c: c["annotations"][2].update(category_id=7),
         r"annotations\[2\].*unknown category_id 7"),
        (lambda c: c["annotations"][0].update(image_id=999),
         r"annotations\[0\].*image_id 999 is not in 'images' \(missing image\)"),
        (lambda c: c["images"][0].update(file_name="images/train/gone.png"),
         r"image id=1 file 'images/train/gone.png' not found.*missing image"),
        (lambda c: c["annotations"][0]["keypoints"].__setitem__(2, 3),
         r"annotations\[0\].*visibility flags must be 0, 1 or 2"),
        (lambda c: c["annotations"][0].update(bbox=[0, 0, 0, 5]),
         r"annotations\[0\].*bbox must be"),
        (lambda c: c.pop("categories"), r"missing the 'categories' list"),
    ],
)  # fmt: skip
def test_bad_annotations_are_named(coco_dir, edit, match):
    path = _edit(coco_dir, edit)
    with pytest.raises(DataError, match=match) as e:
        load_coco(path)
    assert str(path) in str(e.value)


def test_missing_area_and_bbox_are_filled(coco_dir):
    def drop(c):
        c["annotations"][0].pop("area")
        c["annotations"][0].pop("bbox")

    split = load_coco(_edit(coco_dir, drop))
    a = split.anns[0]
    assert a["bbox"][2] > 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])


def _rotate_first_image(coco_dir, declared_as_shown: bool):
    """Store image 1 of train.json as a rotated phone photo (pixels turned back, EXIF Orientation 6)."""
    from PIL import Image

    path = coco_dir / "train.json"
    coco = json.loads(path.read_text())
    im = coco["images"][0]
    shown = Image.open(coco_dir / im["file_name"]).convert("RGB").crop((0, 0, 48, 64))  # portrait
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # what a phone writes: 64x48 + "turn me back"
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(coco_dir / im["file_name"], exif=exif)  # PNG keeps EXIF too, and the pixels exact
    im["width"], im["height"] = (48, 64) if declared_as_shown else (64, 48)
    for a in coco["annotations"]:
        if a["image_id"] == im["id"]:
            kp = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
            kp[(kp[:, 0] >= 47) | (kp[:, 1] >= 63), 2] = 0  # keep labelled keypoints inside the crop
            kp[kp[:, 2] == 0, :2] = 0
            a["keypoints"] = kp.ravel().tolist()
            a.pop("bbox", None), a.pop("area", None)
    path.write_text(json.dumps(coco))
    return path, shown


def test_rotated_phone_photo_is_read_as_shown(coco_dir):
    """COCO width/height and keypoints describe the photo as shown: the training crops see it upright."""
    path, shown = _rotate_first_image(coco_dir, declared_as_shown=True)
    split = load_coco(path)
    img = split.image(1)
    assert img.size == (48, 64)
    assert np.array_equal(np.asarray(img), np.asarray(shown))  # the upright pixels, not the stored ones


def test_stored_size_of_a_rotated_photo_blames_exif_not_width_height(coco_dir):
    path, _ = _rotate_first_image(coco_dir, declared_as_shown=False)
    with pytest.raises(DataError) as e:
        load_coco(path)
    msg = str(e.value)
    assert "image id=1" in msg and "EXIF orientation 6" in msg and "keypoints" in msg
    assert "fix width/height" not in msg


def test_width_height_must_match_the_image(coco_dir):
    path = _edit(coco_dir, lambda c: c["images"][0].update(width=70))
    with pytest.raises(DataError, match=r"image id=1: the JSON says 70x64 but the file is 64x64; fix width"):
        load_coco(path)
