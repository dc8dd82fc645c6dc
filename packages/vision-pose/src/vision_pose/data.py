"""Data for vision-pose: COCO keypoints JSON (validated up front), the built-in stick figures, top-down
crops of each person box (affine warp with padding, train-time scale/rotation/flip) and the collator.

Coordinate conventions: COCO keypoints are continuous image coordinates (pixel i spans [i, i+1)); a crop
is a 2x3 affine map image -> crop; heatmap coordinates put pixel centres at integers (see heatmaps.py).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lora_shared import hubdata
from lora_shared.errors import DataError, UsageError
from lora_shared.images import check_coco_size, open_image, safe_join
from lora_shared.jsonfile import read_json
from lora_shared.seed import SampleSeeds

from .figures import make_figures

logger = logging.getLogger(__name__)

# OKS sigmas of the COCO keypoints (pycocotools), and by body part for other names.
COCO_SIGMAS = {
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
    "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072,
    "left_wrist": 0.062, "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107,
    "left_knee": 0.087, "right_knee": 0.087, "left_ankle": 0.089, "right_ankle": 0.089,
}  # fmt: skip
_PART_SIGMAS = [
    ("shoulder", 0.079), ("elbow", 0.072), ("wrist", 0.062), ("hand", 0.062), ("hip", 0.107),
    ("knee", 0.087), ("ankle", 0.089), ("foot", 0.089), ("eye", 0.025), ("ear", 0.035),
    ("nose", 0.026), ("head", 0.079), ("neck", 0.079),
]  # fmt: skip
DEFAULT_SIGMA = 0.072
FILL = (124, 116, 104)  # ImageNet mean colour for the area a crop takes from outside the image


# ---------------------------------------------------------------- keypoint schema
def flip_pairs(names: list[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) of keypoints that swap under a horizontal flip, matched by name:
    left<->right anywhere in the name (any case), or l_/r_ prefixes and _l/_r suffixes."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        cands = []
        for a, b in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
            if a in n:
                cands.append(n.replace(a, b))
        if re.match(r"^[lL][_\-]", n):
            cands.append(("r" if n[0] == "l" else "R") + n[1:])
        if re.search(r"[_\-][lL]$", n):
            cands.append(n[:-1] + ("r" if n[-1] == "l" else "R"))
        for c in cands:
            j = index.get(c)
            if j is not None and j != i:
                pairs.append((i, j))
                break
    return pairs


def flip_permutation(names: list[str]) -> np.ndarray:
    """perm[i] = the keypoint whose label keypoint i takes after a flip (identity for unpaired ones)."""
    perm = np.arange(len(names))
    for i, j in flip_pairs(names):
        perm[i], perm[j] = j, i
    return perm


def default_sigmas(names: list[str]) -> list[float]:
    """OKS sigma per keypoint: COCO's value for COCO names, else by body part, else 0.072."""
    out = []
    for n in names:
        low = n.lower()
        s = COCO_SIGMAS.get(low) or next((v for part, v in _PART_SIGMAS if part in low), DEFAULT_SIGMA)
        out.append(s)
    return out


@dataclass
class Schema:
    """The keypoint layout shared by every category of a dataset."""

    names: list[str]
    skeleton: list[list[int]]  # 1-based pairs, COCO style
    category_id: int
    category_name: str = "person"

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def as_json(self, sigmas: list[float]) -> dict:
        return {
            "keypoints": self.names,
            "skeleton": self.skeleton,
            "flip_pairs": [list(p) for p in flip_pairs(self.names)],
            "sigmas": sigmas,
            "category_id": self.category_id,
            "category_name": self.category_name,
        }

    @classmethod
    def from_json(cls, d: dict) -> Schema:
        return cls(
            list(d["keypoints"]), [list(p) for p in d["skeleton"]], d["category_id"], d["category_name"]
        )


# ---------------------------------------------------------------- COCO splits
@dataclass
class PoseSplit:
    """Images + person annotations of one split; images are PIL objects (built-in data) or files."""

    where: str
    schema: Schema
    images: dict[int, dict]  # id -> COCO image entry (file_name, width, height)
    anns: list[dict]  # validated annotations, keypoints as given
    pil: dict[int, object] = field(default_factory=dict)  # id -> PIL image (in-memory data)
    root: Path | None = None

    def image(self, image_id: int):
        if image_id in self.pil:
            return self.pil[image_id]
        return open_image(safe_join(self.root, self.images[image_id]["file_name"], self.where))

    @property
    def people(self) -> list[dict]:
        """Annotations usable for training / PCK: not crowd, at least one labelled keypoint."""
        return [a for a in self.anns if not a.get("iscrowd") and a["num_keypoints"] > 0]

    def coco_gt(self) -> dict:
        """A COCO dict pycocotools can score against (area / iscrowd / num_keypoints filled in)."""
        return {
            "images": [self.images[i] for i in sorted(self.images)],
            "annotations": self.anns,
            "categories": [
                {
                    "id": self.schema.category_id,
                    "name": self.schema.category_name,
                    "keypoints": self.schema.names,
                    "skeleton": self.schema.skeleton,
                }
            ],
        }

    def subset(self, image_ids, where: str) -> PoseSplit:
        keep = set(image_ids)
        return PoseSplit(
            where,
            self.schema,
            {i: e for i, e in self.images.items() if i in keep},
            [a for a in self.anns if a["image_id"] in keep],
            {i: p for i, p in self.pil.items() if i in keep},
            self.root,
        )


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _schema_from_categories(cats, where: str) -> Schema:
    with_kp = [c for c in cats if isinstance(c, dict) and c.get("keypoints")]
    if not with_kp:
        raise DataError(
            f"{where}: no category has a 'keypoints' list of names; this is not COCO keypoints data"
        )
    first = with_kp[0]
    for c in with_kp[1:]:
        if list(c["keypoints"]) != list(first["keypoints"]):
            raise DataError(
                f"{where}: category {c.get('name')!r} has other keypoint names than {first.get('name')!r}; "
                "one model predicts one keypoint layout, so keep one layout per file"
            )
    names = [str(n) for n in first["keypoints"]]
    if len(set(names)) != len(names):
        raise DataError(f"{where}: category {first.get('name')!r} repeats a keypoint name: {names}")
    skeleton = [list(map(int, p)) for p in first.get("skeleton") or []]
    for p in skeleton:
        if len(p) != 2 or not all(1 <= q <= len(names) for q in p):
            raise DataError(
                f"{where}: skeleton pair {p} is not two 1-based keypoint indices (1..{len(names)})"
            )
    return Schema(names, skeleton, int(first["id"]), str(first.get("name", "person")))


def validate_coco(coco: dict, where: str, root: Path | None, pil: dict | None = None) -> PoseSplit:
    """Check a COCO keypoints dict record by record; the first bad record raises DataError naming it.

    Checks: categories with keypoint names; every annotation's category is known, it has 3*K keypoint
    values with v in {0,1,2}, labelled keypoints lie inside their image, its box is valid, and its image
    exists (listed in `images` and present on disk).
    """
    pil = pil or {}
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"{where}: missing the '{key}' list; expected COCO keypoints JSON")
    schema = _schema_from_categories(coco["categories"], where)
    k = schema.num_keypoints
    cat_ids = {c.get("id"): c for c in coco["categories"] if isinstance(c, dict)}
    images: dict[int, dict] = {}
    for i, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"{where}: images[{i}] needs 'id' and 'file_name'")
        images[im["id"]] = dict(im)
    checked: set = set()
    anns = []
    for i, ann in enumerate(coco["annotations"]):
        rec = f"{where}: annotations[{i}] (id={ann.get('id') if isinstance(ann, dict) else '?'})"
        if not isinstance(ann, dict):
            raise DataError(f"{rec}: not an object")
        cat = cat_ids.get(ann.get("category_id"))
        if cat is None:
            raise DataError(
                f"{rec}: unknown category_id {ann.get('category_id')!r} (categories: {sorted(cat_ids, key=str)}); "
                "add the category or fix the id"
            )
        if not cat.get("keypoints"):
            continue  # a non-keypoint category (e.g. 'car' in a mixed file): not ours to train on
        kps = ann.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * k:
            n = len(kps) if isinstance(kps, list) else 0
            raise DataError(
                f"{rec}: keypoints has {n} values, expected {3 * k} ({k} keypoints x [x, y, v]) "
                f"for category {cat.get('name')!r}; fix the record"
            )
        if not all(_num(v) for v in kps):
            raise DataError(f"{rec}: keypoints must all be finite numbers")
        arr = np.asarray(kps, dtype=np.float64).reshape(k, 3)
        if not set(arr[:, 2].tolist()) <= {0.0, 1.0, 2.0}:
            raise DataError(
                f"{rec}: visibility flags must be 0, 1 or 2, got {sorted(set(arr[:, 2].tolist()))}"
            )
        image_id = ann.get("image_id")
        if image_id not in images:
            raise DataError(f"{rec}: image_id {image_id!r} is not in 'images' (missing image); fix the id")
        im = images[image_id]
        if image_id not in checked:
            _check_image_entry(im, where, root, pil)
            checked.add(image_id)
        w, h = im["width"], im["height"]
        lab = arr[:, 2] > 0
        out = lab & ((arr[:, 0] < 0) | (arr[:, 0] > w) | (arr[:, 1] < 0) | (arr[:, 1] > h))
        if out.any():
            j = int(np.argmax(out))
            raise DataError(
                f"{rec}: keypoint {schema.names[j]!r} at ({arr[j, 0]:g}, {arr[j, 1]:g}) is outside its "
                f"{w}x{h} image {im['file_name']!r}; fix the coordinates or set v=0"
            )
        a = dict(ann)
        box = a.get("bbox")
        if box is None:
            if not lab.any():
                raise DataError(f"{rec}: no 'bbox' and no labelled keypoint to derive one from")
            x0, y0 = arr[lab, :2].min(0)
            x1, y1 = arr[lab, :2].max(0)
            m = 0.1 * max(x1 - x0, y1 - y0, 1.0)
            box = [
                max(0.0, x0 - m),
                max(0.0, y0 - m),
                min(w, x1 + m) - max(0.0, x0 - m),
                min(h, y1 + m) - max(0.0, y0 - m),
            ]
            a["bbox"] = [float(v) for v in box]
        if (
            not (isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box))
            or box[2] <= 0
            or box[3] <= 0
        ):
            raise DataError(f"{rec}: bbox must be [x, y, width, height] with width, height > 0, got {box}")
        a.setdefault("id", i + 1)  # COCOeval matches detections to gt by id
        a["num_keypoints"] = int(lab.sum())
        a.setdefault("iscrowd", 0)
        if not _num(a.get("area")) or a["area"] <= 0:
            a["area"] = float(
                box[2] * box[3]
            )  # COCOeval's OKS scale needs an area; the box is the best we have
        a["category_id"] = schema.category_id
        anns.append(a)
    if not anns:
        raise DataError(f"{where}: no person annotations with keypoints")
    keep = {a["image_id"] for a in anns}
    images = {i: e for i, e in images.items() if i in keep}
    return PoseSplit(where, schema, images, anns, {i: p for i, p in pil.items() if i in keep}, root)


def _check_image_entry(im: dict, where: str, root: Path | None, pil: dict) -> None:
    """The image must exist and decode, its width/height (filled in when the JSON lacks them) match it."""
    if im["id"] in pil:
        im.setdefault("width", pil[im["id"]].width)
        im.setdefault("height", pil[im["id"]].height)
        return
    path = safe_join(root, im["file_name"], f"{where}: image id={im['id']}")
    if not path.is_file():
        raise DataError(
            f"{where}: image id={im['id']} file {im['file_name']!r} not found under {root} (missing image); "
            "fix file_name or pass --image_dir"
        )
    # A full decode, once, up front: a truncated or non-image file fails now (naming it), not mid-run or
    # after the adapter was already saved. Its size is the upright one (EXIF orientation applied), the
    # image training crops from; keypoints are checked against width/height, so those must match it.
    img = open_image(path)
    if not (_num(im.get("width")) and _num(im.get("height"))):
        im["width"], im["height"] = img.size
    check_coco_size(f"{where}: image id={im['id']}", path, (im["width"], im["height"]), img.size, "keypoints")


def load_coco(path: str | Path, image_dir: str | None = None) -> PoseSplit:
    """Read and validate a COCO keypoints JSON file; file_name is relative to image_dir (default: its folder)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    coco = read_json(path)  # DataError with file:line for bad syntax, non-UTF-8, nesting too deep
    if not isinstance(coco, dict):
        raise DataError(f"{path}: expected a JSON object with images/annotations/categories")
    root = Path(image_dir).expanduser() if image_dir else path.parent
    return validate_coco(coco, str(path), root)


def figures_split(n: int, size: int, seed: int, split: str) -> PoseSplit:
    """The built-in stick figures as a validated in-memory split."""
    coco, pil = make_figures(n, size, seed, split)
    return validate_coco(coco, f"figures[{split}]", None, pil)


def _check_same_schema(a: PoseSplit, b: PoseSplit) -> None:
    if a.schema.names != b.schema.names:
        raise DataError(
            f"{b.where}: keypoints {b.schema.names} differ from the training data's {a.schema.names}; "
            "eval data must use the same keypoint layout"
        )


def load_splits(args, seed: int = 0) -> tuple[PoseSplit, PoseSplit]:
    """(train, eval) splits from --dataset / --eval_dataset, validated before any model is built."""
    src = args.dataset
    if src == "figures":
        train = figures_split(args.figures_train, args.figure_size, seed, "train")
        ev = figures_split(args.figures_val, args.figure_size, seed, "val")
    else:
        p = Path(src).expanduser()
        ev = None
        if p.is_dir():
            if not (p / "train.json").is_file():
                raise DataError(
                    f"{p}: expected train.json (and val.json) in this directory, as make-data writes"
                )
            train = load_coco(p / "train.json", args.image_dir)
            if (p / "val.json").is_file() and not args.eval_dataset:
                ev = load_coco(p / "val.json", args.image_dir)
        elif p.is_file():
            train = load_coco(p, args.image_dir)
        elif hubdata.wants_load_dataset(src):
            # Hub keypoint sets share no column layout (COCO-style or not, visibility or not), so there is
            # nothing to map them onto reliably: say what to bring instead of "not found".
            raise UsageError(
                f"--dataset {src}: vision-pose reads COCO keypoints files, not hub / load_dataset datasets "
                "(their keypoint layouts differ); export the data as a COCO keypoints .json (+ images) and "
                "pass that file or its folder"
            )
        else:
            raise DataError(
                f"{src}: not found (expected figures, a COCO keypoints .json or a dir with train.json)"
            )
        if args.eval_dataset:
            ev = load_coco(args.eval_dataset, args.image_dir)
        if ev is None:
            if not 0 < args.val_fraction < 1:
                raise UsageError(f"val_fraction must be between 0 and 1, got {args.val_fraction}")
            ids = sorted(train.images)
            random.Random(seed).shuffle(ids)
            n_val = max(1, round(len(ids) * args.val_fraction))
            if len(ids) < 2:
                raise DataError(f"{src}: only {len(ids)} image with people; need at least 2 to hold one out")
            ev = train.subset(ids[:n_val], f"{src} (held-out {args.val_fraction:.0%})")
            train = train.subset(ids[n_val:], src)
        _check_same_schema(train, ev)
    if not train.people:
        raise DataError(f"{train.where}: no annotation with a labelled keypoint to train on")
    logger.info(
        "data: %d train / %d eval people (%d / %d images), %d keypoints: %s",
        len(train.people),
        len(ev.people),
        len(train.images),
        len(ev.images),
        train.schema.num_keypoints,
        ", ".join(train.schema.names),
    )
    return train, ev


# ---------------------------------------------------------------- top-down crops
@dataclass
class CropSettings:
    """Everything a sample needs: crop/heatmap geometry, normalisation and train-time augmentation."""

    height: int
    width: int
    heatmap_height: int
    heatmap_width: int
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    padding: float = 1.25
    flip_prob: float = 0.0
    rotation_deg: float = 0.0
    scale_jitter: float = 0.0
    flip_perm: np.ndarray | None = None

    @property
    def stride(self) -> float:
        return self.width / self.heatmap_width


def box_to_crop(bbox, aspect: float, padding: float) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> (cx, cy, crop_w, crop_h): the box grown to the model's aspect (w/h), then padded."""
    x, y, w, h = map(float, bbox)
    cx, cy = x + w / 2, y + h / 2
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return cx, cy, w * padding, h * padding


def crop_matrix(cx, cy, cw, ch, out_w, out_h, rotation_deg=0.0, flip=False) -> np.ndarray:
    """3x3 affine map image -> crop: centre at origin, rotate, scale to the output, optional mirror."""
    a = math.radians(rotation_deg)
    s = out_w / cw  # == out_h / ch: box_to_crop matched the aspect
    c, si = math.cos(a) * s, math.sin(a) * s
    m = np.array([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]]
    )
    m = np.array([[1.0, 0.0, out_w / 2], [0.0, 1.0, out_h / 2], [0.0, 0.0, 1.0]]) @ m
    if flip:
        m = np.array([[-1.0, 0.0, out_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


def warp(img, matrix: np.ndarray, out_w: int, out_h: int):
    """The crop as a PIL image (bilinear; PIL wants the inverse map crop -> image)."""
    from PIL import Image

    inv = np.linalg.inv(matrix)
    return img.transform(
        (out_w, out_h), Image.AFFINE, data=tuple(inv[:2].ravel()), resample=Image.BILINEAR, fillcolor=FILL
    )


def apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(K, 2) points through a 3x3 affine."""
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def to_tensor(img, mean, std):
    """PIL RGB -> normalised float tensor (3, H, W)."""
    import torch

    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def make_sample(img, ann: dict, st: CropSettings, rng: random.Random | None = None) -> dict:
    """One person -> {pixel_values (3,H,W), labels (K,5), matrix (3,3)}.

    labels[k] = (u, v, weight, box_size, px_per_unit) in heatmap pixels: weight 1 for a labelled keypoint
    inside the crop; box_size = max(box w, h) and px_per_unit = image pixels per heatmap pixel, so
    metrics can normalise (PCK) and convert to image pixels without the image.
    """
    import torch

    cx, cy, cw, ch = box_to_crop(ann["bbox"], st.width / st.height, st.padding)
    rot, flip = 0.0, False
    if rng is not None:
        f = 1.0 + rng.uniform(-st.scale_jitter, st.scale_jitter)
        cw, ch = cw * f, ch * f
        if st.rotation_deg and rng.random() < 0.6:
            rot = rng.uniform(-st.rotation_deg, st.rotation_deg)
        flip = rng.random() < st.flip_prob
    m = crop_matrix(cx, cy, cw, ch, st.width, st.height, rot, flip)
    kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    xy = apply_matrix(m, kp[:, :2])
    vis = kp[:, 2] > 0
    if flip:
        # After mirroring, the point that was the left hand is where the right hand of the flipped
        # person is: relabel by permuting the keypoint order.
        perm = st.flip_perm if st.flip_perm is not None else np.arange(len(kp))
        xy, vis = xy[perm], vis[perm]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < st.width) & (xy[:, 1] >= 0) & (xy[:, 1] < st.height)
    stride = st.stride
    px_per_unit = (cw / st.width) * stride
    labels = np.zeros((len(kp), 5), dtype=np.float32)
    labels[:, 0] = xy[:, 0] / stride - 0.5
    labels[:, 1] = xy[:, 1] / stride - 0.5
    labels[:, 2] = (vis & inside).astype(np.float32)
    labels[:, 3] = max(ann["bbox"][2], ann["bbox"][3]) / px_per_unit
    labels[:, 4] = px_per_unit
    crop = warp(img, m, st.width, st.height)
    return {
        "pixel_values": to_tensor(crop, st.mean, st.std),
        "labels": torch.from_numpy(labels),
        "matrix": m,
    }


def heatmap_to_image(uv: np.ndarray, matrix: np.ndarray, stride: float) -> np.ndarray:
    """(K, 2) decoded heatmap coordinates -> image coordinates (inverse of make_sample's mapping)."""
    crop_xy = (uv + 0.5) * stride
    return apply_matrix(np.linalg.inv(matrix), crop_xy)


class PoseDataset:
    """A torch-style dataset of person crops (augmented when `train`)."""

    def __init__(
        self,
        split: PoseSplit,
        settings: CropSettings,
        train: bool,
        max_samples: int | None = None,
        seed: int = 0,
    ):
        self.split, self.settings, self.train = split, settings, train
        self.people = split.people[:max_samples] if max_samples else split.people
        # Augmentation drawn per (seed, epoch, person), so `--resume` replays it exactly (as vision-cls's);
        # train() keeps `seeds.epoch` current with lora_shared.seed.epoch_callback.
        self.seeds = SampleSeeds(seed)
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.people)

    def _image(self, image_id: int):
        # Built-in data lives in memory already; files are decoded on demand (small cache for eval reuse).
        if image_id in self.split.pil:
            return self.split.pil[image_id]
        if image_id not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[image_id] = self.split.image(image_id)
        return self._cache[image_id]

    def __getitem__(self, i: int) -> dict:
        ann = self.people[i]
        s = make_sample(
            self._image(ann["image_id"]), ann, self.settings, self.seeds.rng(i) if self.train else None
        )
        s.pop("matrix")
        return s


def collate_fn(batch: list[dict]) -> dict:
    """Stack per-person tensors into a model batch."""
    import torch

    out = {"pixel_values": torch.stack([b["pixel_values"] for b in batch])}
    if "labels" in batch[0]:
        out["labels"] = torch.stack([b["labels"] for b in batch])
    return out


# ---------------------------------------------------------------- make-data
def make_data(cfg) -> int:
    """`make-data`: write the built-in figures as COCO keypoints (train.json, val.json, images/*/*.png)."""
    import io

    from lora_shared.io import atomic_dir, atomic_write_json
    from tqdm.auto import tqdm

    d, out = cfg.data, Path(cfg.extra[0].data_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not (out / "train.json").is_file():
        raise UsageError(f"{out}: exists and is not a make-data output; pick an empty or new --data_dir")
    with atomic_dir(out) as tmp:
        for split, n in (("train", d.figures_train), ("val", d.figures_val)):
            coco, pil = make_figures(n, d.figure_size, cfg.train.seed, split)
            (tmp / "images" / split).mkdir(parents=True)
            for im in tqdm(coco["images"], desc=f"writing {split}", leave=False):
                buf = io.BytesIO()
                pil[im["id"]].save(buf, format="PNG")
                (tmp / im["file_name"]).write_bytes(buf.getvalue())
            atomic_write_json(tmp / f"{split}.json", coco)
    n_train = len(json.loads((out / "train.json").read_text())["annotations"])
    print(f"wrote {d.figures_train}+{d.figures_val} images ({n_train} train people) to {out}")
    return 0
