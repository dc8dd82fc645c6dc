import numpy as np
import pytest
import torch
from vision_pose.heatmaps import decode_heatmaps, encode_heatmaps


@pytest.mark.parametrize("method,tol", [("dark", 0.05), ("quarter", 0.5)])
def test_encode_decode_recovers_coordinates(method, tol):
    rng = np.random.default_rng(0)
    coords = rng.uniform(3, [44, 60], size=(6, 5, 2))  # (u, v) inside a 64x48 heatmap, sub-pixel
    hm = encode_heatmaps(coords, (64, 48), sigma=2.0)
    assert hm.shape == (6, 5, 64, 48) and np.isclose(hm.max(), 1.0, atol=0.1)
    uv, score = decode_heatmaps(hm, method, sigma=2.0, blur=False)
    assert np.abs(uv - coords).max() < tol
    assert score.shape == (6, 5) and (score > 0.7).all()


def test_dark_with_blur_on_a_gaussian_still_sub_pixel():
    coords = np.array([[[10.3, 7.8], [20.6, 30.2]]])
    uv, _ = decode_heatmaps(encode_heatmaps(coords, (48, 32), 2.0), "dark", 2.0, blur=True)
    assert np.abs(uv - coords).max() < 0.1


def test_torch_and_numpy_targets_agree():
    coords = np.array([[[5.5, 6.25], [0.0, 31.0]]], dtype=np.float32)
    a = encode_heatmaps(coords, (32, 24), 1.5)
    b = encode_heatmaps(torch.from_numpy(coords), (32, 24), 1.5).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_decode_rejects_bad_input():
    with pytest.raises(ValueError, match="N, K, H, W"):
        decode_heatmaps(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="unknown method"):
        decode_heatmaps(np.zeros((1, 1, 4, 4)), "nope")
