"""Training-time augmentation of uint8 bitmaps: random shifts, rotations and zooms, one batch at a time.

People draw the same thing a little off-centre, tilted or smaller; showing the MLP such variants
is the cheapest way to bring it closer to a convolutional network. Everything is vectorised over
the batch and stays float32.
"""

from __future__ import annotations

import numpy as np

from doodle.pixels import to_float


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
    with bilinear sampling and zero fill: uint8 (B, S, S) -> float32 (B, S*S) in [0, 1].

    One resample for the whole batch: every output pixel's source point comes from a per-image affine
    map of a fixed grid, and the four neighbours are gathered with flat indices into the padded batch
    (`take` on one flat array is ~5x faster than 2-D fancy indexing; with intp indices it converts
    none, and the right and lower neighbours are the same indices into the array shifted by 1 and by a
    row). Everything else stays float32.
    """
    b, s, _ = xb.shape
    w = s + 2  # the padded side: one pixel of zeros all round, so neighbours never leave the image
    c = (s - 1) / 2.0
    grid = np.arange(s, dtype=np.float32) - np.float32(c)
    gx, gy = np.tile(grid, s)[None, :], np.repeat(grid, s)[None, :]  # (1, S*S) output pixels about the centre
    cos = (np.cos(theta) / zoom).astype(np.float32)[:, None]  # (B, 1) inverse map: output pixel -> source point
    sin = (np.sin(theta) / zoom).astype(np.float32)[:, None]
    tx, ty = t[:, :1].astype(np.float32), t[:, 1:].astype(np.float32)  # (B, 1)
    tmp = np.empty((b, s * s), dtype=np.float32)
    sx = cos * gx  # (B, S*S): cos*(gx - tx) + sin*(gy - ty) + c + 1, the +1 for the padding
    sx += np.multiply(sin, gy, out=tmp)
    sx += np.float32(c + 1) - cos * tx - sin * ty
    sy = cos * gy  # -sin*(gx - tx) + cos*(gy - ty) + c + 1
    sy -= np.multiply(sin, gx, out=tmp)
    sy += np.float32(c + 1) + sin * tx - cos * ty
    np.clip(sx, 0.0, s + 0.999, out=sx)
    np.clip(sy, 0.0, s + 0.999, out=sy)
    x0f, y0f = np.floor(sx), np.floor(sy)
    sx -= x0f  # the bilinear weights, in place
    sy -= y0f
    # (B, S*S) flat index of the top-left neighbour in the padded batch: within one image in float32 (exact, as
    # w*w < 2**24), then each image's offset in integers (a batch's flat indices may pass 2**24)
    y0f *= w
    y0f += x0f
    idx = y0f.astype(np.intp)
    idx += (np.arange(b, dtype=np.intp) * (w * w))[:, None]
    img = np.zeros((b, w, w), dtype=np.float32)
    img[:, 1:-1, 1:-1] = xb
    img = img.reshape(-1)
    out = img.take(idx)  # top-left, then top = tl + fx * (tr - tl)
    right = img[1:].take(idx)
    right -= out
    right *= sx
    out += right
    bottom = img[w:].take(idx)  # bottom = bl + fx * (br - bl)
    img[w + 1:].take(idx, out=right)
    right -= bottom
    right *= sx
    bottom += right
    bottom -= out  # out = top + fy * (bottom - top)
    bottom *= sy
    out += bottom
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
                  scale: float = 0.0, probability: float = 1.0, flip: float = 0.0) -> np.ndarray:
    """uint8 (B, S, S) -> augmented float32 (B, S*S) in [0, 1]; identity when every setting is 0.

    `flip` is the share of images then mirrored left to right: a mirrored cat is still a cat, and
    the MLP, which has no notion of symmetry, sees twice as many kinds of drawing."""
    out = _transform(xb, rng, shift, rotate, scale, probability)
    if flip > 0:
        images = out.reshape(xb.shape)
        mirror = rng.random(len(xb)) < flip
        images[mirror] = images[mirror, :, ::-1]
    return out


def _transform(xb, rng, shift, rotate, scale, probability) -> np.ndarray:
    """The shifts, rotations and zooms of augment_batch, as float32 (B, S*S) (always a new array)."""
    b, s, _ = xb.shape
    if (shift == 0 and rotate == 0 and scale == 0) or probability == 0:
        return to_float(xb)
    mask = rng.random(b) < probability
    if rotate == 0 and scale == 0:
        max_px = int(round(shift * s))
        return to_float(_integer_shift(xb, rng, max_px, mask)) if max_px else to_float(xb)
    return _random_affine(xb, rng, shift, rotate, scale, mask)
