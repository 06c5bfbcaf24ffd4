"""The face stack's affine warp: a whole-pixel shift (a render on a canvas of its own size)
takes a copy, and gives exactly what bilinear resampling gives; a crop reads only the part
of the photo it samples and gives exactly what warping the whole photo gives; crops past
the frame are black."""

from __future__ import annotations

import numpy as np
from PIL import Image

from services.faces.geometry import (
    invert_affine,
    letterbox_matrix,
    rotated_rect_transform,
    warp_affine,
)


def resampled(image: np.ndarray, m: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Pillow's bilinear affine transform, which warp_affine uses for every other matrix."""
    coeffs = tuple(float(c) for c in invert_affine(m).reshape(-1))
    out = Image.fromarray(image).transform(
        (out_w, out_h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
    )
    return np.asarray(out)


def test_a_whole_pixel_shift_equals_resampling() -> None:
    rng = np.random.default_rng(7)
    for h, w, size in [(512, 512, 512), (384, 512, 512), (500, 320, 512)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        m = letterbox_matrix(h, w, size)
        if m[0, 0] != 1.0:
            m = np.array([[1.0, 0, 96], [0, 1.0, 6]])  # a shift the letterbox did not make
        out = warp_affine(image, m, size, size)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
        assert np.array_equal(out, resampled(image, m, size, size))


def test_a_shift_past_the_frame_is_black_there() -> None:
    image = np.full((40, 30, 3), 200, np.uint8)
    out = warp_affine(image, np.array([[1.0, 0, 20], [0, 1.0, -10]]), 40, 40)
    assert (out[:30, 20:40] == 200).all()  # the part of the photo still in view
    assert (out[:, :20] == 0).all() and (out[30:] == 0).all()


def whole_photo_warp(image: np.ndarray, m: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """The warp done the long way: box-reduce the whole photo when shrinking, then resample."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        f = max(1, min(int(1 / scale), min(image.shape[:2]) // 2))
        image = np.asarray(Image.fromarray(image).reduce(f))
        o = (f - 1) / 2.0
        m = np.hstack([m[:, :2] * f, (m[:, 2] + m[:, :2] @ np.array([o, o]))[:, None]])
    return resampled(image, m, out_w, out_h)


def test_a_crop_of_a_large_photo_reads_only_its_window_and_gives_the_same_pixels() -> None:
    """Eye, mesh, palm and detector crops of big uploads: rotated, shrunk, partly or wholly
    past the frame."""
    rng = np.random.default_rng(14)
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(20, 1400, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = int(rng.choice([64, 128, 192, 256, 320]))
        centre = (float(rng.uniform(-0.3 * w, 1.3 * w)), float(rng.uniform(-0.3 * h, 1.3 * h)))
        size = float(rng.uniform(5, 2.5 * max(h, w)))
        m = rotated_rect_transform(centre, size, float(rng.uniform(-np.pi, np.pi)), out)
        assert np.array_equal(warp_affine(image, m, out, out), whole_photo_warp(image, m, out, out))
