"""Prediction outputs that never replace a file predict did not write: an input, a run's own files
(adapter, configs, keypoints.json, plots), or a user's file in the chosen folder.

predict marks what it writes (PNG drawings carry a tEXt chunk; results are COCO-results JSON lists), so a
re-run into the same folder replaces its own earlier outputs and nothing else.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import UsageError

PNG_MARK = ("Software", "loraworks predict")  # a standard PNG text key; viewers show it as the creator


def png_bytes(image) -> bytes:
    """`image` as PNG bytes, marked as a predict output so a later predict may replace the file."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*PNG_MARK)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def written_by_predict(path: str | os.PathLike) -> bool:
    """True for a PNG that `png_bytes` marked, or a JSON list of COCO results (what predict writes)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        try:
            with Image.open(path) as img:  # text chunks before the pixels: read without decoding
                return img.info.get(PNG_MARK[0]) == PNG_MARK[1]
        except Exception:  # noqa: BLE001 - not an image we can read: certainly not ours
            return False
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        # A run's keypoints.json / labels.json is an object; predict's results are a list of detections.
        return isinstance(obj, list) and all(
            isinstance(r, dict) and {"image_id", "category_id"} <= r.keys() for r in obj
        )
    return False


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows links: a symlink to an input is that input
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    default_dir: str | os.PathLike,
    flag: str = "--predictions_dir",
) -> None:
    """Refuse, before anything is written, outputs that would replace a file predict did not write.

    Refused (UsageError naming the file and the fix): `out_dir` that is not a folder; an output that is
    one of `inputs` (the same file, through links too); an output path that is a folder; and in any
    folder but `default_dir` (<run>/predictions, predict's own), an existing file no earlier predict
    wrote: a run's adapter, configs or keypoints.json, a user's photo. In `default_dir` earlier outputs
    are replaced as they always were (including unmarked ones from older versions).
    """
    out_dir, default_dir = Path(out_dir), Path(default_dir)
    fix = f"pick another {flag} (a new or empty folder; the default is {default_dir})"
    existing = next((p for p in [out_dir, *out_dir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{flag} {out_dir}: {existing} is a file, not a folder; {fix}")
    inputs_by_id = {i: Path(p) for p in inputs if (i := _file_id(Path(p))) is not None}
    own_dir = out_dir.resolve() == default_dir.resolve()
    for out in map(Path, outputs):
        if not out.exists() and not out.is_symlink():
            continue
        if out.is_dir():
            raise UsageError(f"{out}: predict writes a file here but this is a folder; {fix}")
        same = inputs_by_id.get(_file_id(out))
        if same is not None:
            raise UsageError(f"{out} would overwrite the input {same}; {fix}")
        if not own_dir and not written_by_predict(out):
            raise UsageError(f"{out}: exists and was not written by predict, so it is not overwritten; {fix}")
