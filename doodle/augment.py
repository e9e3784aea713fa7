"""Training-time augmentation of uint8 bitmaps: random shifts, rotations and zooms, one batch at a time.

People draw the same thing a little off-centre, tilted or smaller; showing the MLP such variants
is the cheapest way to bring it closer to a convolutional network. Everything is vectorised over
the batch and stays float32.
"""

from __future__ import annotations

import numpy as np

from doodle.raster import to_float


def _integer_shift(xb: np.ndarray, rng: np.random.Generator, max_px: int, mask: np.ndarray) -> np.ndarray:
    """Translate each image by whole pixels (zero fill); only rows where mask is True move."""
    b, s, _ = xb.shape
    padded = np.pad(xb, ((0, 0), (max_px, max_px), (max_px, max_px)))
    d = rng.integers(-max_px, max_px + 1, size=(b, 2))
    d[~mask] = 0
    rows = (np.arange(s)[None, :] + max_px - d[:, :1])  # (B, S)
    cols = (np.arange(s)[None, :] + max_px - d[:, 1:])  # (B, S)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def affine_batch(xb: np.ndarray, theta: np.ndarray, zoom: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rotate by theta (radians), zoom, then translate by t (pixels, (B, 2) as x, y) about the centre,
    with bilinear sampling and zero fill: uint8 (B, S, S) -> float32 (B, S*S) in [0, 1]."""
    b, s, _ = xb.shape
    c = np.float32((s - 1) / 2.0)
    grid = np.arange(s, dtype=np.float32) - c
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    gy, gx = gy.ravel()[None, :], gx.ravel()[None, :]  # (1, S*S)
    cos = (np.cos(theta) / zoom).astype(np.float32)[:, None]  # inverse map: output pixel -> source point
    sin = (np.sin(theta) / zoom).astype(np.float32)[:, None]
    ox, oy = gx - t[:, :1].astype(np.float32), gy - t[:, 1:].astype(np.float32)
    sx = cos * ox + sin * oy + (c + 1)  # +1: the image is padded by one pixel of zeros
    sy = -sin * ox + cos * oy + (c + 1)
    np.clip(sx, 0.0, s + 0.999, out=sx)
    np.clip(sy, 0.0, s + 0.999, out=sy)
    x0f, y0f = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0f, sy - y0f  # float32 weights (int32 - float32 would promote to float64)
    x0, y0 = x0f.astype(np.int32), y0f.astype(np.int32)
    w = s + 2
    img = np.pad(xb, ((0, 0), (1, 1), (1, 1))).reshape(b, -1)  # (B, (S+2)^2) uint8
    rows = np.arange(b)[:, None]
    idx = y0 * w + x0
    top = img[rows, idx] * (1 - fx) + img[rows, idx + 1] * fx
    bot = img[rows, idx + w] * (1 - fx) + img[rows, idx + w + 1] * fx
    out = top * (1 - fy) + bot * fy
    out *= np.float32(1.0 / 255.0)
    return out


def _random_affine(xb, rng, shift, rotate, scale, mask) -> np.ndarray:
    b, s, _ = xb.shape
    theta = np.deg2rad(rng.uniform(-rotate, rotate, size=b)).astype(np.float32)
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, size=b).astype(np.float32)
    t = rng.uniform(-shift * s, shift * s, size=(b, 2)).astype(np.float32)
    theta[~mask], zoom[~mask], t[~mask] = 0.0, 1.0, 0.0
    return affine_batch(xb, theta, zoom, t)


def augment_batch(xb: np.ndarray, rng: np.random.Generator, shift: float = 0.0, rotate: float = 0.0,
                  scale: float = 0.0, probability: float = 1.0) -> np.ndarray:
    """uint8 (B, S, S) -> augmented float32 (B, S*S) in [0, 1]; identity when every setting is 0."""
    b, s, _ = xb.shape
    if (shift == 0 and rotate == 0 and scale == 0) or probability == 0:
        return to_float(xb)
    mask = rng.random(b) < probability
    if rotate == 0 and scale == 0:
        max_px = int(round(shift * s))
        return to_float(_integer_shift(xb, rng, max_px, mask)) if max_px else to_float(xb)
    return _random_affine(xb, rng, shift, rotate, scale, mask)
