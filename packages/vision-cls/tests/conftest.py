"""vision-cls fixtures: tiny config args and image folders made in the test."""

import pytest


@pytest.fixture
def image_folder(tmp_path):
    """An ImageFolder with 2 classes x 6 real PNGs (made from the demo generator)."""
    from vision_cls.data import make_demo_dataset

    ds = make_demo_dataset(6, 32, seed=1)
    names = ds.features["label"].names
    root = tmp_path / "imgs"
    for i, row in enumerate(ds):
        if names[row["label"]] not in ("circle", "square"):
            continue
        d = root / names[row["label"]]
        d.mkdir(parents=True, exist_ok=True)
        row["image"].save(d / f"{i}.png")
    return root
