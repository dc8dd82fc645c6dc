"""vision-det fixtures: a small COCO shapes set written in the test, and a writer for hand-made COCO files."""

import json

import pytest


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A 6-train / 3-val shapes set (64 px) as COCO JSON + PNGs."""
    from vision_det.data import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", 6, 3, size=64, seed=1)


@pytest.fixture
def coco_file(tmp_path, shapes):
    """write(mutate) -> path of a copy of the shapes train.json after `mutate(coco_dict)`, images alongside."""

    def write(mutate=None, name="train.json"):
        coco = json.loads((shapes / "train.json").read_text())
        if mutate:
            mutate(coco)
        path = tmp_path / name
        path.write_text(json.dumps(coco))
        return path

    return write
