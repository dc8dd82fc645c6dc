"""Image checks shared by the vision apps: decode-or-explain, and any mode to 8-bit RGB."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def to_rgb(img):
    """Any PIL mode (CMYK, RGBA, L, P, 16-bit I;16 / I) to 8-bit RGB; alpha is composited on white."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype("uint8")).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def open_image(path: str | os.PathLike):
    """Open and fully decode an image as RGB, or raise DataError naming the file and the cause."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); re-export or remove it (or pass --skip_bad_images)")
    try:
        with Image.open(path) as img:
            img.load()  # verify() misses truncation; a full decode does not
            return to_rgb(img)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image PIL can read; remove it (or pass --skip_bad_images)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise DataError(f"{path}: corrupt image ({e}); remove it (or pass --skip_bad_images)") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to decode safely ({e})") from None


def check_image(path: str | os.PathLike) -> str | None:
    """None if the image decodes, else the reason (for --skip_bad_images counting)."""
    try:
        open_image(path)
    except DataError as e:
        return str(e)
    return None


def safe_join(root: str | os.PathLike, rel: str, where: str) -> Path:
    """`root / rel`, refusing paths that escape `root` (e.g. '../../etc/passwd') with a DataError."""
    root_p = Path(root).resolve()
    p = (root_p / rel).resolve()
    if not p.is_relative_to(root_p):
        raise DataError(f"{where}: path {rel!r} escapes the data root {root_p}; use paths inside it")
    return p
