"""Data for vision-cls: built-in demo shapes and sklearn digits, ImageFolder / CSV / datasets dirs,
up-front validation, torchvision transforms and the collator."""

from __future__ import annotations

import csv
import logging
import math
import random
from pathlib import Path

import numpy as np
from lora_shared import hubdata
from lora_shared.errors import DataError
from lora_shared.images import IMAGE_SUFFIXES, check_image, open_image, safe_join, to_rgb, upright
from lora_shared.seed import SeededAugment

logger = logging.getLogger(__name__)

DEMO_CLASSES = ["circle", "square", "triangle", "stripes", "cross"]
_EVAL_DIR_NAMES = ("val", "validation", "valid", "test", "eval")


# ---------------------------------------------------------------- built-in data
def _demo_image(label: int, size: int, rng: random.Random):
    """One demo image: a shape of class `label` in a random colour, place and size on a noisy background."""
    from PIL import Image, ImageDraw

    bg = tuple(rng.randint(0, 255) for _ in range(3))
    fg = tuple((c + rng.randint(90, 165)) % 256 for c in bg)  # far from the background on every channel
    noise = np.random.default_rng(rng.randint(0, 2**31)).integers(-20, 21, (size, size, 3))
    arr = np.clip(np.array(bg, dtype=np.int64) + noise, 0, 255).astype("uint8")
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    name = DEMO_CLASSES[label]
    if name == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif name == "square":
        a = rng.uniform(0, math.pi / 2)
        pts = [
            (cx + r * math.cos(a + k * math.pi / 2), cy + r * math.sin(a + k * math.pi / 2)) for k in range(4)
        ]
        d.polygon(pts, fill=fg)
    elif name == "triangle":
        a = rng.uniform(0, 2 * math.pi)
        pts = [
            (cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        d.polygon(pts, fill=fg)
    elif name == "stripes":
        w = max(2, int(size / rng.choice([8, 10, 12])))
        for x in range(0, size, 2 * w):
            d.rectangle([x, 0, x + w - 1, size], fill=fg)
        if rng.random() < 0.5:
            img = img.rotate(90)
    else:  # cross
        t = r * rng.uniform(0.3, 0.45)
        d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fg)
        d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fg)
    return img


def make_demo_dataset(per_class: int, size: int = 64, seed: int = 0):
    """Deterministic demo set: `per_class` images of each of the 5 DEMO_CLASSES, as a datasets.Dataset."""
    rng = random.Random(seed)
    images, labels = [], []
    for i in range(per_class * len(DEMO_CLASSES)):
        label = i % len(DEMO_CLASSES)
        images.append(_demo_image(label, size, rng))
        labels.append(label)
    return _to_dataset(images, labels, DEMO_CLASSES)


def make_digits_dataset(size: int = 32):
    """scikit-learn's 1797 real 8x8 handwritten digits, upscaled to `size` px grey-as-RGB images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [
        Image.fromarray((im * (255 / 16)).astype("uint8")).resize((size, size), Image.BILINEAR).convert("RGB")
        for im in digits.images
    ]
    return _to_dataset(images, [int(t) for t in digits.target], [str(i) for i in range(10)])


def _to_dataset(images, labels, names):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(names))})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


# ---------------------------------------------------------------- user data
def _scan_folder(root: Path) -> list[tuple[str, str]]:
    """(path, class name) for every image under root/<class>/..."""
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    items, empty = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = 0
        for f in sorted(class_dir.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    logger.warning("skipping %s: not an image extension", f)
                    continue
                items.append((str(f), class_dir.name))
                found += 1
        if not found:
            empty.append(class_dir)
    if items and empty:
        raise DataError(f"{empty[0]}: class folder has no images; add some or remove the folder")
    if not items:
        raise DataError(
            f"{root}: no images found; expected an ImageFolder layout {root}/<class_name>/<image>"
        )
    return items


def _read_csv(path: Path, label_column: str) -> list[tuple[str, str]]:
    """(path, label) rows of a CSV with a header `path,<label_column>`; paths relative to the CSV's folder."""
    items = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "path" not in cols or label_column not in cols:
            raise DataError(f"{path}:1: header must have columns 'path' and '{label_column}', got {cols}")
        for line, row in enumerate(reader, start=2):
            rel, label = (row.get("path") or "").strip(), (row.get(label_column) or "").strip()
            if not rel or not label:
                raise DataError(f"{path}:{line}: empty path or label")
            img = safe_join(path.parent, rel, f"{path}:{line}")
            if not img.is_file():
                raise DataError(
                    f"{path}:{line}: image {img} not found (paths are relative to the CSV's folder)"
                )
            items.append((str(img), label))
    if not items:
        raise DataError(f"{path}: no rows after the header")
    return items


def _validate(items: list[tuple[str, str]], skip_bad: bool, where: str) -> list[tuple[str, str]]:
    """Decode every image once up front so a bad file fails now, not an hour into training."""
    from tqdm.auto import tqdm

    good, bad = [], []
    for path, label in tqdm(items, desc=f"checking images ({where})", leave=False, disable=len(items) < 200):
        reason = check_image(path)
        if reason is None:
            good.append((path, label))
        elif skip_bad:
            bad.append(reason)
        else:
            raise DataError(reason)
    if bad:
        logger.warning("skipped %d unreadable image(s) in %s; first: %s", len(bad), where, bad[0])
    if not good:
        raise DataError(f"{where}: no readable images")
    return good


def _path_items(source: str, label_column: str):
    p = Path(source).expanduser()
    if p.is_file() and p.suffix.lower() == ".csv":
        return _read_csv(p, label_column)
    if p.is_dir():
        return _scan_folder(p)
    raise DataError(
        f"{source}: not found (expected demo, sklearn-digits, an ImageFolder dir, a .csv, a datasets dir, "
        "a hub dataset id or imagefolder --data_dir DIR)"
    )


def _paths_dataset(items, names):
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    index = {n: i for i, n in enumerate(names)}
    ds = Dataset.from_dict(
        {"image": [p for p, _ in items], "label": [index[lbl] for _, lbl in items]},
        features=Features({"image": Value("string"), "label": ClassLabel(names=names)}),
    )
    return ds.cast_column("image", ImageFeature())


def _check_labels(items, names, where):
    known = set(names)
    for path, label in items:
        if label not in known:
            raise DataError(f"{where}: {path}: label {label!r} is not a training class ({', '.join(names)})")


def _check_hf_image(value, where: str) -> str | None:
    """None if one undecoded `datasets` Image value ({path, bytes}) decodes upright, else the reason."""
    import io

    from PIL import Image

    if not value or not (value.get("bytes") or value.get("path")):
        return f"{where}: no image"
    if not value.get("bytes"):
        reason = check_image(value["path"])
        return f"{where}: {reason}" if reason else None
    try:
        with Image.open(io.BytesIO(value["bytes"])) as img:
            img.load()
            upright(img, where)
    except DataError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds on corrupt bytes
        return f"{where}: corrupt image ({type(e).__name__}: {e}); remove the row (or pass --skip_bad_images)"
    return None


def _check_hf_images(ds, where: str, skip_bad: bool):
    """Decode every image of a `datasets` split once up front, as `_validate` does for files."""
    from datasets import Image as ImageFeature
    from tqdm.auto import tqdm

    if not isinstance(ds.features["image"], ImageFeature):  # e.g. a CSV's path column
        ds = ds.cast_column("image", ImageFeature())
    raw = ds.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))
    good, bad = [], []
    for i, row in enumerate(
        tqdm(raw, desc=f"checking images ({where})", leave=False, disable=len(raw) < 200)
    ):
        reason = _check_hf_image(row["image"], f"{where} row {i}")
        if reason is None:
            good.append(i)
        elif skip_bad:
            bad.append(reason)
        else:
            raise DataError(reason)
    if bad:
        logger.warning("skipped %d unreadable image(s) in %s; first: %s", len(bad), where, bad[0])
        ds = ds.select(good)
    if len(ds) == 0:
        raise DataError(f"{where}: no readable images")
    return ds


def _prepare_hf(ds, where: str, args, names: list[str] | None = None):
    """A `datasets` split (save_to_disk dir or load_dataset) -> columns image + label (ClassLabel over
    `names`, default: the split's ClassLabel names or its sorted label values), every image checked."""
    from datasets import ClassLabel

    hubdata.require_columns(
        ds, [args.image_column, args.label_column], where, "--image_column/--label_column"
    )
    ds = ds.select_columns([args.image_column, args.label_column])
    rename = {args.image_column: "image", args.label_column: "label"}
    ds = ds.rename_columns({k: v for k, v in rename.items() if k != v})
    feature = ds.features["label"]
    own = list(feature.names) if isinstance(feature, ClassLabel) else None
    values = [own[v] if own is not None else v for v in ds["label"]]
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
            raise DataError(
                f"{where} row {i}: label {v!r} is not a class name or id; fix column {args.label_column!r}"
            )
    values = [str(v).strip() for v in values]
    if names is None:
        names = own if own is not None else sorted(set(values))
        if len(names) < 2:
            raise DataError(f"{where}: found {len(names)} class ({names}); need at least 2")
    index = {n: i for i, n in enumerate(names)}
    for i, v in enumerate(values):
        if v not in index:
            raise DataError(f"{where} row {i}: label {v!r} is not a training class ({', '.join(names)})")
    ds = ds.remove_columns("label").add_column("label", [index[v] for v in values])
    ds = ds.cast_column("label", ClassLabel(names=list(names)))
    return _check_hf_images(ds, where, args.skip_bad_images)


def _load_disk(source: Path, args):
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(source))
    if isinstance(ds, DatasetDict):
        train = ds["train"]
        ev_name = next((k for k in ("validation", "val", "test") if k in ds), None)
    else:
        train, ev_name = ds, None
    train = _prepare_hf(train, f"{source}[train]", args)
    ev = None
    if ev_name is not None:
        ev = _prepare_hf(ds[ev_name], f"{source}[{ev_name}]", args, train.features["label"].names)
    return train, ev


def _load_hub(args):
    """(train, eval or None) of a hub id / load_dataset builder --dataset, checked like a datasets dir."""
    splits = hubdata.load_splits(args)
    train = _prepare_hf(splits.train, splits.where(splits.train_name), args)
    ev = None
    if splits.eval is not None:
        ev = _prepare_hf(splits.eval, splits.where(splits.eval_name), args, train.features["label"].names)
    return train, ev


def load_splits(args, seed: int = 0):
    """(train, eval, label_names) as datasets with columns image (PIL) and label (int)."""
    src = args.dataset
    use_hub = src not in ("demo", "sklearn-digits") and hubdata.wants_load_dataset(src, args)
    if not use_hub:
        hubdata.check_unused(args)
    if use_hub:
        train, ev = _load_hub(args)
        train, ev, full = (None, None, train) if ev is None else (train, ev, None)
    elif src == "demo":
        full = make_demo_dataset(args.demo_images_per_class, args.demo_image_size, seed)
        train, ev = None, None
    elif src == "sklearn-digits":
        full = make_digits_dataset()
        train, ev = None, None
    elif (Path(src).expanduser() / "dataset_info.json").exists() or (
        Path(src).expanduser() / "dataset_dict.json"
    ).exists():
        train, ev = _load_disk(Path(src).expanduser(), args)
        # No held-out split in the dir: split off --val_fraction, as for folders (eval needs one).
        train, ev, full = (None, None, train) if ev is None else (train, ev, None)
    else:
        root = Path(src).expanduser()
        split_dirs = [root / n for n in _EVAL_DIR_NAMES if (root / n).is_dir()] if root.is_dir() else []
        if split_dirs and (root / "train").is_dir():
            train_items = _path_items(str(root / "train"), args.label_column)
            eval_items = _path_items(str(split_dirs[0]), args.label_column)
        else:
            train_items, eval_items = _path_items(src, args.label_column), None
        if args.eval_dataset:
            eval_items = _path_items(args.eval_dataset, args.label_column)
        names = sorted({lbl for _, lbl in train_items})
        if len(names) < 2:
            raise DataError(f"{src}: found {len(names)} class ({names}); need at least 2")
        train_items = _validate(train_items, args.skip_bad_images, src)
        full = _paths_dataset(train_items, names)
        if eval_items is not None:
            _check_labels(eval_items, names, args.eval_dataset or str(split_dirs[0]))
            eval_items = _validate(eval_items, args.skip_bad_images, args.eval_dataset or str(split_dirs[0]))
            train, ev, full = full, _paths_dataset(eval_items, names), None
    if full is not None:
        if not 0 < args.val_fraction < 1:
            raise DataError(f"val_fraction must be between 0 and 1, got {args.val_fraction}")
        # The stratified split needs every class on both sides (datasets raises a bare ValueError otherwise).
        n_test, n_classes = math.ceil(args.val_fraction * len(full)), len(full.features["label"].names)
        if n_test < n_classes or len(full) - n_test < n_classes:
            raise DataError(
                f"{src}: val_fraction={args.val_fraction} of {len(full)} images holds out {n_test} for "
                f"{n_classes} classes; each class needs an image on both sides: add images, change "
                "--val_fraction or pass --eval_dataset"
            )
        parts = full.train_test_split(test_size=args.val_fraction, seed=seed, stratify_by_column="label")
        train, ev = parts["train"], parts["test"]
    if len(train) == 0:
        raise DataError(f"{src}: the training split is empty")
    names = (
        train.features["label"].names
        if hasattr(train.features["label"], "names")
        else [str(i) for i in sorted(set(train["label"]))]
    )
    if args.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(args.max_train_samples, len(train))))
    if ev is not None and args.max_eval_samples:
        ev = ev.select(range(min(args.max_eval_samples, len(ev))))
    logger.info(
        "data: %d train / %d eval images, %d classes: %s",
        len(train),
        len(ev) if ev else 0,
        len(names),
        ", ".join(names[:20]),
    )
    return train, ev, list(names)


# ---------------------------------------------------------------- transforms
def build_transforms(image_size: int, mean, std, train: bool):
    """Train: random resized crop + flip + mild colour jitter; eval: deterministic resize."""
    import torch
    from torchvision.transforms import v2

    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    if train:
        return v2.Compose(
            [
                v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.2, 0.2, 0.2),
                *tail,
            ]
        )
    return v2.Compose([v2.Resize((image_size, image_size), antialias=True), *tail])


def transform_batch(batch, transform):
    """datasets `with_transform` hook: PIL images -> pixel_values, label -> labels.

    With an `idx` column and a `SeededAugment`, each sample's augmentation is seeded by its index.
    """
    if "idx" in batch and isinstance(transform, SeededAugment):
        pixels = [transform(to_rgb(img), i) for img, i in zip(batch["image"], batch["idx"])]
    else:
        pixels = [transform(to_rgb(img)) for img in batch["image"]]
    out = {"pixel_values": pixels}
    if "label" in batch:
        out["labels"] = batch["label"]
    return out


def collate_fn(batch):
    """Stack per-sample tensors into a model batch."""
    import torch

    out = {"pixel_values": torch.stack([b["pixel_values"] for b in batch])}
    if "labels" in batch[0]:
        out["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.long)
    return out


def load_image(path: Path):
    """Decode one image for prediction, upright (EXIF orientation applied; clear error on a bad file)."""
    return open_image(path)
