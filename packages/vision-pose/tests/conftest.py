"""vision-pose fixtures: a small COCO keypoints dataset written to disk (PNG files + JSON)."""

import json

import pytest


@pytest.fixture
def coco_dir(tmp_path):
    """tmp/coco: train.json over 4 generated figure images in images/train/ (returns the folder)."""
    from vision_pose.figures import make_figures

    coco, pil = make_figures(4, 64, seed=5, split="train")
    root = tmp_path / "coco"
    (root / "images" / "train").mkdir(parents=True)
    for im in coco["images"]:
        pil[im["id"]].save(root / im["file_name"])
    (root / "train.json").write_text(json.dumps(coco))
    return root
