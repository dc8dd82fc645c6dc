"""Image checks shared by the vision apps: decode-or-explain, EXIF orientation, and any mode to 8-bit RGB."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ORIENTATION = 0x0112  # EXIF tag: how the camera was held; viewers turn the pixels by it
_SWAPS_SIDES = {5, 6, 7, 8}  # orientations that turn the image by 90 degrees (width and height swap)


def upright(img, where: str | os.PathLike = "image"):
    """`img` as viewers show it: its EXIF Orientation applied (and the tag dropped), else `img` itself.

    A phone photo taken in portrait is often stored landscape with Orientation=6; decoded as stored, the
    model would see it sideways. Malformed EXIF makes PIL raise almost anything, so any failure is a
    DataError naming the file (the `datasets` Image feature would crash on it mid-training).
    """
    from PIL import ImageOps

    try:
        if img.getexif().get(ORIENTATION) in (None, 1):
            return img
        return ImageOps.exif_transpose(img)
    except Exception as e:  # noqa: BLE001 - ZeroDivisionError, UnicodeDecodeError, struct.error, ...
        raise DataError(
            f"{where}: unreadable EXIF metadata ({type(e).__name__}: {e}); re-save the image without EXIF "
            "(or pass --skip_bad_images)"
        ) from None


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
    """Open and fully decode an image as upright RGB (EXIF orientation applied), or raise DataError
    naming the file and the cause. Every vision app loads images from files through this."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); re-export or remove it (or pass --skip_bad_images)")
    try:
        with Image.open(path) as img:
            img.load()  # verify() misses truncation; a full decode does not
            return to_rgb(upright(img, path))
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


def stored_size(path: str | os.PathLike) -> tuple[tuple[int, int], int | None]:
    """((width, height) of the pixels as stored, EXIF orientation or None), from the header only."""
    from PIL import Image

    with Image.open(path) as img:
        try:
            orientation = img.getexif().get(ORIENTATION)
        except Exception:  # noqa: BLE001 - open_image already reported unreadable EXIF
            orientation = None
        return img.size, orientation


def check_coco_size(where: str, path: str | os.PathLike, declared, size: tuple[int, int], what: str) -> None:
    """Refuse a COCO image entry whose (width, height) differs from the upright image's `size`.

    COCO sizes and coordinates describe the image as shown (EXIF orientation applied), as COCO tools and
    annotation tools display it; so a rotated phone photo stored 4032x3024 whose entry says 3024x4032 is
    fine. When the entry gives the stored size of a rotated photo, the cause is the orientation, not
    width/height: its `what` (boxes, keypoints) were likely drawn on the unrotated pixels.
    """
    w, h = declared
    if (w, h) == tuple(size):
        return
    path = Path(path)
    (sw, sh), orientation = stored_size(path)
    turned = orientation in _SWAPS_SIDES
    if turned and (w, h) == (sw, sh):
        raise DataError(
            f"{where}: the JSON gives {w}x{h}, the stored size of {path.name}, but its EXIF orientation "
            f"{orientation} shows it rotated as {size[0]}x{size[1]}, and COCO {what} refer to the image as "
            f"shown; if the {what} were drawn on the unrotated pixels, strip the file's EXIF Orientation "
            f"tag (e.g. exiftool -Orientation= {path.name}), else re-export them from a tool that shows "
            "the photo upright"
        )
    shown = f" as shown (stored {sw}x{sh}, EXIF orientation {orientation})" if turned else ""
    raise DataError(
        f"{where}: the JSON says {w}x{h} but the file is {size[0]}x{size[1]}{shown}; fix width/height "
        f"({what} are in the pixel coordinates of the image as shown)"
    )


def collect_inputs(inputs: list[str], what: str = "image file or directory") -> list[Path]:
    """Expand predict inputs: files as given, directories to the images inside them (sorted, recursive).

    Args:
        inputs: paths from the command line.
        what: what the app's predict accepts, for the error when `inputs` is empty.

    Returns:
        The paths, in the order given; raises DataError on a missing path or an image-less directory.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: no images in this directory")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise DataError(f"{p}: file not found")
    if not paths:
        raise DataError(f"predict needs at least one {what}")
    return paths
