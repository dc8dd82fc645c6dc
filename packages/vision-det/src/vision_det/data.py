"""Data for vision-det: the built-in shapes generator (real COCO JSON + PNGs), COCO / datasets loading with
up-front validation, box-format conversions, torchvision v2 augmentation and the collator.

Box formats (all floats):
    COCO    [x, y, w, h]  top-left corner + size, absolute pixels (annotation files, results, predict JSON)
    DETR    [cx, cy, w, h] centre + size, normalised to 0..1 by the image size (model targets and outputs)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from lora_shared import hubdata
from lora_shared.errors import DataError
from lora_shared.images import check_coco_size, open_image, safe_join, to_rgb
from lora_shared.jsonfile import read_json
from lora_shared.seed import SeededAugment

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ["circle", "square", "triangle"]
SHAPES_VERSION = 1  # bump when the generator changes, so stale caches are not reused
_EVAL_JSON_NAMES = ("val.json", "validation.json", "valid.json", "test.json")
_BOX_TOLERANCE_PX = 1.0  # annotation tools round; a box this far over the edge is clipped silently


# ---------------------------------------------------------------- box formats
def coco_to_detr(boxes, image_size: tuple[int, int]):
    """COCO [x, y, w, h] in pixels -> DETR [cx, cy, w, h] normalised.

    Args:
        boxes: tensor or array (N, 4) in COCO format.
        image_size: (height, width) of the image the boxes live in.

    Returns:
        float32 tensor (N, 4) in DETR format.
    """
    import torch
    from torchvision.ops import box_convert

    h, w = image_size
    b = box_convert(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "xywh", "cxcywh")
    return b / torch.tensor([w, h, w, h], dtype=torch.float32)


def detr_to_coco(boxes, image_size: tuple[int, int]):
    """DETR [cx, cy, w, h] normalised -> COCO [x, y, w, h] in pixels (the inverse of `coco_to_detr`).

    Args:
        boxes: tensor (N, 4) in DETR format.
        image_size: (height, width) of the image to scale to.

    Returns:
        float32 tensor (N, 4) in COCO format.
    """
    import torch
    from torchvision.ops import box_convert

    h, w = image_size
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([w, h, w, h])
    return box_convert(b, "cxcywh", "xywh")


# ---------------------------------------------------------------- built-in shapes
def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured background (gradient, stripes, checker or blobs + noise) and its mean colour."""
    c0 = rng.integers(0, 256, 3).astype(np.float64)
    c1 = np.clip(c0 + rng.integers(-70, 71, 3), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = rng.uniform(0, math.pi)
    along = xx * math.cos(a) + yy * math.sin(a)
    kind = rng.integers(4)
    if kind == 0:  # linear gradient
        t = (along - along.min()) / max(np.ptp(along), 1e-6)
    elif kind == 1:  # stripes
        t = (np.sin(2 * math.pi * rng.uniform(3, 10) * along) > 0).astype(np.float64)
    elif kind == 2:  # checker
        n = rng.integers(3, 9)
        t = ((xx * n).astype(int) + (yy * n).astype(int)) % 2
    else:  # soft blobs
        t = np.zeros_like(xx)
        for _ in range(rng.integers(2, 6)):
            cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
            t += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        t /= max(t.max(), 1e-6)
    img = c0 + t[..., None] * (c1 - c0) + rng.normal(0, rng.uniform(2, 10), (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), (c0 + c1) / 2


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray) -> tuple[int, int, int]:
    """A random colour far from the background (so every shape is visible), L1 distance >= 200."""
    for _ in range(100):
        c = rng.integers(0, 256, 3)
        if np.abs(c - bg).sum() >= 200:
            return tuple(int(v) for v in c)
    return tuple(int(v) for v in np.where(bg > 127, 0, 255))


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def make_shapes_image(rng: np.random.Generator, size: int, max_overlap: float = 0.3):
    """One image with 1-6 circles/squares/triangles of varied size, colour and rotation.

    Shapes may overlap (box IoU up to `max_overlap`); later shapes are drawn over earlier ones.

    Returns:
        (PIL image, [(class index, COCO box [x, y, w, h]), ...]).
    """
    from PIL import Image, ImageDraw

    arr, bg = _background(rng, size)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    objects: list[tuple[int, list[float]]] = []
    for _ in range(int(rng.integers(1, 7))):
        for _attempt in range(30):
            cls = int(rng.integers(len(SHAPE_CLASSES)))
            r = rng.uniform(0.06, 0.3) * size  # circumradius: boxes from ~8% to ~60% of the side
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            if SHAPE_CLASSES[cls] == "circle":
                pts = None
                box = [cx - r, cy - r, 2 * r, 2 * r]
            else:
                k = 4 if SHAPE_CLASSES[cls] == "square" else 3
                a0 = rng.uniform(0, 2 * math.pi)
                pts = [
                    (cx + r * math.cos(a0 + i * 2 * math.pi / k), cy + r * math.sin(a0 + i * 2 * math.pi / k))
                    for i in range(k)
                ]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            if all(_iou(box, b) <= max_overlap for _, b in objects):
                break
        else:
            continue  # no free spot for this one: fewer objects in this image
        colour = _contrasting_colour(rng, bg)
        if pts is None:
            draw.ellipse([box[0], box[1], box[0] + box[2], box[1] + box[3]], fill=colour)
        else:
            draw.polygon(pts, fill=colour)
        objects.append((cls, [round(v, 2) for v in box]))
    return img, objects


def write_shapes_dataset(
    out_dir: str | Path, n_train: int, n_val: int, size: int = 128, seed: int = 0
) -> Path:
    """Write the shapes set as COCO detection: train.json, val.json, train/*.png, val/*.png.

    Deterministic: the same arguments give byte-identical JSON and pixel-identical images. The
    directory appears atomically (written under a temp name, then renamed).
    """
    from lora_shared.io import atomic_dir
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    with atomic_dir(out_dir) as tmp:
        for split, count, offset in (("train", n_train, 0), ("val", n_val, 1)):
            (tmp / split).mkdir()
            images, annotations = [], []
            for i in tqdm(range(count), desc=f"shapes {split}", leave=False, disable=count < 200):
                # One RNG per image: any image can be regenerated alone, splits never share one.
                rng = np.random.default_rng([seed, offset, i])
                img, objects = make_shapes_image(rng, size)
                name = f"{split}/{i:06d}.png"
                img.save(tmp / name)
                image_id = i + 1
                images.append({"id": image_id, "file_name": name, "width": size, "height": size})
                for cls, box in objects:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": cls + 1,
                            "bbox": box,
                            "area": round(box[2] * box[3], 2),
                            "iscrowd": 0,
                        }
                    )
            coco = {"images": images, "annotations": annotations, "categories": categories}
            (tmp / f"{split}.json").write_text(json.dumps(coco, indent=1) + "\n")
    logger.info("shapes set written to %s (%d train, %d val images)", out_dir, n_train, n_val)
    return out_dir


def shapes_dir(args) -> Path:
    """The built-in shapes set for these data args, generated on first use and cached."""
    if args.shapes_cache_dir:
        root = Path(args.shapes_cache_dir).expanduser()
    else:
        from lora_shared.models import loraworks_home

        key = (
            f"v{SHAPES_VERSION}-n{args.shapes_train_images}-{args.shapes_val_images}"
            f"-s{args.shapes_image_size}-seed{args.shapes_seed}"
        )
        root = loraworks_home() / "data" / "vision-det-shapes" / key
    if not ((root / "train.json").is_file() and (root / "val.json").is_file()):
        write_shapes_dataset(
            root, args.shapes_train_images, args.shapes_val_images, args.shapes_image_size, args.shapes_seed
        )
    return root


def make_data(cfg) -> int:
    """`vision-det make-data`: write the shapes set into --output_dir (COCO JSON + PNGs)."""
    d = cfg.data
    out = Path(cfg.train.output_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        # the directory is replaced as a whole: never risk someone's run or data
        raise DataError(f"{out} already exists and is not empty; pick a new --output_dir")
    write_shapes_dataset(out, d.shapes_train_images, d.shapes_val_images, d.shapes_image_size, d.shapes_seed)
    print(f"shapes set: {out}/train.json, {out}/val.json (images under {out}/train, {out}/val)")
    return 0


# ---------------------------------------------------------------- validation
class _BoxFixer:
    """Checks each box against its image; with --fix_boxes clips/drops instead of failing, and counts."""

    def __init__(self, fix: bool, source: str):
        self.fix, self.source = fix, source
        self.clipped = self.dropped = 0

    def __call__(self, bbox, width: int, height: int, where: str) -> list[float] | None:
        """The (possibly clipped) box, None to drop it, or DataError naming `where`."""
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            raise DataError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise DataError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise DataError(f"{where}: bbox {bbox!r} has a NaN/inf value; fix the annotation")
        shown = f"[{x:g}, {y:g}, {w:g}, {h:g}]"
        if w <= 0 or h <= 0:
            if self.fix:
                self.dropped += 1
                return None
            raise DataError(
                f"{where}: box {shown} has non-positive width or height; fix it or pass --fix_boxes "
                "to drop such boxes"
            )
        tol = _BOX_TOLERANCE_PX
        outside = x < -tol or y < -tol or x + w > width + tol or y + h > height + tol
        if outside and not self.fix:
            raise DataError(
                f"{where}: box {shown} lies outside its {width}x{height} image; fix it or pass "
                "--fix_boxes to clip boxes to the image"
            )
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            self.dropped += 1  # only reachable with --fix_boxes: a box entirely off the image
            return None
        self.clipped += outside
        return [x0, y0, x1 - x0, y1 - y0]

    def report(self) -> None:
        if self.clipped or self.dropped:
            logger.warning(
                "%s: --fix_boxes clipped %d box(es) to their image and dropped %d with no area left",
                self.source,
                self.clipped,
                self.dropped,
            )


def _as_int(value, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: {what} must be an integer, got {value!r}")
    return value


def read_coco(json_path: str | Path, image_root: str | Path | None = None, fix_boxes: bool = False):
    """Read and validate a COCO detection file; every problem names the file and the record.

    Checks: JSON syntax and the three lists, unique image and category ids, every image present and
    decodable (and its size matching width/height when given), each annotation's image_id and
    category_id known, boxes with positive size inside their image (or clipped/dropped with
    `fix_boxes`).

    Returns:
        (records, categories): records are dicts with image (path), image_id, width, height and
        objects {bbox, category, area, iscrowd, id}, where category is the index into `categories`
        (a list of {"id", "name"} sorted by COCO id).
    """
    from tqdm.auto import tqdm

    path = Path(json_path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found")
    root = Path(image_root).expanduser() if image_root else path.parent
    coco = read_json(path)  # DataError with file:line for bad syntax, non-UTF-8, nesting too deep
    if not isinstance(coco, dict):
        raise DataError(f"{path}: expected a COCO object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(
                f"{path}: missing the {key!r} list; a COCO detection file has images, annotations and categories"
            )

    categories, cat_index = [], {}
    for i, c in enumerate(coco["categories"]):
        where = f"{path}: categories[{i}]"
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{where}: a category needs 'id' and 'name'")
        cid = _as_int(c["id"], where, "id")
        if cid in cat_index:
            raise DataError(f"{where}: duplicate category id {cid}; category ids must be unique")
        cat_index[cid] = None
        categories.append({"id": cid, "name": str(c["name"])})
    if not categories:
        raise DataError(f"{path}: 'categories' is empty; list the classes as {{id, name}}")
    categories.sort(key=lambda c: c["id"])
    cat_index = {c["id"]: k for k, c in enumerate(categories)}
    known = ", ".join(f"{c['id']} {c['name']}" for c in categories[:20])

    images, first_seen = {}, {}
    for i, im in enumerate(coco["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{where}: an image needs 'id' and 'file_name'")
        iid = _as_int(im["id"], where, "id")
        where = f"{where} (id {iid}, file_name {im['file_name']!r})"
        if iid in images:
            raise DataError(
                f"{where}: duplicate image id {iid} (first at images[{first_seen[iid]}]); image ids must be unique"
            )
        file = safe_join(root, str(im["file_name"]), where)
        if not file.is_file():
            raise DataError(
                f"{where}: image file {file} not found (file_name is relative to --image_root, "
                f"default the JSON's folder {root})"
            )
        first_seen[iid] = i
        images[iid] = {"where": where, "file": file, "width": im.get("width"), "height": im.get("height")}

    per_image: dict[int, list] = {iid: [] for iid in images}
    for i, a in enumerate(coco["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict) or not {"image_id", "category_id", "bbox"} <= a.keys():
            raise DataError(f"{where}: an annotation needs 'image_id', 'category_id' and 'bbox'")
        where = f"{where} (id {a.get('id')}, image_id {a['image_id']})"
        if a["image_id"] not in images:
            raise DataError(f"{where}: image_id {a['image_id']} is not in 'images'")
        if a["category_id"] not in cat_index:
            raise DataError(f"{where}: unknown category_id {a['category_id']!r} (categories: {known})")
        per_image[a["image_id"]].append((i, where, a))

    fixer = _BoxFixer(fix_boxes, str(path))
    records = []
    for iid, im in tqdm(images.items(), desc=f"checking {path.name}", leave=False, disable=len(images) < 500):
        # Full decode: a corrupt file fails now, not mid-run. The size is the upright one (EXIF
        # orientation applied), as the datasets Image feature decodes it for training.
        width, height = open_image(im["file"]).size
        if (im["width"], im["height"]) != (None, None):
            check_coco_size(im["where"], im["file"], (im["width"], im["height"]), (width, height), "boxes")
        objects = {"bbox": [], "category": [], "area": [], "iscrowd": [], "id": []}
        for i, where, a in per_image[iid]:
            box = fixer(a["bbox"], width, height, where)
            if box is None:
                continue
            objects["bbox"].append(box)
            objects["category"].append(cat_index[a["category_id"]])
            objects["area"].append(float(a.get("area") or box[2] * box[3]))
            objects["iscrowd"].append(int(a.get("iscrowd", 0)))
            objects["id"].append(int(a.get("id", i)))
        records.append(
            {"image": str(im["file"]), "image_id": iid, "width": width, "height": height, "objects": objects}
        )
    fixer.report()
    if not records:
        raise DataError(f"{path}: 'images' is empty")
    return records, categories


def _category_names(ds) -> list[str] | None:
    """Names of the objects.category ClassLabel of a datasets split, or None when it is plain ints."""
    feature = ds.features["objects"]
    if not isinstance(feature, dict):  # legacy Sequence({...})
        feature = getattr(feature, "feature", {})
    cat = feature.get("category") if isinstance(feature, dict) else None
    cat = getattr(cat, "feature", cat)
    return list(cat.names) if hasattr(cat, "names") else None


def _read_hf_dataset(ds, where: str, fix_boxes: bool, fallback: list[dict] | None = None):
    """Validate a datasets split with image + objects{bbox (COCO xywh px), category} (the HF example's layout).

    Categories come from the ClassLabel names; plain int categories take `fallback`'s (or "0".."N").
    """
    from tqdm.auto import tqdm

    missing = [c for c in ("image", "objects") if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; expected image and objects{{bbox, category}}")
    names = _category_names(ds)
    if names is not None:
        categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    elif fallback is not None:
        categories = fallback
    else:
        found = [int(c) for o in ds["objects"] for c in (o or {}).get("category", [])]
        categories = [{"id": i, "name": str(i)} for i in range(max(found, default=0) + 1)]
    n_cat = len(categories)
    fixer = _BoxFixer(fix_boxes, where)
    records, seen = [], {}
    has_ids = "image_id" in ds.column_names
    for row_i, row in enumerate(
        tqdm(ds, desc=f"checking {Path(where).name}", leave=False, disable=len(ds) < 500)
    ):
        rwhere = f"{where}: row {row_i}"
        iid = int(row["image_id"]) if has_ids else row_i
        if iid in seen:
            raise DataError(
                f"{rwhere}: duplicate image_id {iid} (first at row {seen[iid]}); image ids must be unique"
            )
        seen[iid] = row_i
        if row["image"] is None:
            raise DataError(f"{rwhere}: image is missing")
        width, height = to_rgb(row["image"]).size
        objs = row["objects"] or {}
        if "bbox" not in objs or "category" not in objs:
            raise DataError(f"{rwhere}: objects needs 'bbox' and 'category' lists")
        if len(objs["bbox"]) != len(objs["category"]):
            raise DataError(
                f"{rwhere}: objects has {len(objs['bbox'])} bboxes but {len(objs['category'])} categories"
            )
        out = {"bbox": [], "category": [], "area": [], "iscrowd": [], "id": []}
        for j, (bbox, cat) in enumerate(zip(objs["bbox"], objs["category"])):
            owhere = f"{rwhere} objects[{j}]"
            if not isinstance(cat, int) or not 0 <= cat < n_cat:
                raise DataError(f"{owhere}: unknown category {cat!r} (valid: 0..{n_cat - 1})")
            box = fixer(bbox, width, height, owhere)
            if box is None:
                continue
            out["bbox"].append(box)
            out["category"].append(cat)
            out["area"].append(box[2] * box[3])
            out["iscrowd"].append(0)
            out["id"].append(j)
        records.append({"image_id": iid, "width": width, "height": height, "objects": out})
    fixer.report()
    return records, categories


# ---------------------------------------------------------------- loading
def _records_dataset(records: list[dict], images=None):
    """A datasets.Dataset of validated records (image paths are decoded lazily by the Image feature)."""
    from datasets import Dataset, Features, List, Value, concatenate_datasets
    from datasets import Image as ImageFeature

    features = Features(
        {
            "image_id": Value("int64"),
            "width": Value("int32"),
            "height": Value("int32"),
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(Value("int64")),
                "area": List(Value("float32")),
                "iscrowd": List(Value("int8")),
                "id": List(Value("int64")),
            },
        }
    )
    meta = Dataset.from_dict({k: [r[k] for r in records] for k in features}, features=features)
    if images is None:
        paths = Dataset.from_dict({"image": [r["image"] for r in records]}).cast_column(
            "image", ImageFeature()
        )
    else:
        paths = images.select_columns(["image"])
    return concatenate_datasets([paths, meta], axis=1)


def _load_disk(path: Path, args):
    from datasets import DatasetDict, load_from_disk

    obj = load_from_disk(str(path))
    if isinstance(obj, DatasetDict):
        if "train" not in obj:
            raise DataError(f"{path}: a DatasetDict needs a 'train' split, has {list(obj)}")
        ev_name = next((n for n in ("validation", "val", "valid", "test") if n in obj), None)
        train_split, ev_split = obj["train"], obj[ev_name] if ev_name else None
    else:
        train_split, ev_split, ev_name = obj, None, None
    records, categories = _read_hf_dataset(train_split, f"{path} [train]", args.fix_boxes)
    train = _records_dataset(records, train_split)
    ev, ev_cats = None, None
    if ev_split is not None:
        ev_records, ev_cats = _read_hf_dataset(ev_split, f"{path} [{ev_name}]", args.fix_boxes, categories)
        ev = _records_dataset(ev_records, ev_split)
    return train, categories, ev, ev_cats


def _load_hub(args):
    """(train, categories, eval or None, eval categories, eval name) of a hub id / load_dataset builder
    --dataset, each row checked like a datasets dir's."""
    splits = hubdata.load_splits(args)
    records, categories = _read_hf_dataset(splits.train, splits.where(splits.train_name), args.fix_boxes)
    train = _records_dataset(records, splits.train)
    ev, ev_cats, ev_where = None, None, None
    if splits.eval is not None:
        ev_where = splits.where(splits.eval_name)
        ev_records, ev_cats = _read_hf_dataset(splits.eval, ev_where, args.fix_boxes, categories)
        ev = _records_dataset(ev_records, splits.eval)
    return train, categories, ev, ev_cats, ev_where


def _load_any(source: str, args):
    """(dataset, categories) of one COCO JSON file or datasets dir."""
    p = Path(source).expanduser()
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
        train, cats, ev, _ = _load_disk(p, args)
        if ev is not None:
            logger.info("%s: using its train split only", p)
        return train, cats
    if p.is_file():
        records, cats = read_coco(p, args.image_root, args.fix_boxes)
        return _records_dataset(records), cats
    raise DataError(f"{source}: not found (expected a COCO .json file or a datasets dir)")


def align_categories(ds, cats: list[dict], train_cats: list[dict], where: str):
    """Re-index eval categories onto the training ones by name; unknown names are an error."""
    names = [c["name"] for c in train_cats]
    if [c["name"] for c in cats] == names:
        return ds
    index = {n: i for i, n in enumerate(names)}
    unknown = [c["name"] for c in cats if c["name"] not in index]
    if unknown:
        raise DataError(f"{where}: categor(ies) {unknown} are not in the training data ({', '.join(names)})")
    remap = [index[c["name"]] for c in cats]

    def fix(batch):
        return {"objects": [{**o, "category": [remap[c] for c in o["category"]]} for o in batch["objects"]]}

    return ds.map(fix, batched=True)


def load_splits(args, seed: int = 42):
    """Validated train and eval datasets and the categories [{id, name}] (label i = categories[i]).

    Sources: `shapes` (generated and cached), a COCO JSON file (+ --eval_dataset or a val_fraction
    split), a dir with train.json and val.json, or a datasets dir (train/validation splits).
    """
    src = args.dataset
    use_hub = src != "shapes" and hubdata.wants_load_dataset(src, args)
    if not use_hub:
        hubdata.check_unused(args)
    path = shapes_dir(args) if src == "shapes" else Path(src).expanduser()
    ev, ev_cats, ev_where = None, None, None
    if use_hub:
        train, cats, ev, ev_cats, ev_where = _load_hub(args)
    elif path.is_dir() and (path / "train.json").is_file():
        records, cats = read_coco(path / "train.json", args.image_root, args.fix_boxes)
        train = _records_dataset(records)
        ev_json = next((path / n for n in _EVAL_JSON_NAMES if (path / n).is_file()), None)
        if ev_json is not None and not args.eval_dataset:
            ev_records, ev_cats = read_coco(ev_json, args.image_root, args.fix_boxes)
            ev, ev_where = _records_dataset(ev_records), str(ev_json)
    elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        train, cats, ev, ev_cats = _load_disk(path, args)
        ev_where = str(path)
    elif path.is_file():
        records, cats = read_coco(path, args.image_root, args.fix_boxes)
        train = _records_dataset(records)
    else:
        raise DataError(
            f"{src}: not found (expected shapes, a COCO .json file, a dir with train.json + val.json, "
            "a datasets dir, a hub dataset id or imagefolder --data_dir DIR)"
        )
    if args.eval_dataset:
        ev, ev_cats = _load_any(args.eval_dataset, args)
        ev_where = args.eval_dataset
    if ev is not None:
        ev = align_categories(ev, ev_cats, cats, ev_where)
    else:
        if not 0 < args.val_fraction < 1:
            raise DataError(f"val_fraction must be between 0 and 1, got {args.val_fraction}")
        if len(train) < 2:
            raise DataError(f"{src}: {len(train)} image(s); need at least 2 to hold one out for evaluation")
        parts = train.train_test_split(test_size=args.val_fraction, seed=seed)
        train, ev = parts["train"], parts["test"]
    if args.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples:
        ev = ev.select(range(min(args.max_eval_samples, len(ev))))
    if len(train) == 0:
        raise DataError(f"{src}: the training split is empty")
    n_boxes = sum(len(o["category"]) for o in train["objects"])
    logger.info(
        "data: %d train images (%d boxes) / %d eval images, %d categories: %s",
        len(train),
        n_boxes,
        len(ev),
        len(cats),
        ", ".join(c["name"] for c in cats[:20]),
    )
    return train, ev, cats


def coco_ground_truth(ds, names: list[str]) -> dict:
    """The COCO dict (original pixel coordinates, category id = label index) of a validated split."""
    cols = ds.select_columns(["image_id", "width", "height", "objects"])
    images, annotations = [], []
    for row in cols:
        images.append({"id": int(row["image_id"]), "width": int(row["width"]), "height": int(row["height"])})
        o = row["objects"]
        for box, cat, area, crowd in zip(o["bbox"], o["category"], o["area"], o["iscrowd"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(row["image_id"]),
                    "category_id": int(cat),
                    "bbox": [float(v) for v in box],
                    "area": float(area),
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


# ---------------------------------------------------------------- transforms
def build_transforms(args, train: bool):
    """torchvision v2 pipeline on {image, boxes (tv_tensors.BoundingBoxes), labels}.

    Train: flip, zoom/shift (RandomAffine moves the boxes with the pixels), colour jitter; then
    boxes are clamped to the image and ones that left it (or shrank below 1 px) are dropped with their
    labels. Eval: no change (the processor resizes). train() wraps the train pipeline in a SeededAugment.
    """
    from torchvision.transforms import v2

    ops = []
    if train and args.augment:
        if args.aug_hflip > 0:
            ops.append(v2.RandomHorizontalFlip(p=args.aug_hflip))
        lo, hi = (list(args.aug_scale) + [1.0, 1.0])[:2]
        if (lo, hi) != (1.0, 1.0) or args.aug_translate > 0:
            t = args.aug_translate
            ops.append(v2.RandomAffine(degrees=0.0, translate=(t, t), scale=(lo, hi)))
        if args.aug_color_jitter > 0:
            j = args.aug_color_jitter
            ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    ops += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(ops)


def apply_transform(transform, image, bboxes, categories, sample_id: int = 0):
    """Run `transform` on a PIL image and its COCO boxes; returns (image, COCO boxes tensor, labels tensor).

    A SeededAugment draws its flip/zoom/shift/colour from (seed, epoch, sample_id), so `--resume` replays it.
    """
    import torch
    from torchvision import tv_tensors

    w, h = image.size
    boxes = tv_tensors.BoundingBoxes(
        torch.as_tensor(bboxes, dtype=torch.float32).reshape(-1, 4), format="XYWH", canvas_size=(h, w)
    )
    sample = {"image": image, "boxes": boxes, "labels": torch.as_tensor(categories, dtype=torch.int64)}
    out = transform(sample, sample_id) if isinstance(transform, SeededAugment) else transform(sample)
    return out["image"], out["boxes"].as_subclass(torch.Tensor), out["labels"]


def transform_batch(batch, transform, processor):
    """datasets `with_transform` hook: image + objects -> pixel_values + DETR labels (via the processor).

    The processor resizes, normalises and turns the COCO boxes into normalised cxcywh `boxes` and
    `class_labels`; crowd boxes are left out of the targets (they only matter to COCOeval). A SeededAugment
    is seeded by each image's `image_id` (unique in a split: the loaders check it).
    """
    pixel_values, labels = [], []
    for image, image_id, objects in zip(batch["image"], batch["image_id"], batch["objects"]):
        keep = [i for i, c in enumerate(objects["iscrowd"]) if not c]
        image, boxes, cats = apply_transform(
            transform,
            to_rgb(image),
            [objects["bbox"][i] for i in keep],
            [objects["category"][i] for i in keep],
            int(image_id),
        )
        anns = [
            {"bbox": b.tolist(), "category_id": int(c), "area": float(b[2] * b[3]), "iscrowd": 0}
            for b, c in zip(boxes, cats)
        ]
        enc = processor(
            images=image, annotations={"image_id": int(image_id), "annotations": anns}, return_tensors="pt"
        )
        pixel_values.append(enc["pixel_values"][0])
        labels.append(dict(enc["labels"][0]))
    return {"pixel_values": pixel_values, "labels": labels}


def collate_fn(batch):
    """Pad images to the batch's largest height/width (bottom/right) with a pixel mask; labels stay a list.

    DETR targets stay normalised to each image's own (unpadded) size, as in the original DETR: the
    mask tells the model where the image ends.
    """
    import torch

    sizes = [b["pixel_values"].shape[-2:] for b in batch]
    hmax, wmax = max(s[0] for s in sizes), max(s[1] for s in sizes)
    pixel_values = torch.zeros(len(batch), batch[0]["pixel_values"].shape[0], hmax, wmax)
    pixel_mask = torch.zeros(len(batch), hmax, wmax, dtype=torch.long)
    for i, (b, (h, w)) in enumerate(zip(batch, sizes)):
        pixel_values[i, :, :h, :w] = b["pixel_values"]
        pixel_mask[i, :h, :w] = 1
    out = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
    if "labels" in batch[0]:
        out["labels"] = [b["labels"] for b in batch]
    return out


# ---------------------------------------------------------------- predict inputs
def load_image(path: Path):
    """Decode one image for prediction, upright (EXIF orientation applied; clear error on a bad file)."""
    return open_image(path)
