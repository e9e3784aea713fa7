"""Optimizer update rules against hand-computed steps; schedules, clipping, state round-trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from doodle.errors import DoodleError
from doodle.optim import OPTIMIZERS, SCHEDULES, SGD, Adam, clip_grad_norm, make_optimizer, make_schedule

F32 = np.float32


def params64():
    """A weight matrix (decayed) and a bias (never decayed), float64 for exact comparisons."""
    return [np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([0.25, -0.75])]


GRADS = [  # three steps of gradients for params64()
    [np.array([[0.1, -0.2], [0.3, 0.0]]), np.array([1.0, -0.5])],
    [np.array([[-0.4, 0.1], [0.2, 0.5]]), np.array([0.5, 0.5])],
    [np.array([[0.3, 0.3], [-0.1, -0.2]]), np.array([-1.0, 2.0])],
]


def run(opt, steps=3):
    for grads in GRADS[:steps]:
        opt.step([g.copy() for g in grads])
    return opt.params


def test_sgd_plain():
    p = run(SGD(params64(), lr=0.1))
    for k in range(2):
        expected = params64()[k] - 0.1 * sum(g[k] for g in GRADS)
        np.testing.assert_allclose(p[k], expected, rtol=1e-14)


def test_sgd_momentum_by_hand():
    mu, lr = 0.9, 0.1
    p = run(SGD(params64(), lr=lr, momentum=mu))
    for k in range(2):
        w, v = params64()[k], 0.0
        for grads in GRADS:
            v = mu * v - lr * grads[k]
            w = w + v
        np.testing.assert_allclose(p[k], w, rtol=1e-14)
    # the first entry, written out: v1 = -0.01, v2 = -0.009 + 0.04, v3 = 0.9*0.031 - 0.03
    assert p[0][0, 0] == pytest.approx(1.0 - 0.01 + 0.031 + (0.9 * 0.031 - 0.03), rel=1e-14)


def test_sgd_nesterov_by_hand():
    mu, lr = 0.9, 0.1
    p = run(SGD(params64(), lr=lr, momentum=mu, nesterov=True))
    for k in range(2):
        w, v = params64()[k], 0.0
        for grads in GRADS:
            v_prev = v
            v = mu * v - lr * grads[k]
            w = w - mu * v_prev + (1 + mu) * v  # CS231n's form of Nesterov momentum
        np.testing.assert_allclose(p[k], w, rtol=1e-13)


def test_adam_three_steps_with_bias_correction():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p = run(Adam(params64(), lr=lr, beta1=b1, beta2=b2, eps=eps))
    for k in range(2):
        w, m, v = params64()[k], 0.0, 0.0
        for t, grads in enumerate(GRADS, start=1):
            g = grads[k]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            w = w - lr * mhat / (np.sqrt(vhat) + eps)
        np.testing.assert_allclose(p[k], w, rtol=1e-12)


def test_adam_first_step_is_lr_times_sign_for_every_parameter():
    # With bias correction at t=1, mhat = g and vhat = g^2, so each entry moves by ~lr. A step counter
    # bumped per parameter (tinygrad's early bug) would give later parameters a different size.
    params = [np.ones((3, 2)), np.ones(2), np.ones((2, 2)), np.ones(4)]
    grads = [np.full_like(q, s) for q, s in zip(params, (0.5, -3.0, 1e-3, 7.0))]
    opt = Adam(params, lr=0.01)
    opt.step(grads)
    for q, g in zip(params, grads):
        np.testing.assert_allclose(q, 1 - 0.01 * np.sign(g), rtol=1e-6)
    assert opt.t == 1
    opt.step(grads)
    opt.step(grads)
    assert opt.t == 3 and opt.state_dict()["step"] == 3


def test_sgd_weight_decay_is_l2_on_weights_only():
    lr, wd = 0.1, 0.01
    p = run(SGD(params64(), lr=lr, weight_decay=wd), steps=1)
    w0, b0 = params64()
    np.testing.assert_allclose(p[0], w0 - lr * (GRADS[0][0] + wd * w0), rtol=1e-14)
    np.testing.assert_allclose(p[1], b0 - lr * GRADS[0][1], rtol=1e-14)  # bias untouched by decay


def test_momentum_weight_decay_enters_the_velocity():
    lr, wd, mu = 0.1, 0.05, 0.9
    p = run(SGD(params64(), lr=lr, momentum=mu, weight_decay=wd), steps=2)
    w, v = params64()[0], 0.0
    for grads in GRADS[:2]:
        v = mu * v - lr * (grads[0] + wd * w)
        w = w + v
    np.testing.assert_allclose(p[0], w, rtol=1e-14)


def test_adam_weight_decay_is_decoupled_on_weights_only():
    lr, wd = 0.01, 0.1
    p = run(Adam(params64(), lr=lr, weight_decay=wd), steps=1)
    w0, b0 = params64()
    g, gb = GRADS[0]
    adam_step = lr * g / (np.abs(g) + 1e-8)  # first step: mhat/sqrt(vhat) = sign(g)
    np.testing.assert_allclose(p[0], w0 * (1 - lr * wd) - adam_step, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p[1], b0 - lr * gb / (np.abs(gb) + 1e-8), rtol=1e-12)


@pytest.mark.parametrize("flat", [False, True], ids=["array by array", "flat buffers"])
@pytest.mark.parametrize("lr", [0.5, 0.001])
def test_adam_weight_decay_scales_with_the_rate_passed_to_step(lr, flat):
    # The schedule hands each step its rate; a decay at the base rate (0.01 here) survived mutation testing,
    # because every other test steps at the base rate.
    wd = 0.1
    params = params64()
    flat_p, params = tiled(params) if flat else (None, params)
    flat_g, grads = tiled([g.copy() for g in GRADS[0]]) if flat else (None, [g.copy() for g in GRADS[0]])
    opt = Adam(params, lr=0.01, weight_decay=wd, flat=(flat_p, flat_g) if flat else None)
    opt.step(None if flat else grads, lr=lr)
    (w0, b0), (g, gb) = params64(), GRADS[0]
    np.testing.assert_allclose(params[0], w0 * (1 - lr * wd) - lr * g / (np.abs(g) + 1e-8), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(params[1], b0 - lr * gb / (np.abs(gb) + 1e-8), rtol=1e-12)  # biases: never decayed


def test_step_lr_override_and_grads_untouched():
    grads = [g.copy() for g in GRADS[0]]
    opt = SGD(params64(), lr=0.1, weight_decay=0.5)
    opt.step(grads, lr=1.0)
    w0 = params64()[0]
    np.testing.assert_allclose(opt.params[0], w0 - 1.0 * (GRADS[0][0] + 0.5 * w0), rtol=1e-14)
    for g, orig in zip(grads, GRADS[0]):
        np.testing.assert_array_equal(g, orig)
    assert opt.lr == 0.1


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_preserved_and_in_place(name):
    params = [p.astype(F32) for p in params64()]
    ids = [id(p) for p in params]
    opt = make_optimizer(name, params, lr=0.01, weight_decay=1e-2)
    for grads in GRADS:
        opt.step([g.astype(F32) for g in grads], lr=np.float64(0.02))  # even a float64 lr
    assert [id(p) for p in opt.params] == ids
    assert all(p.dtype == F32 for p in params)
    assert all(a.dtype == F32 for k, a in opt.state_dict().items() if k != "step")
    # and the float32 result agrees with the float64 run of the same optimizer
    ref = make_optimizer(name, params64(), lr=0.01, weight_decay=1e-2)
    for grads in GRADS:
        ref.step([g.copy() for g in grads], lr=0.02)
    for a, b in zip(params, ref.params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip(name, tmp_path):
    a = make_optimizer(name, params64(), lr=0.05)
    run(a, steps=2)
    np.savez(tmp_path / "opt.npz", **a.state_dict())
    b = make_optimizer(name, [p.copy() for p in a.params], lr=0.05)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        b.load_state_dict(dict(f))
    assert b.t == 2
    a.step([g.copy() for g in GRADS[2]])
    b.step([g.copy() for g in GRADS[2]])
    for x, y in zip(a.params, b.params):
        np.testing.assert_array_equal(x, y)


def test_state_dict_names_and_mismatches():
    opt = Adam(params64())
    assert sorted(opt.state_dict()) == ["m.0", "m.1", "step", "v.0", "v.1"]
    assert sorted(SGD(params64(), momentum=0.5).state_dict()) == ["step", "v.0", "v.1"]
    with pytest.raises(DoodleError, match="missing"):
        opt.load_state_dict(SGD(params64(), momentum=0.5).state_dict())
    bad = opt.state_dict()
    bad["m.0"] = np.zeros((3, 3))
    with pytest.raises(DoodleError, match="shape"):
        opt.load_state_dict(bad)


def test_make_optimizer_names_defaults_and_errors():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adam"}
    o = make_optimizer("momentum", params64(), lr=0.1)
    assert isinstance(o, SGD) and o.momentum == 0.9 and not o.nesterov
    o = make_optimizer("nesterov", params64(), lr=0.1, momentum=0.8)
    assert o.nesterov and o.momentum == 0.8
    assert make_optimizer("sgd", params64()).momentum == 0.0
    assert isinstance(make_optimizer("adam", params64(), beta1=0.8), Adam)
    with pytest.raises(DoodleError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", params64())
    with pytest.raises(DoodleError, match="unknown option.*beta1.*'sgd'"):
        make_optimizer("sgd", params64(), beta1=0.9)
    for bad in ({"lr": -1}, {"lr": "fast"}, {"momentum": 1.5}, {"weight_decay": -0.1}):
        with pytest.raises(DoodleError):
            make_optimizer("momentum", params64(), **bad)
    with pytest.raises(DoodleError, match="nesterov"):
        make_optimizer("sgd", params64(), nesterov=True)


# --- schedules ---------------------------------------------------------------------------------


def test_constant_schedule_with_warmup():
    lr = make_schedule("constant", 0.1, total_steps=100, warmup_steps=10)
    assert [lr(t) for t in (0, 4, 9)] == pytest.approx([0.01, 0.05, 0.1])  # linear from ~0
    assert lr(10) == lr(99) == 0.1
    assert make_schedule("constant", 0.1, 100)(0) == 0.1  # no warm-up: full rate at once


def test_step_schedule():
    lr = make_schedule("step", 1.0, total_steps=1000, step_size=100, gamma=0.5)
    assert [lr(t) for t in (0, 99, 100, 199, 250, 999)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.5 ** 9])
    warm = make_schedule("step", 1.0, total_steps=1000, warmup_steps=20, step_size=100, gamma=0.5)
    assert warm(19) == 1.0 and warm(119) == 1.0 and warm(120) == 0.5  # decay counts after the warm-up


def test_cosine_schedule_end_points():
    lr = make_schedule("cosine", 0.1, total_steps=100, min_lr=0.001)
    assert lr(0) == pytest.approx(0.1)
    assert lr(50) == pytest.approx((0.1 + 0.001) / 2)
    assert lr(25) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(100) == pytest.approx(0.001) and lr(500) == pytest.approx(0.001)
    values = [lr(t) for t in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises
    warm = make_schedule("cosine", 0.1, total_steps=110, warmup_steps=10)
    assert warm(0) == pytest.approx(0.01) and warm(9) == pytest.approx(0.1) and warm(10) == pytest.approx(0.1)
    assert warm(60) == pytest.approx(0.05) and warm(110) == pytest.approx(0.0, abs=1e-15)


def test_schedule_errors():
    assert set(SCHEDULES) == {"constant", "step", "cosine"}
    with pytest.raises(DoodleError, match="unknown schedule 'linear'"):
        make_schedule("linear", 0.1, 100)
    with pytest.raises(DoodleError, match="unknown option.*gamma.*'cosine'"):
        make_schedule("cosine", 0.1, 100, gamma=0.5)
    with pytest.raises(DoodleError, match="warmup_steps"):
        make_schedule("constant", 0.1, 100, warmup_steps=100)
    with pytest.raises(DoodleError, match="step_size"):
        make_schedule("step", 0.1, 100, step_size=0)
    with pytest.raises(DoodleError, match="min_lr"):
        make_schedule("cosine", 0.1, 100, min_lr=0.5)


# --- clipping ----------------------------------------------------------------------------------


def test_clip_grad_norm_scales_in_place():
    grads = [np.array([[3.0, 0.0], [0.0, 0.0]], dtype=F32), np.array([0.0, 4.0], dtype=F32)]
    ids = [id(g) for g in grads]
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert [id(g) for g in grads] == ids and all(g.dtype == F32 for g in grads)
    np.testing.assert_allclose(grads[0], [[0.6, 0], [0, 0]], rtol=1e-5)
    np.testing.assert_allclose(grads[1], [0, 0.8], rtol=1e-5)
    after = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert after == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_leaves_small_gradients_alone():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    before = [g.copy() for g in grads]
    norm = clip_grad_norm(grads, 100.0)
    assert norm == pytest.approx(math.sqrt(sum(np.sum(g ** 2) for g in before)), rel=1e-12)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)


# --- the flat fast path ------------------------------------------------------------------------


def tiled(arrays):
    """(flat buffer, copies of `arrays` as consecutive views of it): what MLP.flat_params and parameters() are."""
    flat = np.concatenate([a.ravel() for a in arrays])
    out, start = [], 0
    for a in arrays:
        out.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return flat, out


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_flat_path_matches_array_by_array(name, wd):
    flat_p, flat_params = tiled([p.astype(F32) for p in params64()])
    flat_g, grad_views = tiled([np.zeros_like(p) for p in flat_params])
    loose_params = [p.astype(F32) for p in params64()]
    a = make_optimizer(name, flat_params, flat=(flat_p, flat_g), lr=0.05, weight_decay=wd)
    b = make_optimizer(name, loose_params, lr=0.05, weight_decay=wd)
    assert a.flat is not None and b.flat is None  # the two paths really differ
    for grads in GRADS:
        for view, g in zip(grad_views, grads):
            view[...] = g
        a.step()  # reads the flat gradient buffer
        b.step([g.astype(F32) for g in grads])
    for x, y in zip(flat_params, loose_params):
        np.testing.assert_array_equal(x, y)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])


def test_flat_buffers_are_checked_and_gradients_are_required_without_them():
    flat_p, params = tiled(params64())
    with pytest.raises(ValueError, match="consecutive views"):
        SGD(params[::-1], lr=0.1, flat=(flat_p, np.zeros_like(flat_p)))
    with pytest.raises(ValueError, match="covers|cover"):
        SGD(params[:1], lr=0.1, flat=(flat_p, np.zeros_like(flat_p)))
    with pytest.raises(ValueError, match="flat buffers"):
        SGD(params64(), lr=0.1).step()
    opt = SGD(params, lr=0.1, flat=(flat_p, np.zeros_like(flat_p)))
    opt.step([g.copy() for g in GRADS[0]])  # explicit gradients still work, array by array
    np.testing.assert_allclose(params[0], params64()[0] - 0.1 * GRADS[0][0], rtol=1e-14)
