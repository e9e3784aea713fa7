"""The essay's pictures for a real network: the computational graph of one drawing's loss, and the loss
along one weight with the tangent whose slope the backward pass found.

`doodle graph` calls `draw_loss_graph()`. The network is a trained run (`--model`) or the freshly initialised
network a config describes (`--config`); the drawing is an ndjson line or an image the user gives, or
else the run's first held-out test drawing. The loss needs a true class: the drawing's own `word`
when it has one the network knows, else `label`, else the network's own top guess (said so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doodle import autodiff, fsutil, graphdraw, slicedraw
from doodle.checkpoint import load_model, resolve_model_path
from doodle.config import class_names, load_config
from doodle.dataset import load_dataset, split_indices
from doodle.errors import DoodleError
from doodle.evaluate import test_split_bitmaps
from doodle.inputs import LabelledBitmaps, entries, readable
from doodle.nn import MLP, ModelSpec
from doodle.pixels import to_float
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import PADDING

FORMATS = ("svg", "dot")
SLICE_BATCH = 256  # drawings averaged in the one-weight picture's loss


@dataclass
class LossGraph:
    """What `doodle graph` made: the files, the terminal tree and the figures it shows."""

    out: str
    format: str
    network: str  # the run folder, or "<config> (untrained)"
    drawing: str  # where the drawing came from
    label: str  # the class the loss is measured against
    label_source: str  # "drawing", "--label" or "top guess"
    loss: float
    nodes: int
    tree: list[str] = field(default_factory=list)
    slice: dict | None = None  # {"weight", "value", "loss", "slope", "out", "step"} with --slice

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "tree"}


def parse_slice(text: str) -> tuple[int, int | None, int | None]:
    """'LAYER:ROW:COL' or 'LAYER' (the layer's steepest weight) -> (layer, row, col)."""
    parts = text.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 3) or any(n < 0 for n in nums):
        raise DoodleError(f"--slice {text}: expected LAYER:ROW:COL (e.g. 1:3:7) or LAYER for its steepest weight")
    return (nums[0], None, None) if len(nums) == 1 else (nums[0], nums[1], nums[2])


def _network(model_path, config_path, overrides, data_dir, reporter) -> tuple[MLP, dict, str, object]:
    """(model, meta, description, held-out bitmaps loader) for a trained run or a config's fresh network."""
    if config_path is None and not overrides:
        run = resolve_model_path(model_path)
        model, meta = load_model(run)
        return model, meta, str(run), lambda: test_split_bitmaps(run, meta, data_dir, reporter)
    if model_path is not None:
        raise DoodleError("give --model RUN or --config FILE, not both")
    cfg = load_config(config_path, overrides)
    d = cfg["data"]
    classes = class_names(cfg)
    spec = ModelSpec.from_config(cfg, len(classes))
    spec.check_fits(batch=SLICE_BATCH)
    model = MLP.from_spec(spec, seed=cfg["train"]["seed"])
    meta = {"classes": classes, **spec.to_meta(), "config": cfg,
            "raster": {"size": d["image_size"], "line_width": float(d["line_width"]), "padding": PADDING}}

    def held_out():
        ds = load_dataset(cfg, data_dir, reporter)
        idx = split_indices(ds.counts, d["val_fraction"], d["test_fraction"], d["test_split"], d["seed"])["test"]
        if len(idx) == 0:
            raise DoodleError(f"{config_path}: data.test_fraction is 0, so there is no test drawing; give DRAWING")
        return LabelledBitmaps(x=ds.x[idx], labels=[ds.classes[c] for c in ds.y[idx]], sources=["the test split"])

    return model, meta, f"{config_path or 'built-in defaults'} (untrained)", held_out


def _drawings(drawing: str | None, meta: dict, held_out) -> tuple[np.ndarray, list[str | None], str]:
    """(uint8 bitmaps (N, S, S), their words or None, a description); the first is the one drawn."""
    raster = meta["raster"]
    if drawing is None:
        data = held_out()
        return data.x[:SLICE_BATCH], list(data.labels[:SLICE_BATCH]), f"{data.sources[0]}, first drawing"
    # predict's own path: images, ndjson, .npy, folders
    good = readable(entries([drawing], raster, limit=SLICE_BATCH))
    return np.stack([bitmap for _, bitmap in good]), [e.word for e, _ in good], good[0][0].name


def draw_loss_graph(out: str | Path, model_path: str | Path | None = None, config_path: str | Path | None = None,
                    overrides: tuple[str, ...] = (), drawing: str | None = None, label: str | None = None,
                    fmt: str = "svg", slice_spec: str | None = None, data_dir: str | Path = "data",
                    reporter: Reporter = NULL_REPORTER) -> LossGraph:
    """Draw the loss graph of one drawing after a forward and a backward pass (and, with slice_spec, the loss
    along one weight); writes `out` (SVG or DOT) and `<out stem>.slice.svg`; returns what it made."""
    if fmt not in FORMATS:
        raise DoodleError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    where = parse_slice(slice_spec) if slice_spec else None
    model, meta, network, held_out = _network(model_path, config_path, overrides, data_dir, reporter)
    classes = meta["classes"]
    x_u8, words, source = _drawings(drawing, meta, held_out)
    x = to_float(x_u8)  # (N, S*S) float32, as the network reads it
    if x.shape[1] != model.layer_sizes[0]:
        raise DoodleError(f"the drawing is {x_u8.shape[1]}x{x_u8.shape[2]} but the network reads "
                          f"{model.layer_sizes[0]} pixels")
    loss_name = (meta.get("config") or {}).get("train", {}).get("loss", "cross_entropy")
    if words[0] is not None and words[0] in classes:
        truth, label_source = words[0], "drawing"
    elif label is not None:
        if label not in classes:
            raise DoodleError(f"--label {label!r}: the network knows {', '.join(classes[:8])}"
                              f"{'...' if len(classes) > 8 else ''}")
        truth, label_source = label, "--label"
    else:
        truth = classes[int(np.argmax(model.predict_logits(x[:1])[0]))]
        label_source = "top guess"
    y1 = np.array([classes.index(truth)])
    # Evaluation mode, as `doodle predict` runs the network: no dropout, and batch norm with the running
    # statistics (one drawing has no batch statistics to speak of).
    loss = model.loss_graph(x[:1], y1, loss_name, train=False)
    loss.backward(retain_graph=True)
    title = f"{loss_name} loss of one drawing, true class '{truth}'"
    out = Path(out)
    text = graphdraw.graph_svg(loss, title=title, mode="evaluation") if fmt == "svg" else graphdraw.graph_dot(loss)
    fsutil.write_text(out, text)
    result = LossGraph(out=str(out), format=fmt, network=network, drawing=source, label=truth,
                       label_source=label_source, loss=float(loss.value), nodes=len(autodiff.topological(loss)),
                       tree=graphdraw.graph_tree(loss))
    if where is not None:
        known = [i for i, w in enumerate(words) if w in classes] or [0]
        xb = x[known]
        yb = np.array([classes.index(words[i]) if words[i] in classes else y1[0] for i in known])
        lr = (meta.get("config") or {}).get("train", {}).get("lr")  # the run's own step size, if it says
        s = slicedraw.loss_slice(model, xb, yb, *where, loss=loss_name, lr=lr, reporter=reporter)
        slice_path = out.with_name(out.stem + ".slice.svg")
        fsutil.write_text(slice_path, slicedraw.slice_svg(s, title=f"average {loss_name} loss of {len(yb)} "
                                                                 f"drawing(s) along {s.name}"))
        result.slice = {"weight": s.name, "value": s.current, "loss": s.loss, "slope": s.slope,
                        "step": "decrease" if s.slope > 0 else "increase" if s.slope < 0 else "none",
                        "lr": s.lr, "drawings": int(len(yb)), "out": str(slice_path)}
    return result
