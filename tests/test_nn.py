"""Layers, losses and the MLP against independent computations; dtypes, state, determinism, learning."""

from __future__ import annotations

import numpy as np
import pytest

from doodle import nn
from doodle.errors import DoodleError
from doodle.nn import (
    ACTIVATIONS,
    INITS,
    LOSSES,
    MLP,
    BatchNorm,
    Dense,
    Dropout,
    LeakyReLU,
    ModelSpec,
    ReLU,
    Sigmoid,
    Tanh,
    cross_entropy,
    mse,
    softmax,
)
from doodle.optim import SGD, make_optimizer
from doodle.pixels import TTA, mirror_images, shift_images, to_float
from doodle.train import train_step

F32 = np.float32


def ref_softmax(z):
    """float64 softmax, written out independently."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- layers --------------------------------------------------------------------------------------


def test_dense_forward_backward_values():
    rng = np.random.default_rng(0)
    d = Dense(4, 3, rng=rng, dtype=np.float64)
    d.params["b"][:] = [1.0, -2.0, 0.5]
    x = rng.standard_normal((5, 4))
    out = d.forward(x)
    np.testing.assert_allclose(out, x @ d.params["W"] + d.params["b"])
    dout = rng.standard_normal((5, 3))
    W_grad, b_grad = d.grads["W"], d.grads["b"]
    dx = d.backward(dout)
    np.testing.assert_allclose(d.grads["W"], np.einsum("bi,bj->ij", x, dout))
    np.testing.assert_allclose(d.grads["b"], dout.sum(axis=0))
    np.testing.assert_allclose(dx, np.einsum("bj,ij->bi", dout, d.params["W"]))
    assert d.grads["W"] is W_grad and d.grads["b"] is b_grad  # written in place
    d.input_grad = False
    assert d.backward(dout) is None


def test_activation_forward_values():
    x = np.array([[-3.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(ReLU().forward(x), [[0, 0, 0, 0.5, 3]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(x), [[-0.3, -0.05, 0, 0.5, 3]])
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x))
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-15)


def test_activation_backward_values():
    x = np.array([[-2.0, -0.5, 0.5, 2.0]])
    g = np.array([[1.0, 2.0, 3.0, 4.0]])
    cases = {ReLU(): [0, 0, 1, 1], LeakyReLU(0.1): [0.1, 0.1, 1, 1],
             Tanh(): 1 - np.tanh(x) ** 2, Sigmoid(): np.exp(-x) / (1 + np.exp(-x)) ** 2}
    for layer, slope in cases.items():
        layer.forward(x)
        np.testing.assert_allclose(layer.backward(g), g * slope, rtol=1e-12, err_msg=type(layer).__name__)


def test_sigmoid_extreme_inputs_do_not_overflow():
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out = Sigmoid().forward(np.array([[-1e4, 1e4]], dtype=F32))
    np.testing.assert_array_equal(out, [[0.0, 1.0]])


def test_dropout_train_and_eval():
    x = np.ones((200, 100), dtype=F32)
    d = Dropout(0.25, np.random.default_rng(0))
    assert d.forward(x, train=False) is x  # identity at evaluation
    out = d.forward(x, train=True)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)  # inverted: survivors scaled up
    assert out.dtype == F32
    g = np.full_like(x, 2.0)
    np.testing.assert_array_equal(d.backward(g), np.where(kept, 2 / 0.75, 0).astype(F32))
    with pytest.raises(DoodleError, match="dropout"):
        Dropout(1.0)


@pytest.mark.parametrize("p", [0.1, 0.5, 1e-9, 0.999999])
def test_dropout_masks_are_the_uniform_draws_they_always_were(p):
    """The float32 masks come from the generator's raw words: the same units as rng.random(float32) >= p would
    keep, and the same generator state after, whatever half-word the generator held before (odd sizes)."""
    ours, plain = np.random.default_rng(7), np.random.default_rng(7)
    for shape in [(256, 64), (3, 5), (1,), (4, 4), (7, 3), (2, 1)]:
        want = plain.random(shape, dtype=F32) >= p
        got = nn._float32_uniform_at_least(ours, shape, p)
        assert np.array_equal(got, want) and ours.bit_generator.state == plain.bit_generator.state
    assert ours.random() == plain.random()


def test_inits_scale_and_dtype():
    rng = np.random.default_rng(0)
    W = INITS["he"](rng, 400, 300, F32)
    assert W.dtype == F32 and W.shape == (400, 300)
    assert W.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    limit = np.sqrt(6 / 700)
    for name in ("xavier", "glorot"):
        W = INITS[name](rng, 400, 300, F32)
        assert W.dtype == F32 and np.abs(W).max() <= limit
        assert W.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)  # uniform's std
        assert abs(W.mean()) < 0.01 * limit


# --- softmax and losses ------------------------------------------------------------------------


def test_softmax_matches_reference_and_survives_huge_logits():
    z = np.random.default_rng(0).standard_normal((6, 5)) * 4
    np.testing.assert_allclose(softmax(z), ref_softmax(z), rtol=1e-12)
    p = softmax(np.array([[1e4, 0, -1e4], [5e3, 5e3, 0]], dtype=F32))
    assert p.dtype == F32 and np.isfinite(p).all()
    np.testing.assert_allclose(p, [[1, 0, 0], [0.5, 0.5, 0]])


def test_cross_entropy_matches_direct_computation():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 4)) * 3
    y = rng.integers(0, 4, size=7)
    loss, d = cross_entropy(z.copy(), y)
    p = ref_softmax(z)
    assert loss == pytest.approx(np.mean(-np.log(p[np.arange(7), y])), rel=1e-12)
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(d, (p - onehot) / 7, atol=1e-15)
    assert LOSSES["cross_entropy"] is cross_entropy


def test_cross_entropy_with_huge_logits():
    z = np.array([[1e4, 0, -1e4], [1e4, 0, -1e4], [-2e4, 3e4, 3e4]], dtype=F32)
    y = np.array([0, 1, 1])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, no log(0)
        loss, d = cross_entropy(z, y)
    # -log p: 0 for a confident right answer, 1e4 for a confident wrong one, log 2 for a tie
    assert loss == pytest.approx((0 + 1e4 + np.log(2)) / 3, rel=1e-6)
    assert d.dtype == F32 and np.isfinite(d).all()
    np.testing.assert_allclose(d, np.array([[0, 0, 0], [1, -1, 0], [0, -0.5, 0.5]]) / 3, atol=1e-7)


def test_mse_value_and_full_jacobian_gradient():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, size=5)
    loss, d = mse(z.copy(), y)
    p = ref_softmax(z)
    diff = p - np.eye(4)[y]
    assert loss == pytest.approx(np.mean(np.sum(diff ** 2, axis=1)), rel=1e-12)
    # dL/dz = J^T dL/dp with the full softmax Jacobian J = diag(p) - p p^T, sample by sample.
    expected = np.stack([(np.diag(p[b]) - np.outer(p[b], p[b])).T @ (2 * diff[b] / 5) for b in range(5)])
    np.testing.assert_allclose(d, expected, atol=1e-15)
    diagonal_only = 2 * diff / 5 * p * (1 - p)
    assert not np.allclose(d, diagonal_only, atol=1e-4)  # the classic mistake differs


def test_mse_gradient_by_finite_differences():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 4))
    y = np.array([2, 0, 3])
    _, d = mse(z.copy(), y)
    num = np.zeros_like(z)
    eps = 1e-6
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        num[idx] = (mse(zp, y)[0] - mse(zm, y)[0]) / (2 * eps)
    np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-9)


def test_losses_keep_float32():
    z = np.random.default_rng(0).standard_normal((8, 5)).astype(F32)
    y = np.arange(8) % 5
    for name, fn in LOSSES.items():
        loss, d = fn(z, y)
        assert isinstance(loss, float) and d.dtype == F32, name


# --- the MLP -----------------------------------------------------------------------------------


def test_mlp_structure_and_aligned_lists():
    m = MLP([6, 5, 4, 3], activation="tanh", dropout=0.2)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == ["Dense", "Tanh", "Dropout", "Dense", "Tanh", "Dropout", "Dense"]
    shapes = [p.shape for p in m.parameters()]
    assert shapes == [(6, 5), (5,), (5, 4), (4,), (4, 3), (3,)]
    assert [g.shape for g in m.gradients()] == shapes
    assert all(a is b for a, b in zip(m.parameters(), m.parameters()))  # same arrays every time
    assert list(m.state_dict()) == ["dense0.W", "dense0.b", "dense1.W", "dense1.b", "dense2.W", "dense2.b"]
    assert [type(layer).__name__ for layer in MLP([4, 3], activation="relu").layers] == ["Dense"]


def test_mlp_backward_fills_gradients_in_place_and_skips_first_dx():
    rng = np.random.default_rng(0)
    m = MLP([6, 5, 3], dtype=np.float64)
    grads = m.gradients()
    x = rng.standard_normal((4, 6))
    _, d = cross_entropy(m.forward(x, train=True), np.array([0, 1, 2, 0]))
    assert m.backward(d) is None
    assert all(g is h for g, h in zip(grads, m.gradients()))
    # Manual backprop for the 6-5-3 ReLU net, independent of the layer code.
    W0, b0, W1, _ = m.parameters()
    h = x @ W0 + b0
    a = np.maximum(h, 0)
    dW1 = a.T @ d
    dh = (d @ W1.T) * (h > 0)
    np.testing.assert_allclose(grads[2], dW1, rtol=1e-12)
    np.testing.assert_allclose(grads[3], d.sum(0), rtol=1e-12)
    np.testing.assert_allclose(grads[0], x.T @ dh, rtol=1e-12)
    np.testing.assert_allclose(grads[1], dh.sum(0), rtol=1e-12)
    np.testing.assert_allclose(m.backward(d, input_grad=True), dh @ W0.T, rtol=1e-12)
    assert m.backward(d) is None  # input_grad is per call


def test_float32_end_to_end():
    rng = np.random.default_rng(0)
    x = to_float(rng.integers(0, 256, size=(16, 8, 8), dtype=np.uint8))
    y = rng.integers(0, 4, size=16)
    for act in ACTIVATIONS:
        for opt_name in ("sgd", "momentum", "nesterov", "adam"):
            m = MLP([64, 12, 4], activation=act, dropout=0.3, seed=1)
            opt = make_optimizer(opt_name, m.parameters(), lr=0.05, weight_decay=1e-3)
            for loss in LOSSES:
                train_step(m, opt, loss, x, y, lr=np.float64(0.01), clip_norm=0.5)
            assert m.forward(x, train=True).dtype == F32
            assert all(p.dtype == F32 for p in m.parameters()), (act, opt_name)
            assert all(g.dtype == F32 for g in m.gradients()), (act, opt_name)
            assert m.predict_proba(x).dtype == F32
            assert all(np.isfinite(p).all() for p in m.parameters())


def test_float64_input_does_not_promote_a_float32_model():
    m = MLP([5, 4, 3])
    out = m.forward(np.ones((2, 5)), train=True)  # float64 ones
    assert out.dtype == F32
    m.backward(cross_entropy(out, np.array([0, 1]))[1])
    assert all(g.dtype == F32 for g in m.gradients())


def test_float64_model_works():
    m = MLP([5, 4, 3], dtype=np.float64)
    out = m.forward(np.ones((2, 5)))
    assert out.dtype == np.float64 and all(p.dtype == np.float64 for p in m.parameters())


def test_same_seed_same_training_different_seed_differs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 10)).astype(F32)
    y = rng.integers(0, 3, size=32)

    def run(seed):
        m = MLP([10, 8, 3], dropout=0.5, seed=seed)
        opt = make_optimizer("adam", m.parameters(), lr=0.01)
        losses = [train_step(m, opt, "cross_entropy", x, y)[0] for _ in range(5)]
        return losses, m.state_dict()

    (l1, s1), (l2, s2), (l3, s3) = run(7), run(7), run(8)
    assert l3 != l1  # another seed, another run
    assert l1 == l2
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert not np.array_equal(s1["dense0.W"], s3["dense0.W"])


def test_dropout_does_not_change_initial_weights():
    a, b = MLP([10, 8, 3], seed=3).state_dict(), MLP([10, 8, 3], dropout=0.5, seed=3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_state_dict_round_trip_through_npz(tmp_path):
    m = MLP([12, 6, 3], seed=1)
    x = np.random.default_rng(0).standard_normal((4, 12)).astype(F32)
    np.savez(tmp_path / "w.npz", **m.state_dict())
    other = MLP([12, 6, 3], seed=2)
    params_before = other.parameters()
    with np.load(tmp_path / "w.npz", allow_pickle=False) as f:
        other.load_state_dict(dict(f))
    np.testing.assert_array_equal(other.forward(x), m.forward(x))
    assert all(a is b for a, b in zip(params_before, other.parameters()))  # loaded in place
    sd = m.state_dict()
    sd["dense0.W"][:] = 0  # a copy: the model is unaffected
    assert np.any(m.parameters()[0] != 0)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("dense1.b"), "missing"),
    (lambda d: d.update(extra=np.zeros(3)), "unexpected"),
    (lambda d: d.update({"dense0.W": np.zeros((6, 12), F32)}), "shape"),
])
def test_load_state_dict_rejects_mismatches(change, message):
    m = MLP([12, 6, 3])
    d = m.state_dict()
    change(d)
    with pytest.raises(DoodleError, match=message):
        m.load_state_dict(d)


def test_predict_proba_batched_eval_mode_and_uint8():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    m = MLP([784, 16, 5], dropout=0.5, seed=0)
    p = m.predict_proba(imgs, batch_size=3)
    assert p.shape == (10, 5) and p.dtype == F32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    expected = ref_softmax(m.forward(to_float(imgs), train=False))  # no dropout at prediction
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    # BLAS may round differently for another batch size, hence allclose and not equality.
    np.testing.assert_allclose(m.predict_proba(imgs.reshape(10, 784)), p, rtol=1e-6)
    np.testing.assert_allclose(m.predict_proba(to_float(imgs)), p, rtol=1e-6)
    assert m.predict_proba(imgs[:0]).shape == (0, 5)


def test_to_float():
    x = np.array([[[0, 255], [128, 1]]], dtype=np.uint8)
    out = to_float(x)
    assert out.dtype == F32 and out.shape == (1, 4) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.array([[0, 255, 128, 1]], dtype=F32) / F32(255))
    assert out[0, 1] == 1.0
    with pytest.raises(DoodleError, match="uint8"):
        to_float(out)
    with pytest.raises(DoodleError, match="batch"):
        to_float(x[0, 0])  # one row, not a batch


def test_train_step_reports_loss_and_correct_count():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 5)).astype(F32)
    y = rng.integers(0, 3, size=20)
    m = MLP([5, 7, 3], seed=0)
    logits = m.forward(x, train=True)
    expected_loss = cross_entropy(logits, y)[0]
    expected_correct = int(np.sum(np.argmax(logits, axis=1) == y))
    before = [p.copy() for p in m.parameters()]
    loss, correct = train_step(m, make_optimizer("sgd", m.parameters(), lr=0.1), "cross_entropy", x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert correct == expected_correct and isinstance(correct, int)
    assert all(not np.array_equal(a, b) for a, b in zip(before, m.parameters()))


def test_train_step_clips_the_update():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5)).astype(F32) * 10
    y = rng.integers(0, 3, size=8)
    m = MLP([5, 7, 3], seed=0)
    before = [p.copy() for p in m.parameters()]
    train_step(m, SGD(m.parameters(), lr=1.0), "cross_entropy", x, y, clip_norm=0.01)
    step = np.sqrt(sum(np.sum((p - b).astype(np.float64) ** 2) for p, b in zip(m.parameters(), before)))
    assert step == pytest.approx(0.01, rel=1e-3)  # plain SGD lr 1: the update is the clipped gradient


def test_unknown_names_are_user_errors():
    with pytest.raises(DoodleError, match="activation"):
        MLP([4, 3, 2], activation="swish")
    with pytest.raises(DoodleError, match="init"):
        MLP([4, 3, 2], init="zeros")
    with pytest.raises(DoodleError, match="layer_sizes"):
        MLP([4])
    with pytest.raises(DoodleError, match="layer_sizes"):
        MLP([4, 0, 2])
    m = MLP([4, 2])
    with pytest.raises(DoodleError, match="loss"):
        train_step(m, SGD(m.parameters(), lr=0.1), "hinge", np.zeros((1, 4), F32), np.array([0]))


@pytest.mark.parametrize("opt_name, kwargs", [("adam", {"lr": 0.01}), ("nesterov", {"lr": 0.1})])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_learns_separable_blobs(opt_name, kwargs, loss):
    rng = np.random.default_rng(0)
    centers = np.array([[0, 4], [4, -2], [-4, -2]], dtype=F32)
    y = rng.integers(0, 3, size=300)
    x = (centers[y] + rng.standard_normal((300, 2))).astype(F32)
    m = MLP([2, 32, 3], seed=0)
    opt = make_optimizer(opt_name, m.parameters(), **kwargs)
    first, _ = train_step(m, opt, loss, x, y)
    for _ in range(150):
        last, correct = train_step(m, opt, loss, x, y)
    assert last < first / 10
    assert correct >= 0.97 * 300


# --- test-time augmentation ----------------------------------------------------------------------


def test_image_views_shift_and_mirror():
    img = np.arange(9, dtype=F32).reshape(1, 9)  # [[0 1 2] [3 4 5] [6 7 8]]
    assert shift_images(img, 1, 0).reshape(3, 3).tolist() == [[0, 0, 0], [0, 1, 2], [3, 4, 5]]
    assert shift_images(img, 0, -1).reshape(3, 3).tolist() == [[1, 2, 0], [4, 5, 0], [7, 8, 0]]
    assert mirror_images(img).reshape(3, 3).tolist() == [[2, 1, 0], [5, 4, 3], [8, 7, 6]]
    assert img.reshape(3, 3)[0].tolist() == [0, 1, 2]  # the input is left alone
    with pytest.raises(DoodleError, match="square images"):
        mirror_images(np.zeros((1, 8), F32))


def view_by_hand(x: np.ndarray, mirrored: bool, dy: int, dx: int) -> np.ndarray:
    """(N, 36) flattened 6x6 images, mirrored left to right if asked, then moved dy rows down and dx columns
    right with zeros coming in."""
    v = x.reshape(-1, 6, 6)[:, :, ::-1] if mirrored else x.reshape(-1, 6, 6)
    out = np.zeros_like(v)
    out[:, max(dy, 0):6 + min(dy, 0), max(dx, 0):6 + min(dx, 0)] = \
        v[:, max(-dy, 0):6 + min(-dy, 0), max(-dx, 0):6 + min(-dx, 0)]
    return out.reshape(-1, 36)


@pytest.mark.parametrize("tta", sorted(set(TTA) - {"none"}))
def test_tta_averages_the_logits_of_every_view(tta):
    rng = np.random.default_rng(7)
    imgs = rng.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    m = MLP([36, 8, 3], seed=0, tta=tta)
    views = [m.forward(view_by_hand(to_float(imgs), *view)) for view in TTA[tta]]
    np.testing.assert_allclose(m.predict_logits(imgs, batch_size=2), np.mean(views, axis=0), rtol=1e-5, atol=1e-6)
    plain = MLP([36, 8, 3], seed=0)
    assert not np.allclose(plain.predict_logits(imgs), m.predict_logits(imgs))  # the views do matter
    assert len(TTA[tta]) > 1 and TTA[tta][0] == (False, 0, 0)  # the image itself is always one view
    with pytest.raises(DoodleError, match="unknown tta"):
        MLP([36, 3], tta="rotate")


@pytest.mark.parametrize("batch_size", [4096, 100])
@pytest.mark.parametrize("tta", sorted(set(TTA) - {"none"}))
def test_tta_averages_each_drawings_own_views_in_a_real_batch(tta, batch_size):
    # 37 distinct drawings (odd, so no reshape of (views, drawings) can pass for another); batch_size 100
    # also splits them unevenly (10 views: 10 + 10 + 10 + 7 drawings a pass). Each drawing's views are
    # computed one drawing at a time, so averaging over the wrong axis shows. (With the batches of one
    # drawing the test above makes, it cannot: that survived mutation testing.)
    rng = np.random.default_rng(11)
    imgs = rng.integers(0, 256, size=(37, 6, 6), dtype=np.uint8)
    m = MLP([36, 8, 3], seed=0, tta=tta)
    x = to_float(imgs)
    expected = [np.mean([m.forward(view_by_hand(x[i:i + 1], *view))[0] for view in TTA[tta]], axis=0)
                for i in range(len(x))]
    got = m.predict_logits(imgs, batch_size=batch_size)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(got, axis=0).min() > 1e-3  # the drawings' logits really differ


# --- batch norm ------------------------------------------------------------------------------------


def test_batch_norm_standardises_with_the_batch_then_predicts_with_running_statistics():
    rng = np.random.default_rng(8)
    bn = BatchNorm(3, momentum=0.9, dtype=np.float64)
    bn.params["gain"][:] = [1.0, 2.0, 0.5]
    bn.params["bias"][:] = [0.0, -1.0, 3.0]
    x = rng.normal([5.0, -2.0, 0.0], [2.0, 0.1, 10.0], size=(64, 3))
    out = bn.forward(x, train=True)
    np.testing.assert_allclose(out.mean(axis=0), bn.params["bias"], atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), bn.params["gain"] * np.sqrt(x.var(axis=0) / (x.var(axis=0) + 1e-5)))
    # running averages: 0.9 * old + 0.1 * batch, with the unbiased variance
    np.testing.assert_allclose(bn.buffers["mean"], 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn.buffers["var"], 0.9 + 0.1 * x.var(axis=0, ddof=1))
    # evaluation uses them: one sample's output no longer depends on the rest of its batch
    one = bn.forward(x[:1], train=False)
    np.testing.assert_allclose(bn.forward(x, train=False)[:1], one)
    expected = (x[:1] - bn.buffers["mean"]) / np.sqrt(bn.buffers["var"] + 1e-5) * bn.params["gain"] + bn.params["bias"]
    np.testing.assert_allclose(one, expected)
    assert bn.forward(x.astype(F32), train=True).dtype == np.float64  # the layer's arrays set the dtype
    f32 = BatchNorm(3)
    assert f32.forward(x.astype(F32), train=True).dtype == F32 and f32.buffers["var"].dtype == F32


def test_mlp_with_batch_norm_structure_state_and_tracking():
    m = MLP([6, 5, 4, 3], norm="batch", dropout=0.2)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == ["Dense", "BatchNorm", "ReLU", "Dropout", "Dense", "BatchNorm", "ReLU", "Dropout", "Dense"]
    # a hidden Dense before batch norm has no bias: the norm's shift is the layer's bias
    assert m.param_names == ["dense0.W", "norm0.gain", "norm0.bias", "dense1.W", "norm1.gain", "norm1.bias",
                             "dense2.W", "dense2.b"]
    assert [p.shape for p in m.parameters()] == [(6, 5), (5,), (5,), (5, 4), (4,), (4,), (4, 3), (3,)]
    assert list(m.state_dict()) == [*m.param_names, "norm0.mean", "norm0.var", "norm1.mean", "norm1.var"]
    assert m.flat_params.size == sum(p.size for p in m.parameters())
    # the first layers' weights are drawn as without batch norm: switching it on changes nothing else
    np.testing.assert_array_equal(m.parameters()[0], MLP([6, 5, 4, 3], dropout=0.2).parameters()[0])
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(F32)
    m.forward(x, train=True)
    assert not np.allclose(m.buffers()["norm0.mean"], 0)  # training moved the running mean
    other = MLP([6, 5, 4, 3], norm="batch", seed=5)
    other.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(other.predict_logits(x), m.predict_logits(x))  # the buffers came along
    with pytest.raises(DoodleError, match="unknown norm"):
        MLP([6, 3], norm="layer")


# --- one description: the spec, the shapes on disk, the registries --------------------------------


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_weight_shapes_are_the_state_dict_without_allocating(norm, dropout):
    spec = ModelSpec((12, 8, 6, 4), activation="tanh", norm=norm, dropout=dropout)
    m = MLP.from_spec(spec, seed=1)
    assert spec.weight_shapes() == {k: v.shape for k, v in m.state_dict().items()}
    assert [layer.name for layer in m.layers] == [name for name, _, _ in spec.plan()]
    huge = ModelSpec((784, 10 ** 6, 10 ** 6, 345))  # 4 TB of weights: described, never allocated
    assert huge.weight_shapes()["dense1.W"] == (10 ** 6, 10 ** 6)


def test_a_network_to_load_into_draws_no_weights_and_takes_a_trained_ones_state():
    spec = ModelSpec((12, 8, 4), norm="batch")
    trained = MLP.from_spec(spec, seed=3)
    empty = MLP.from_spec(spec, initialise=False)
    assert empty.dropout_rng is None and not any(layer.params["W"].any() for layer in empty.dense)
    empty.load_state_dict(trained.state_dict())
    x = np.random.default_rng(0).random((5, 12), dtype=np.float32)
    np.testing.assert_array_equal(empty.forward(x), trained.forward(x))


def test_spec_round_trips_through_model_metadata_and_config():
    spec = ModelSpec((784, 32, 5), activation="leaky_relu", norm="batch", tta="flip")
    assert ModelSpec.from_meta(spec.to_meta()) == spec
    cfg = {"data": {"image_size": 28}, "model": {"hidden": [32], "activation": "leaky_relu", "norm": "batch",
                                                 "dropout": 0.2, "init": "glorot", "tta": "flip"}}
    assert ModelSpec.from_config(cfg, 5) == ModelSpec((784, 32, 5), "leaky_relu", "batch", 0.2, "glorot", "flip")
    with pytest.raises(DoodleError, match="unknown activation 'swish'"):
        ModelSpec((4, 2), activation="swish")


def test_a_network_too_big_for_the_machine_is_refused_before_allocation(monkeypatch):
    import doodle.nn as nn_mod

    monkeypatch.setattr(nn_mod, "available_memory", lambda: 8 * 2 ** 30)
    spec = ModelSpec((784, 100_000, 100_000, 10))
    with pytest.raises(DoodleError, match=r"model.hidden: the 784-100000-100000-10 network needs about 2\d\d\.\d GiB"):
        spec.check_fits(batch=256)
    ModelSpec((784, 512, 256, 10)).check_fits(batch=256)  # a real one fits


def test_config_choices_come_from_the_registries_they_gate():
    from doodle.config import SCHEMA
    from doodle.nn import BACKPROP, NORMS
    from doodle.optim import OPTIMIZERS, SCHEDULES

    gated = {("model", "activation"): ACTIVATIONS, ("model", "init"): INITS, ("model", "norm"): NORMS,
             ("model", "tta"): TTA, ("train", "loss"): LOSSES, ("train", "optimizer"): OPTIMIZERS,
             ("train", "schedule"): SCHEDULES, ("train", "backprop"): BACKPROP}
    for (section, key), registry in gated.items():
        check = SCHEMA[section][key].check
        assert all(check(name) is None for name in registry), (section, key)
        assert check("not-a-" + key) is not None, (section, key)
        assert f"must be one of {', '.join(registry)}" in check("not-a-" + key), (section, key)
