"""Augmentation: exact geometry on known transforms, identity when off, float32 and deterministic."""

import numpy as np

from doodle.augment import affine_batch, augment_batch
from doodle.pixels import to_float


def dot(size=9, r=2, c=6):
    x = np.zeros((1, size, size), np.uint8)
    x[0, r, c] = 255
    return x


def test_identity_when_off():
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    rng = np.random.default_rng(0)
    assert np.array_equal(augment_batch(x, rng), to_float(x))
    assert np.array_equal(augment_batch(x, rng, shift=0.2, rotate=10, probability=0.0), to_float(x))


def test_affine_geometry():
    x = dot()
    one = np.ones(1, np.float32)
    same = affine_batch(x, np.zeros(1, np.float32), one, np.zeros((1, 2), np.float32))
    assert np.allclose(same, to_float(x))
    moved = affine_batch(x, np.zeros(1), one, np.array([[-3.0, 2.0]])).reshape(9, 9)
    assert moved[4, 3] == 1.0 and moved.sum() == 1.0  # x - 3, y + 2
    # 90 degrees about the centre (4, 4): (row 2, col 6) -> (row 6, col 6) in image coordinates (y down)
    turned = affine_batch(x, np.array([np.pi / 2]), one, np.zeros((1, 2))).reshape(9, 9)
    r, c = np.unravel_index(turned.argmax(), turned.shape)
    assert (r, c) == (6, 6) and turned.max() > 0.99
    half = affine_batch(x, np.zeros(1), one, np.array([[0.5, 0.0]])).reshape(9, 9)
    assert np.allclose(half[2, 6:8], [0.5, 0.5])  # bilinear split between two pixels


def test_integer_shift_keeps_ink_and_is_seeded():
    x = dot(28, 14, 14)
    a = augment_batch(np.repeat(x, 50, 0), np.random.default_rng(1), shift=0.1)
    b = augment_batch(np.repeat(x, 50, 0), np.random.default_rng(1), shift=0.1)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert np.allclose(a.sum(axis=1), 1.0)  # a dot moved by at most 3 px never leaves the image
    assert len({int(row.argmax()) for row in a}) > 5


def test_random_affine_is_float32_bounded_and_seeded():
    x = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    a = augment_batch(x, np.random.default_rng(5), shift=0.1, rotate=15, scale=0.1)
    b = augment_batch(x, np.random.default_rng(5), shift=0.1, rotate=15, scale=0.1)
    assert a.dtype == np.float32 and a.shape == (16, 784)
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1


def test_flip_mirrors_the_chosen_images_left_to_right():
    x = np.random.default_rng(0).integers(0, 256, (40, 9, 9), dtype=np.uint8)
    every = augment_batch(x, np.random.default_rng(2), flip=1.0).reshape(40, 9, 9)
    assert np.array_equal(every, to_float(x[:, :, ::-1].reshape(40, 81)).reshape(40, 9, 9))
    half = augment_batch(x, np.random.default_rng(2), flip=0.5).reshape(40, 9, 9)
    mirrored = [np.array_equal(h, e) for h, e in zip(half, every)]
    kept = [np.array_equal(h, to_float(xi[None]).reshape(9, 9)) for h, xi in zip(half, x)]
    assert all(m != k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 30  # each image one or the other
    assert np.array_equal(half, augment_batch(x, np.random.default_rng(2), flip=0.5).reshape(40, 9, 9))  # seeded
    # after the shifts and rotations: the same draws for them, then the mirror
    moved = augment_batch(x, np.random.default_rng(3), shift=0.1, rotate=10).reshape(40, 9, 9)
    both = augment_batch(x, np.random.default_rng(3), shift=0.1, rotate=10, flip=1.0).reshape(40, 9, 9)
    assert np.array_equal(both, moved[:, :, ::-1])


def test_large_batches_sample_the_right_pixels():
    """A batch's flat pixel indices pass 2**24 (float32's exact integers) at batch 20,000 of 28x28 images: each
    image is still transformed exactly as when it is alone in a batch."""
    rng = np.random.default_rng(3)
    xb = rng.integers(0, 256, size=(20_000, 28, 28), dtype=np.uint8)
    theta = rng.uniform(-0.3, 0.3, size=len(xb)).astype(np.float32)
    zoom = rng.uniform(0.9, 1.1, size=len(xb)).astype(np.float32)
    t = rng.uniform(-2, 2, size=(len(xb), 2)).astype(np.float32)
    whole = affine_batch(xb, theta, zoom, t)
    tail = slice(-500, None)  # the images whose indices are largest
    assert np.array_equal(whole[tail], affine_batch(xb[tail], theta[tail], zoom[tail], t[tail]))
