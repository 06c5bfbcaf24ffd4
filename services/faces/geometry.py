"""Small image geometry in numpy: affine warps with bilinear sampling, letterboxing.

The filter image has no OpenCV; these few functions are all the face stack needs.
"""

from __future__ import annotations

import math

import numpy as np


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 similarity (rotation, uniform scale, translation) mapping src → dst (least squares).

    Umeyama's closed form without reflection, on point pairs (N×2).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def rotated_rect_transform(
    center: tuple[float, float], size: float, angle: float, out_size: int
) -> np.ndarray:
    """2×3 matrix mapping image points into an out_size² crop of a square rotated by `angle`.

    The crop's x axis runs along `angle` (radians, image coordinates, y down).
    """
    scale = out_size / size
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]]) * scale
    t = np.array([out_size / 2, out_size / 2]) - rot @ np.asarray(center, np.float64)
    return np.hstack([rot, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    a = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(a)[:2]


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp_affine(image: np.ndarray, m: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Bilinear warp of an H×W×C image by the 2×3 forward matrix `m` (image → output).

    Pixels that map outside the source are black, as a crop past the frame edge should be.
    """
    m = np.asarray(m, np.float64)
    shift = np.round(m[:, 2])
    if np.array_equal(m[:, :2], np.eye(2)) and np.allclose(m[:, 2], shift, atol=1e-9):
        # A whole-pixel shift (a 512² render on its 512² canvas): bilinear taps land on pixel
        # centres, so a copy is the same result without resampling.
        return _shifted(image, int(shift[0]), int(shift[1]), out_w, out_h)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    f = 1
    if scale < 0.5 and min(image.shape[:2]) >= 4:
        # Shrinking a lot: box-reduce first so the bilinear taps do not alias.
        f = max(1, min(int(1 / scale), min(image.shape[:2]) // 2))
    window = _source_window(m, out_w, out_h, image.shape[0], image.shape[1], f)
    if window is None:
        return np.zeros((out_h, out_w, *image.shape[2:]), image.dtype)
    # Only the part of the photo the output samples is reduced and resampled: a 64 px eye
    # crop no longer copies and box-reduces a whole 12-megapixel upload (the same pixels
    # come out, see _source_window).
    x0, y0, x1, y1 = window
    if (x1 - x0, y1 - y0) != (image.shape[1], image.shape[0]):
        image = image[y0:y1, x0:x1]
        m = np.hstack([m[:, :2], (m[:, 2] + m[:, :2] @ np.array([x0, y0], np.float64))[:, None]])
    if f > 1:
        from PIL import Image

        image = np.asarray(Image.fromarray(image).reduce(f))
        offset = (f - 1) / 2.0
        m = np.hstack([m[:, :2] * f, (m[:, 2] + m[:, :2] @ np.array([offset, offset]))[:, None]])
    inv = invert_affine(m)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        # Pillow's C affine transform: same bilinear sampling with pixel centres, ~20× faster.
        from PIL import Image

        coeffs = tuple(float(c) for c in inv.reshape(-1))
        out_img = Image.fromarray(image).transform(
            (out_w, out_h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
        )
        return np.asarray(out_img)
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    # Pixel centres: sample the source at the centre of each output pixel.
    sx = inv[0, 0] * (xs + 0.5) + inv[0, 1] * (ys + 0.5) + inv[0, 2] - 0.5
    sy = inv[1, 0] * (xs + 0.5) + inv[1, 1] * (ys + 0.5) + inv[1, 2] - 0.5
    h, w = image.shape[:2]
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    src = image.astype(np.float32)
    if src.ndim == 2:
        src = src[..., None]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        vals = src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        return vals * inside[..., None]

    out = (
        tap(y0, x0) * (1 - fx) * (1 - fy)
        + tap(y0, x0 + 1) * fx * (1 - fy)
        + tap(y0 + 1, x0) * (1 - fx) * fy
        + tap(y0 + 1, x0 + 1) * fx * fy
    )
    if image.ndim == 2:
        out = out[..., 0]
    if image.dtype == np.uint8:
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return out.astype(image.dtype)


def _source_window(
    m: np.ndarray, out_w: int, out_h: int, h: int, w: int, block: int
) -> tuple[int, int, int, int] | None:
    """The rectangle of source pixels (x0, y0, x1, y1) the warp by `m` can read, or None.

    Every bilinear tap of the output lies inside the box around the output's corners mapped
    back, so a margin of two reduced pixels past it holds every tap and its neighbour: the
    sampler never meets a cut edge that the whole image would not have. The window starts
    on a multiple of `block` and, unless it ends at the photo's edge, spans whole blocks,
    so a box-reduce of the window gives exactly the reduced photo's pixels there.
    """
    (a, b, c), (d, e, f) = m.tolist()
    det = a * e - b * d
    if det == 0:
        return 0, 0, w, h  # a degenerate matrix: left to the warp to refuse as before
    # The output's corners taken back to the photo (the 2x2 inverse written out: this runs
    # for every crop, and np.linalg costs more than the arithmetic).
    xs, ys = [], []
    for u, v in ((0, 0), (out_w, 0), (0, out_h), (out_w, out_h)):
        du, dv = u - c, v - f
        xs.append((e * du - b * dv) / det)
        ys.append((a * dv - d * du) / det)
    margin = 2 * block + 1
    x0, y0 = max(0, math.floor(min(xs)) - margin), max(0, math.floor(min(ys)) - margin)
    x1, y1 = min(w, math.ceil(max(xs)) + margin), min(h, math.ceil(max(ys)) + margin)
    if x1 <= x0 or y1 <= y0:
        return None
    if (x1 - x0) * (y1 - y0) > h * w // 2:
        return 0, 0, w, h  # most of the photo: cutting the window would only add a copy
    x0, y0 = x0 - x0 % block, y0 - y0 % block
    x1 = min(w, x0 + -(-(x1 - x0) // block) * block)
    y1 = min(h, y0 + -(-(y1 - y0) // block) * block)
    return x0, y0, x1, y1


def _shifted(image: np.ndarray, dx: int, dy: int, out_w: int, out_h: int) -> np.ndarray:
    """`image` moved by (dx, dy) whole pixels onto a black out_w×out_h canvas."""
    out = np.zeros((out_h, out_w, *image.shape[2:]), image.dtype)
    h, w = image.shape[:2]
    x0, y0 = max(0, dx), max(0, dy)
    x1, y1 = min(out_w, dx + w), min(out_h, dy + h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = image[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return out


def letterbox_matrix(h: int, w: int, size: int) -> np.ndarray:
    """2×3 matrix fitting an h×w image into a size² square, centred, aspect kept."""
    scale = size / max(h, w)
    tx = (size - w * scale) / 2
    ty = (size - h * scale) / 2
    return np.array([[scale, 0, tx], [0, scale, ty]], np.float64)


def resize(image: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Area-aware resize via Pillow (antialiased when shrinking)."""
    from PIL import Image

    return np.asarray(
        Image.fromarray(image).resize((out_w, out_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
