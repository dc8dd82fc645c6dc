"""Built-in data: deterministic synthetic stick figures as COCO keypoints (no download).

Figures face the viewer, so a person's left limbs attach to the shoulder/hip on the *image* right, as
in COCO; a mirrored figure is again a valid figure with left and right swapped, which keeps flip
augmentation honest. Pose, scale, position, rotation, background clutter and occluders vary; keypoints
under an occluder are labelled v=1 (annotated, not visible), as COCO does.
"""

from __future__ import annotations

import math
import random

import numpy as np

# The seed's 5 keypoints (head, hands, feet) plus shoulders, elbows, hips and knees, which make the
# skeleton readable and give the model intermediate joints to chain along each limb.
FIGURE_KEYPOINTS = [
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_hand",
    "right_hand",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_foot",
    "right_foot",
]
# COCO skeletons are 1-based pairs of keypoint indices.
FIGURE_SKELETON = [
    [1, 2], [1, 3], [2, 3], [2, 4], [4, 6], [3, 5], [5, 7],
    [2, 8], [3, 9], [8, 9], [8, 10], [10, 12], [9, 11], [11, 13],
]  # fmt: skip
FIGURE_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": FIGURE_KEYPOINTS,
    "skeleton": FIGURE_SKELETON,
}


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _pose(rng: random.Random) -> np.ndarray:
    """(13, 2) keypoints of a unit-height figure (pelvis at the origin, y down, person's left = +x)."""
    down = np.array([0.0, 1.0])
    pts = {}
    sc = np.array([0.0, -0.3])  # shoulder centre: torso is 0.3 tall
    pts["head"] = sc + np.array([0.0, -0.13])
    for side, sx in (("left", 1.0), ("right", -1.0)):
        sh = sc + np.array([sx * rng.uniform(0.09, 0.12), 0.0])
        hip = np.array([sx * rng.uniform(0.06, 0.08), 0.0])
        # Arm angles from straight down, positive = outwards; sometimes across the body or overhead.
        a1 = rng.uniform(-40, 175)
        a2 = a1 + rng.uniform(-20, 130)
        elbow = sh + 0.17 * _rot(down, -sx * a1)
        hand = elbow + 0.15 * _rot(down, -sx * a2)
        l1 = rng.uniform(-12, 55)
        l2 = l1 - rng.uniform(0, 80)  # knees bend backwards relative to the thigh direction
        knee = hip + 0.23 * _rot(down, -sx * l1)
        foot = knee + 0.21 * _rot(down, -sx * l2)
        pts.update(
            {
                f"{side}_shoulder": sh,
                f"{side}_elbow": elbow,
                f"{side}_hand": hand,
                f"{side}_hip": hip,
                f"{side}_knee": knee,
                f"{side}_foot": foot,
            }
        )
    return np.stack([pts[n] for n in FIGURE_KEYPOINTS])


def _background(rng: random.Random, size: int):
    """Noisy two-colour gradient with random clutter lines and blobs (distractors for the model)."""
    from PIL import Image, ImageDraw

    c0 = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    c1 = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    arr = c0 * (1 - t) + c1 * t
    arr = np.broadcast_to(arr, (size, size, 3)).copy()
    if rng.random() < 0.5:
        arr = arr.transpose(1, 0, 2).copy()
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(3, 15), arr.shape)
    img = Image.fromarray(np.clip(arr + noise, 0, 255).astype("uint8"))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 7)):
        col = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = rng.uniform(0, size), rng.uniform(0, size)
        if rng.random() < 0.5:
            d.line(
                [x0, y0, x0 + rng.uniform(-size, size) / 3, y0 + rng.uniform(-size, size) / 3],
                fill=col,
                width=rng.randint(1, 3),
            )
        else:
            r = rng.uniform(2, size / 10)
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], outline=col, width=rng.randint(1, 2))
    return img


def _contrast_colour(rng: random.Random, bg: tuple) -> tuple:
    return tuple((c + rng.randint(80, 176)) % 256 for c in bg)


def _draw_figure(img, kp: np.ndarray, height: float, colour: tuple) -> None:
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    width = max(1, round(height * rng_width(height)))
    p = {n: tuple(kp[i]) for i, n in enumerate(FIGURE_KEYPOINTS)}
    neck = tuple((kp[1] + kp[2]) / 2)
    pelvis = tuple((kp[7] + kp[8]) / 2)
    segments = [
        (neck, pelvis),
        (p["left_shoulder"], p["right_shoulder"]),
        (p["left_hip"], p["right_hip"]),
    ]
    for side in ("left", "right"):
        segments += [
            (p[f"{side}_shoulder"], p[f"{side}_elbow"]),
            (p[f"{side}_elbow"], p[f"{side}_hand"]),
            (p[f"{side}_hip"], p[f"{side}_knee"]),
            (p[f"{side}_knee"], p[f"{side}_foot"]),
        ]
    for a, b in segments:
        d.line([a, b], fill=colour, width=width)
    # Head: a circle just above the neck; the head keypoint is its centre.
    r = 0.075 * height
    hx, hy = p["head"]
    d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=colour)
    d.line([neck, (hx, hy)], fill=colour, width=width)
    # Hands and feet end in small blobs, so their ends are visible landmarks.
    for n in ("left_hand", "right_hand", "left_foot", "right_foot"):
        x, y = p[n]
        q = max(1.0, 0.022 * height)
        d.ellipse([x - q, y - q, x + q, y + q], fill=colour)


def rng_width(height: float) -> float:
    """Line width as a fraction of figure height (thinner for big figures, at least 1 px)."""
    return 0.03 if height < 60 else 0.025


def make_figure_image(rng: random.Random, size: int, image_id: int, ann_id: int):
    """One image with 1 (or, 1 time in 4, 2) figures -> (PIL image, [COCO annotations])."""
    img = _background(rng, size)
    n_fig = 2 if rng.random() < 0.25 else 1
    anns = []
    for f in range(n_fig):
        # Two figures get one half of the image each so their boxes do not overlap much.
        lo, hi = (0.0, 1.0) if n_fig == 1 else ((0.0, 0.5) if f == 0 else (0.5, 1.0))
        height = rng.uniform(0.4, 0.9) * size * (0.8 if n_fig == 2 else 1.0)
        kp = _pose(rng) * height
        angle = rng.uniform(-25, 25)
        kp = np.stack([_rot(k, angle) for k in kp])
        margin = 0.09 * height
        mins, maxs = kp.min(0) - margin, kp.max(0) + margin
        span = maxs - mins
        x_lo, x_hi = lo * size - mins[0], hi * size - maxs[0]
        y_lo, y_hi = -mins[1], size - maxs[1]
        ox = rng.uniform(x_lo, x_hi) if x_hi > x_lo else (x_lo + x_hi) / 2
        oy = rng.uniform(y_lo, y_hi) if y_hi > y_lo else (y_lo + y_hi) / 2
        kp = kp + np.array([ox, oy])
        bg = img.getpixel((int(np.clip(kp[0, 0], 0, size - 1)), int(np.clip(kp[0, 1], 0, size - 1))))
        _draw_figure(img, kp, height, _contrast_colour(rng, bg))
        vis = np.full(len(kp), 2)
        if rng.random() < 0.3:  # an occluder over one joint: its keypoints become v=1
            from PIL import ImageDraw

            c = kp[rng.randrange(len(kp))]
            half = rng.uniform(0.06, 0.14) * height
            box = [c[0] - half, c[1] - half, c[0] + half, c[1] + half]
            ImageDraw.Draw(img).rectangle(box, fill=tuple(rng.randint(0, 255) for _ in range(3)))
            inside = (kp[:, 0] >= box[0]) & (kp[:, 0] <= box[2]) & (kp[:, 1] >= box[1]) & (kp[:, 1] <= box[3])
            vis[inside] = 1
        outside = (kp[:, 0] < 0) | (kp[:, 0] >= size) | (kp[:, 1] < 0) | (kp[:, 1] >= size)
        vis[outside] = 0
        x0, y0 = np.clip(mins + (ox, oy), 0, size)
        x1, y1 = np.clip(mins + span + (ox, oy), 0, size)
        flat = []
        for (x, y), v in zip(kp, vis):
            flat += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0, 0, 0]
        anns.append(
            {
                "id": ann_id + f,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [
                    round(float(x0), 2),
                    round(float(y0), 2),
                    round(float(x1 - x0), 2),
                    round(float(y1 - y0), 2),
                ],
                "area": round(float((x1 - x0) * (y1 - y0)), 2),
                "iscrowd": 0,
                "keypoints": flat,
                "num_keypoints": int((vis > 0).sum()),
            }
        )
    return img, anns


def make_figures(n_images: int, size: int = 128, seed: int = 0, split: str = "train"):
    """Deterministic COCO keypoints dataset: (coco dict, {image_id: PIL image}).

    file_name is `images/<split>/<id>.png`, the layout `make-data` writes.
    """
    rng = random.Random(f"{seed}-{split}")  # str seeds hash deterministically in random.Random
    images, pil, anns = [], {}, []
    for i in range(n_images):
        image_id = i + 1
        img, a = make_figure_image(rng, size, image_id, ann_id=len(anns) + 1)
        images.append(
            {"id": image_id, "file_name": f"images/{split}/{image_id:06d}.png", "width": size, "height": size}
        )
        pil[image_id] = img
        anns += a
    coco = {
        "info": {"description": f"loraworks synthetic stick figures ({split}, seed {seed})"},
        "images": images,
        "annotations": anns,
        "categories": [FIGURE_CATEGORY],
    }
    return coco, pil
