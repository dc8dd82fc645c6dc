"""Gaussian heatmap targets and sub-pixel decoding.

Coordinates here are in heatmap pixels with pixel *centres* at integer positions: heatmap pixel j covers
input pixels [j*s, (j+1)*s) for stride s, so an input coordinate x maps to u = x / s - 0.5 (see data.py).
"""

from __future__ import annotations

import numpy as np


def encode_heatmaps(coords, size: tuple[int, int], sigma: float):
    """(..., K, 2) keypoint (u, v) in heatmap pixels -> (..., K, H, W) unnormalised Gaussians (peak 1).

    Works on numpy arrays and torch tensors (the model builds its targets on the fly from the labels).
    """
    h, w = size
    if isinstance(coords, np.ndarray):
        xs = np.arange(w, dtype=np.float32)
        ys = np.arange(h, dtype=np.float32)
        u, v = coords[..., 0:1].astype(np.float32), coords[..., 1:2].astype(np.float32)
        gx = np.exp(-((xs - u) ** 2) / (2 * sigma**2))  # (..., K, W)
        gy = np.exp(-((ys - v) ** 2) / (2 * sigma**2))  # (..., K, H)
        return gy[..., :, None] * gx[..., None, :]
    import torch

    xs = torch.arange(w, dtype=coords.dtype, device=coords.device)
    ys = torch.arange(h, dtype=coords.dtype, device=coords.device)
    gx = torch.exp(-((xs - coords[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((ys - coords[..., 1:2]) ** 2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def _argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) -> integer (N, K, 2) peak (x, y) and (N, K) peak value."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(-1)
    maxval = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    return np.stack([idx % w, idx // w], -1).astype(np.float64), maxval


def _quarter_offset(heatmaps: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Move each argmax a quarter pixel towards its higher neighbour (SimpleBaseline / HRNet)."""
    n, k, h, w = heatmaps.shape
    out = xy.copy()
    for i in range(n):
        for j in range(k):
            x, y = int(xy[i, j, 0]), int(xy[i, j, 1])
            hm = heatmaps[i, j]
            if 0 < x < w - 1:
                out[i, j, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
            if 0 < y < h - 1:
                out[i, j, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
    return out


def _dark(heatmaps: np.ndarray, xy: np.ndarray, sigma: float, blur: bool) -> np.ndarray:
    """DARK (Zhang et al., CVPR 2020): Newton step on the log-heatmap around the argmax.

    A Gaussian's log is a quadratic, so on a clean Gaussian the step lands exactly on the centre;
    predicted heatmaps are first smoothed (Gaussian blur, max rescaled back) to look like one.
    """
    from scipy.ndimage import gaussian_filter

    n, k, h, w = heatmaps.shape
    out = xy.copy()
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j].astype(np.float64)
            if blur:
                peak = hm.max()
                hm = gaussian_filter(hm, sigma=max(sigma / 2, 0.5), mode="constant")
                hm = hm * (peak / hm.max()) if hm.max() > 0 else hm
            lg = np.log(np.maximum(hm, 1e-10))
            x, y = int(xy[i, j, 0]), int(xy[i, j, 1])
            if not (1 <= x < w - 1 and 1 <= y < h - 1):
                continue
            dx = 0.5 * (lg[y, x + 1] - lg[y, x - 1])
            dy = 0.5 * (lg[y + 1, x] - lg[y - 1, x])
            dxx = lg[y, x + 1] - 2 * lg[y, x] + lg[y, x - 1]
            dyy = lg[y + 1, x] - 2 * lg[y, x] + lg[y - 1, x]
            dxy = 0.25 * (lg[y + 1, x + 1] - lg[y + 1, x - 1] - lg[y - 1, x + 1] + lg[y - 1, x - 1])
            det = dxx * dyy - dxy**2
            if det <= 1e-12 or dxx >= 0:  # not a proper maximum: keep the argmax
                continue
            off_x = -(dyy * dx - dxy * dy) / det
            off_y = -(dxx * dy - dxy * dx) / det
            if abs(off_x) < 1 and abs(off_y) < 1:  # a larger step means the quadratic model is off
                out[i, j] += (off_x, off_y)
    return out


def decode_heatmaps(
    heatmaps, method: str = "dark", sigma: float = 2.0, blur: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps -> ((N, K, 2) sub-pixel (u, v) in heatmap pixels, (N, K) scores = peak values).

    method: "dark" (Taylor refinement) | "quarter" (argmax + quarter offset) | "argmax".
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got {hm.shape}")
    xy, maxval = _argmax(hm)
    if method == "dark":
        xy = _dark(hm, xy, sigma, blur)
    elif method == "quarter":
        xy = _quarter_offset(hm, xy)
    elif method != "argmax":
        raise ValueError(f"decode: unknown method {method!r} (dark | quarter | argmax)")
    return xy, maxval
