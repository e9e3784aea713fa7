"""Arrays of pixels as the network reads them: uint8 bitmaps -> floats, and the shifted and mirrored
views that test-time augmentation averages over.

Leaf module (numpy only): the renderer (doodle.raster) makes the bitmaps, the network (doodle.nn)
reads these floats, and neither needs the other for that.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from doodle.errors import DoodleError


def to_float(xb: np.ndarray) -> np.ndarray:
    """uint8 bitmaps (B, S, S) or (B, S*S) -> float32 (B, S*S) in [0, 1]: what the network reads, in training and
    after."""
    if xb.dtype != np.uint8 or xb.ndim not in (2, 3):
        raise DoodleError(f"to_float expects a batch of uint8 images (B, 28, 28) or (B, 784), "
                          f"got {xb.dtype} {xb.shape}")
    out = xb.reshape(len(xb), -1).astype(np.float32)  # (B, S*S), C-contiguous
    out *= np.float32(1.0 / 255.0)  # 255 -> exactly 1.0; in place, cheaper than dividing
    return out


def shift_images(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Square images, flattened (N, S*S), moved dy pixels down and dx right with zero fill (a new array)."""
    n, s = x.shape[0], side(x)
    img = x.reshape(n, s, s)
    out = np.zeros_like(img)
    out[:, max(dy, 0):s + min(dy, 0), max(dx, 0):s + min(dx, 0)] = \
        img[:, max(-dy, 0):s + min(-dy, 0), max(-dx, 0):s + min(-dx, 0)]
    return out.reshape(n, s * s)


def mirror_images(x: np.ndarray) -> np.ndarray:
    """Square images, flattened (N, S*S), mirrored left to right (a new array)."""
    n, s = x.shape[0], side(x)
    return np.ascontiguousarray(x.reshape(n, s, s)[:, :, ::-1]).reshape(n, s * s)


def side(x: np.ndarray) -> int:
    """The side of the square images whose flattened rows are x (N, S*S)."""
    s = int(round(np.sqrt(x.shape[1])))
    if s * s != x.shape[1]:
        raise DoodleError(f"test-time augmentation needs square images, got {x.shape[1]} pixels")
    return s


_SHIFTS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]  # the image and its four one-pixel neighbours
# Test-time augmentation: name -> the views whose logits a prediction averages, each (mirrored, dy, dx).
TTA: dict[str, list[tuple[bool, int, int]]] = {
    "none": [],
    "shift": [(False, dy, dx) for dy, dx in _SHIFTS],
    "flip": [(False, 0, 0), (True, 0, 0)],
    "flip_shift": [(m, dy, dx) for m in (False, True) for dy, dx in _SHIFTS],
}


def tta_views(x: np.ndarray, views: list[tuple[bool, int, int]]) -> Iterator[np.ndarray]:
    """Each (mirrored, dy, dx) view of the flattened square images x (N, S*S), in turn."""
    mirror = mirror_images(x) if any(m for m, _, _ in views) else None  # once, for every mirrored view
    for mirrored, dy, dx in views:
        v = x
        if mirrored:
            assert mirror is not None  # made above whenever a view is mirrored
            v = mirror
        yield shift_images(v, dy, dx) if (dy or dx) else v
