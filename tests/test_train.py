"""The training loop on small in-memory data: it learns, keeps the best epoch, is deterministic,
resumes, survives Ctrl-C and refuses to go on after a NaN loss."""

import json

import numpy as np
import pytest

from doodle.checkpoint import load_model
from doodle.config import load_config
from doodle.dataset import Dataset, split_indices
from doodle.errors import DoodleError
from doodle.progress import Reporter
from doodle.train import fit

CLASSES = ["circle", "square", "triangle"]


def blobs(n_per=120, size=8, seed=0) -> Dataset:
    """Each class lights a different quadrant pattern, plus noise: learnable but not trivial."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(len(CLASSES)):
        base = np.zeros((size, size))
        base[(c * size) // 3:(c * size) // 3 + 3, :] = 200
        noise = rng.normal(0, 60, (n_per, size, size))
        xs.append(np.clip(base + noise, 0, 255).astype(np.uint8))
        ys.append(np.full(n_per, c, np.int32))
    return Dataset(np.concatenate(xs), np.concatenate(ys), list(CLASSES), [n_per] * len(CLASSES))


def config(*extra):
    return load_config(None, ["data.categories=[circle, square, triangle]", "data.image_size=8",
                              "model.hidden=[16]", "train.epochs=4", "train.batch_size=32", "train.lr=0.01",
                              "model.dropout=0.0", *extra])


def test_learns_and_writes_a_complete_run(tmp_path):
    res = fit(config(), blobs(), tmp_path / "run")
    assert res.test_accuracy > 0.9 and res.val_accuracy > 0.9
    run = tmp_path / "run"
    for name in ("model.npz", "model.json", "config.yaml", "split.npz", "metrics.jsonl", "state.json"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["layer_sizes"] == [64, 16, 3]
    assert meta["metrics"]["test_accuracy"] == res.test_accuracy
    assert meta["raster"]["size"] == 8
    # the saved model is the best epoch and predicts like the in-memory one did
    model, _ = load_model(run)
    ds = blobs()
    test = split_indices(ds.counts, 0.1, 0.1, "random", 0)["test"]
    acc = np.mean(model.predict_proba(ds.x[test]).argmax(1) == ds.y[test])
    assert acc == pytest.approx(res.test_accuracy)


def test_best_epoch_is_kept(tmp_path):
    res = fit(config(), blobs(), tmp_path / "run")
    best = max(res.history, key=lambda h: h["val_accuracy"])
    assert res.best_epoch == best["epoch"]
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["metrics"]["best_epoch"] == best["epoch"]


def test_deterministic(tmp_path):
    a = fit(config("augment.shift=0.1"), blobs(), tmp_path / "a")
    b = fit(config("augment.shift=0.1"), blobs(), tmp_path / "b")
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    c = fit(config("train.seed=1"), blobs(), tmp_path / "c")
    assert strip(c.history) != strip(a.history)


def test_nan_loss_stops_with_advice(tmp_path, monkeypatch):
    import doodle.train

    real = doodle.train.make_step
    calls = []

    def exploding_step(*args, **kwargs):
        step = real(*args, **kwargs)

        def exploding(*a, **kw):
            loss, ok = step(*a, **kw)
            calls.append(loss)
            return (float("nan") if len(calls) > 15 else loss), ok
        return exploding

    monkeypatch.setattr(doodle.train, "make_step", exploding_step)
    with pytest.raises(DoodleError, match=r"loss became nan at epoch 2, batch 7.*lower train.lr \(now 0.01\)"):
        fit(config(), blobs(), tmp_path / "run")
    # the best epoch before the blow-up is still on disk
    assert load_model(tmp_path / "run")[1]["metrics"]["best_epoch"] == 1


def test_the_step_schedule_decays_every_step_epochs_epochs(tmp_path, monkeypatch):
    # The schedule counts in steps, the config in epochs: reading step_epochs (or warmup_epochs) as steps
    # survived mutation testing, since the resume test compares two runs that would be wrong the same way.
    import doodle.train

    real, lrs = doodle.train.make_step, []

    def spying_step(*args, **kwargs):
        step = real(*args, **kwargs)

        def spy(x, y, lr=None):
            lrs.append(lr)
            return step(x, y, lr)
        return spy

    monkeypatch.setattr(doodle.train, "make_step", spying_step)
    base, gamma, epochs = 0.05, 0.5, 6
    fit(config(f"train.epochs={epochs}", "train.schedule=step", "train.step_epochs=2", f"train.gamma={gamma}",
               "train.warmup_epochs=1", f"train.lr={base}"), blobs(), tmp_path / "run")
    steps = 288 // 32  # 96 training rows per class (120 less 10% validation, 10% test), 3 classes, batches of 32
    assert len(lrs) == epochs * steps
    by_epoch = [lrs[e * steps:(e + 1) * steps] for e in range(epochs)]
    assert by_epoch[0] == pytest.approx([base * (s + 1) / steps for s in range(steps)])  # one epoch of warm-up
    for epoch in range(2, epochs + 1):  # then the base rate for 2 epochs, halved every 2 epochs after that
        assert by_epoch[epoch - 1] == pytest.approx([base * gamma ** ((epoch - 2) // 2)] * steps), epoch
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([base, base, base, base / 2, base / 2, base / 4])


def test_resume_continues(tmp_path):
    run = tmp_path / "run"
    fit(config("train.epochs=2"), blobs(), run)
    res = fit(load_config(run / "config.yaml", ["train.epochs=4"]), blobs(), run, resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    with pytest.raises(DoodleError, match="already trained 4 epochs"):
        fit(load_config(run / "config.yaml", ["train.epochs=4"]), blobs(), run, resume=True)


def test_resume_refuses_changed_data(tmp_path):
    run = tmp_path / "run"
    fit(config("train.epochs=1"), blobs(), run)
    with pytest.raises(DoodleError, match="data changed"):
        fit(load_config(run / "config.yaml", ["train.epochs=3"]), blobs(n_per=100), run, resume=True)


class InterruptAt(Reporter):
    def __init__(self, epoch):
        self.at = epoch

    def epoch(self, row):
        if row["epoch"] == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_best_so_far(tmp_path):
    res = fit(config("train.epochs=10"), blobs(), tmp_path / "run", reporter=InterruptAt(2))
    assert res.interrupted and res.epochs == 2
    model, meta = load_model(tmp_path / "run")
    assert meta["metrics"]["best_epoch"] in (1, 2)


def test_early_stopping(tmp_path):
    res = fit(config("train.epochs=30", "train.patience=2", "train.lr=0.05"), blobs(), tmp_path / "run")
    assert res.epochs < 30
    # it stops exactly `patience` epochs after the last improvement, and none of those improved
    best = res.history[res.best_epoch - 1]["val_accuracy"]
    assert res.epochs == res.best_epoch + 2
    assert all(h["val_accuracy"] <= best for h in res.history[res.best_epoch:])
    assert all(h["val_accuracy"] < best for h in res.history[:res.best_epoch - 1])


def test_split_is_stratified_and_tail_holds_out_last_rows():
    s = split_indices([100, 40], 0.1, 0.25, "tail", 0)
    assert list(s["test"]) == list(range(75, 100)) + list(range(130, 140))
    assert len(s["val"]) == 10 + 4
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert sorted(allidx) == list(range(140))
    r1, r2 = split_indices([100, 40], 0.1, 0.1, "random", 3), split_indices([100, 40], 0.1, 0.1, "random", 3)
    assert all((r1[k] == r2[k]).all() for k in r1)


def test_corrupted_and_foreign_models_are_refused(tmp_path):
    run = tmp_path / "run"
    fit(config("train.epochs=1"), blobs(), run)
    (run / "model.npz").write_bytes(b"not a zip")
    with pytest.raises(DoodleError, match="corrupted model weights"):
        load_model(run)
    meta = json.loads((run / "model.json").read_text())
    meta["format_version"] = 99
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DoodleError, match="format version 99"):
        load_model(run)
    (run / "model.json").write_text("{")
    with pytest.raises(DoodleError, match="corrupted model metadata"):
        load_model(run)
    with pytest.raises(DoodleError, match="no such model"):
        load_model(tmp_path / "nothing")


def test_pickled_arrays_are_never_loaded(tmp_path):
    run = tmp_path / "run"
    fit(config("train.epochs=1"), blobs(), run)
    state = dict(np.load(run / "model.npz"))
    state["dense0.W"] = np.array([object()], dtype=object)
    with open(run / "model.npz", "wb") as fh:
        np.savez(fh, **state)
    with pytest.raises(DoodleError):
        load_model(run)


# --- training through the computational graph (train.backprop: graph) ----------------------------


@pytest.mark.parametrize("extra", [("augment.flip=0", "model.tta=none"),
                                   ("model.dropout=0.3", "augment.shift=0.1"),
                                   ("train.loss=mse", "model.activation=tanh", "train.optimizer=nesterov"),
                                   ("augment.flip=0.5", "model.tta=flip_shift", "model.norm=batch",
                                    "model.dropout=0.1")])
def test_graph_backprop_trains_the_same_run_in_float32(tmp_path, extra):
    a = fit(config(*extra), blobs(), tmp_path / "a")
    b = fit(config("train.backprop=graph", *extra), blobs(), tmp_path / "b")
    la = np.array([h["train_loss"] for h in a.history])
    lb = np.array([h["train_loss"] for h in b.history])
    # float32 round-off: the two paths sum the same terms in a different order (measured <= 1.2e-7 here)
    np.testing.assert_allclose(lb, la, rtol=1e-6)
    assert [h["val_accuracy"] for h in a.history] == [h["val_accuracy"] for h in b.history]
    assert (tmp_path / "b" / "model.npz").is_file() and load_model(tmp_path / "b")[1]["config"]["train"]["backprop"] \
        == "graph"


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_graph_and_manual_gradients_agree_step_by_step_in_float64(activation, loss, norm):
    from doodle.nn import BACKPROP, MLP
    from doodle.optim import make_optimizer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 20))
    y = rng.integers(0, 5, 64)
    models = [MLP([20, 16, 12, 5], activation=activation, dropout=0.25, seed=3, dtype=np.float64, norm=norm)
              for _ in range(2)]
    opts = [make_optimizer("adam", m.parameters(), flat=(m.flat_params, m.flat_grads), lr=0.01) for m in models]
    manual, graph = BACKPROP["manual"](models[0], loss), BACKPROP["graph"](models[1], loss)
    for step in range(8):
        (va, _), (vb, _) = manual(x, y), graph(x, y)
        assert vb == pytest.approx(va, rel=1e-13)
        for ga, gb in zip(models[0].gradients(), models[1].gradients()):
            # relative to the tensor's size: entries that nearly cancel carry 1e-16 of the sum's magnitude
            assert np.max(np.abs(ga - gb)) <= 1e-10 * np.max(np.abs(ga)), step
        for o in opts:
            o.step()
        for (name, a), b in zip(models[0].buffers().items(), models[1].buffers().values()):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15, err_msg=name)  # the graph path tracks them too
    if norm == "batch":
        assert not np.allclose(models[1].buffers()["norm0.var"], 1.0)


def test_unknown_backprop_is_a_user_error():
    from doodle.nn import MLP
    from doodle.optim import SGD
    from doodle.train import make_step

    model = MLP([4, 2])
    with pytest.raises(DoodleError, match="unknown backprop 'symbolic'"):
        make_step(model, SGD(model.parameters()), "cross_entropy", "symbolic")


def test_the_temperature_is_fitted_on_validation_and_kept_with_the_model(tmp_path):
    from doodle.metrics import confidence_threshold, expected_calibration_error, fit_temperature

    res = fit(config("train.epochs=6", "train.lr=0.05"), blobs(), tmp_path / "run")
    model, meta = load_model(tmp_path / "run")
    m = meta["metrics"]
    assert meta["temperature"] == model.temperature == m["temperature"] != 1.0
    # the same fit, redone independently on the run's validation rows
    ds = blobs()
    val = split_indices(ds.counts, 0.1, 0.1, "random", 0)["val"]
    assert model.temperature == pytest.approx(fit_temperature(model.predict_logits(ds.x[val]), ds.y[val]))
    assert m["val_ece"] == pytest.approx(expected_calibration_error(model.predict_proba(ds.x[val]), ds.y[val]))
    assert m["val_ece"] <= m["val_ece_raw"] + 1e-9
    assert m["confident_at"] == pytest.approx(confidence_threshold(model.predict_proba(ds.x[val]), ds.y[val]))
    # calibration rescales, it never reorders: top-1 is unchanged
    raw = model.predict_logits(ds.x).argmax(1)
    assert (model.predict_proba(ds.x).argmax(1) == raw).all() and res.test_accuracy is not None


class _Killed(BaseException):
    """Stands for kill -9 at one chosen moment: nothing after it runs, no handler cleans up."""


@pytest.mark.parametrize("moment", ["a best model mid-run", "the final model"])
def test_a_kill_between_the_epoch_commit_and_model_json_is_resumed(tmp_path, monkeypatch, moment):
    import doodle.train as train_module

    reference = fit(config(), blobs(), tmp_path / "reference")
    real, calls = train_module.save_model, []

    def dies(run_dir, model, meta):
        calls.append(meta["metrics"].get("epochs_run"))
        final = "epochs_run" in meta["metrics"]
        if (moment == "the final model" and final) or (moment != "the final model" and not final):
            raise _Killed
        return real(run_dir, model, meta)

    monkeypatch.setattr(train_module, "save_model", dies)
    with pytest.raises(_Killed):
        fit(config(), blobs(), tmp_path / "run")
    monkeypatch.setattr(train_module, "save_model", real)
    res = fit(config(), blobs(), tmp_path / "run", resume=True)
    assert res.test_accuracy == reference.test_accuracy and res.best_epoch == reference.best_epoch
    a, b = load_model(tmp_path / "run"), load_model(tmp_path / "reference")
    assert all(np.array_equal(a[0].state_dict()[k], b[0].state_dict()[k]) for k in a[0].state_dict())
    assert a[1]["metrics"]["epochs_run"] == 4
    with pytest.raises(DoodleError, match="already trained 4 epochs"):
        fit(config(), blobs(), tmp_path / "run", resume=True)  # now it is finished


def test_resume_says_what_a_changed_length_changes_and_refuses_other_changes(tmp_path):
    from doodle.progress import Reporter

    class Notes(Reporter):
        def __init__(self):
            self.lines = []

        def log(self, message):
            self.lines.append(message)

    run = tmp_path / "run"
    fit(config("train.epochs=2"), blobs(), run)
    with pytest.raises(DoodleError, match=r"train.lr \(0.01 -> 0.05\) changed; only train.epochs and "
                                          r"train.patience may change"):
        fit(load_config(run / "config.yaml", ["train.epochs=3", "train.lr=0.05"]), blobs(), run, resume=True)
    notes = Notes()
    fit(load_config(run / "config.yaml", ["train.epochs=3"]), blobs(), run, resume=True, reporter=notes)
    schedule = load_config(run / "config.yaml")["train"]["schedule"]
    assert any(line.startswith("train.epochs 2 -> 3: the " + schedule) for line in notes.lines), notes.lines
