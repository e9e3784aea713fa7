"""`doodle export`: a trained model taken anywhere, as a standard ONNX graph or as a static web page that guesses
in the browser with no server, each checked against doodle's own prediction before it is put in place.

The exporter walks the model's own layers (doodle.nn, `MLP.layers`): `LAYERS` maps each layer class to its ONNX
nodes and to its entry in the web page's network.json, so the network is described once, in doodle.nn. Test-time
augmentation (doodle.pixels.TTA) goes along: as ONNX ops inside the graph, and in the page's JavaScript.

- ONNX: input `pixels` float32 [N, S*S] in [0, 1] (doodle.pixels.to_float), outputs `logits` (the mean over the TTA
  views) and `probabilities` (softmax(logits / temperature)); class names, raster settings, temperature and TTA in
  the model's metadata_props. Needs the `onnx` package (pip install "doodle[export]").
- Web: a folder for any static file host: doodle/static's play page, the JavaScript of doodle/web (Google's
  raw -> simplified recipe, doodle's rasterizer, the forward pass), network.json (what the layers are) and
  weights.bin (their arrays: float32, float16, or int8 with one scale per output unit). `load_web` reads such a
  folder back into an MLP with the very weights the page uses, dequantised as its JavaScript does (`doodle
  evaluate --model DIR`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import numpy as np

from doodle import __version__, fsutil
from doodle.checkpoint import load_model, read_meta, resolve_model_path
from doodle.errors import DoodleError, lookup
from doodle.metrics import confidence_rule
from doodle.nn import MLP, BatchNorm, Dense, Dropout, Layer, LeakyReLU, ModelSpec, ReLU, Sigmoid, Tanh
from doodle.pixels import TTA
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import RasterSpec

WEB_DIR = Path(__file__).with_name("web")  # the page's own JavaScript
STATIC_DIR = Path(__file__).with_name("static")  # `doodle play`'s page, which the exported page reuses
CORE_SCRIPTS = ("strokes.js", "raster.js", "network.js")  # raw strokes -> simplified -> bitmap -> probabilities
PAGE_SCRIPT = "local.js"  # the play page's API, answered in the browser
PAGE_FILES = ("index.html", "play.css", "play.js", "favicon.svg")
TEACH_SCRIPT = "teach.js"  # play's teach mode, left out of an exported page
NETWORK_JSON = "network.json"
WEIGHTS_BIN = "weights.bin"
WEB_FORMAT = "doodle-web"
WEB_FORMAT_VERSION = 1
OPSET = 17  # ONNX operator set: every op used here has been stable since 13-15; runtimes from 2022 on read it
IR_VERSION = 8  # the matching file format version (onnx 1.10+), so older runtimes load the file too
PRODUCER = "doodle"
CHECK_TOLERANCE = 1e-5  # largest |probability difference| an export may show against doodle's own prediction
CHECK_DRAWINGS = 3  # synthetic drawings of each of the 8 built-in shapes fed to both sides of every check
INPUT_NAME, LOGITS_NAME, PROBS_NAME = "pixels", "logits", "probabilities"


# --- the layers, walked: class -> its ONNX nodes and its network.json entry ------------------------------


class _Graph:
    """An ONNX graph under construction: nodes, initializers (float32 arrays) and unique value names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()

    def _fresh(self, hint: str) -> str:
        name, i = hint, 1
        while name in self.names:
            name, i = f"{hint}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, name: str, array) -> str:
        """An initializer; float arrays are stored as float32, integer ones as int64 (shapes, indices)."""
        array = np.asarray(array)
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
        name = self._fresh(name)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        """One node; returns the name of its output."""
        out = self._fresh(hint)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


class _Weights:
    """The arrays of weights.bin, back to back at multiples of 4 bytes, and how to read each (network.json)."""

    def __init__(self, quantize: str):
        self.quantize = quantize
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, array: np.ndarray, name: str, quantized: bool = False) -> dict:
        """Store one array (a Dense's W in the chosen precision when `quantized`, else float32); its entry."""
        encode = QUANTIZE[self.quantize] if quantized else _as_float32
        data, extra = encode(np.asarray(array, dtype=np.float32), name)
        entry = {"offset": self.size, "dtype": str(data.dtype), "shape": list(data.shape)}
        raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
        self.parts.append(raw + b"\0" * (-len(raw) % 4))
        self.size += len(self.parts[-1])
        return {**entry, **{k: self.add(v, f"{name}.{k}") for k, v in extra.items()}}

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


def _dense_onnx(layer: Dense, g: _Graph, x: str) -> str:
    y = g.op("MatMul", [x, g.const(f"{layer.name}.W", layer.params["W"])], f"{layer.name}.matmul")
    if "b" in layer.params:
        y = g.op("Add", [y, g.const(f"{layer.name}.b", layer.params["b"])], f"{layer.name}.add")
    return y


def _dense_web(layer: Dense, w: _Weights) -> dict:
    n_in, n_out = layer.params["W"].shape
    out = {"n_in": int(n_in), "n_out": int(n_out), "W": w.add(layer.params["W"], f"{layer.name}.W", quantized=True)}
    if "b" in layer.params:
        out["b"] = w.add(layer.params["b"], f"{layer.name}.b")
    return out


def _norm_onnx(layer: BatchNorm, g: _Graph, x: str) -> str:
    """Batch norm in evaluation mode: the running statistics, as ONNX's BatchNormalization (training_mode 0)."""
    arrays = {**layer.params, **layer.buffers}
    inputs = [g.const(f"{layer.name}.{k}", arrays[k]) for k in ("gain", "bias", "mean", "var")]
    return g.op("BatchNormalization", [x, *inputs], layer.name, epsilon=layer.eps)


def _norm_web(layer: BatchNorm, w: _Weights) -> dict:
    arrays = {**layer.params, **layer.buffers}
    return {"eps": layer.eps, **{k: w.add(arrays[k], f"{layer.name}.{k}") for k in ("gain", "bias", "mean", "var")}}


def _unary(op_type: str) -> Callable[[Layer, _Graph, str], str]:
    return lambda layer, g, x: g.op(op_type, [x], layer.name)


def _nothing(layer: Layer, w: _Weights) -> dict:
    return {}


L = TypeVar("L", bound=Layer)


@dataclass(frozen=True)
class LayerExport(Generic[L]):
    """How one kind of layer leaves doodle: its name in network.json (and in the page's forward pass), its ONNX
    nodes (layer, graph, input name) -> output name, and its network.json fields (layer, weights) -> dict."""

    kind: str
    onnx: Callable[[L, _Graph, str], str]
    web: Callable[[L, _Weights], dict]


# Each entry takes the layers of its own key's class: LayerExport[Any], as the table mixes them.
LAYERS: dict[type[Layer], LayerExport[Any]] = {
    Dense: LayerExport("dense", _dense_onnx, _dense_web),
    BatchNorm: LayerExport("batch_norm", _norm_onnx, _norm_web),
    ReLU: LayerExport("relu", _unary("Relu"), _nothing),
    LeakyReLU: LayerExport("leaky_relu", lambda layer, g, x: g.op("LeakyRelu", [x], layer.name, alpha=layer.alpha),
                           lambda layer, w: {"alpha": layer.alpha}),
    Tanh: LayerExport("tanh", _unary("Tanh"), _nothing),
    # doodle computes (1 + tanh(x/2)) / 2: the same function as ONNX's Sigmoid, to the last bit or two
    Sigmoid: LayerExport("sigmoid", _unary("Sigmoid"), _nothing),
    Dropout: LayerExport("dropout", lambda layer, g, x: x, lambda layer, w: {"p": layer.p}),  # identity at inference
}


def layer_export(layer: Layer) -> LayerExport[Any]:
    """The table entry of a layer; a one-line error for a kind of layer the exporter does not know."""
    found = LAYERS.get(type(layer))
    if found is None:
        raise DoodleError(f"doodle export does not know the layer {layer.name} ({type(layer).__name__}); "
                          f"it exports {', '.join(c.__name__ for c in LAYERS)}")
    return found


# --- weights in the web page's precision: name -> fn(W float32, name) -> (stored array, extra arrays) --------------


def _as_float32(w: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    return w, {}


def _as_float16(w: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    half = w.astype(np.float16)
    if not np.isfinite(half).all():
        raise DoodleError(f"{name} holds weights beyond float16's range (65504); export with --quantize int8 or "
                          "without --quantize")
    return half, {}


def _as_int8(w: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    """Symmetric int8 with one float32 scale per output unit (a column of W (n_in, n_out)): w ~ q * scale."""
    scale = (np.abs(w).max(axis=0) * np.float32(1.0 / 127.0)).astype(np.float32)  # (n_out,)
    scale[scale == 0] = 1.0  # a unit whose weights are all 0 stays 0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, {"scale": scale}


QUANTIZE: dict[str, Callable[[np.ndarray, str], tuple[np.ndarray, dict]]] = {
    "float32": _as_float32, "float16": _as_float16, "int8": _as_int8}


def _dequantize(buf: bytes, entry: dict, where: str) -> np.ndarray:
    """One array of weights.bin as float32, exactly as the page's JavaScript reads it (network.js, readArray)."""
    try:
        dtype = np.dtype({"float32": "<f4", "float16": "<f2", "int8": "i1"}[entry["dtype"]])
        shape = tuple(int(n) for n in entry["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        offset = int(entry["offset"])
        if offset < 0 or offset + count * dtype.itemsize > len(buf):
            raise ValueError("outside weights.bin")
        array = np.frombuffer(buf, dtype, count, offset).reshape(shape).astype(np.float32)
        if entry["dtype"] == "int8":
            array *= _dequantize(buf, entry["scale"], where)  # q * scale, rounded to float32 once: Math.fround(q * s)
    except (KeyError, TypeError, ValueError) as exc:
        raise DoodleError(f"{where}: a damaged array entry ({str(exc)[:60]}); export again") from None
    return array


# --- ONNX ---------------------------------------------------------------------------------------------------


def _need_onnx():
    try:
        import onnx
    except ImportError:
        raise DoodleError('ONNX export needs the onnx package: pip install "doodle[export]"') from None
    return onnx


def _tta_onnx(g: _Graph, x: str, views: list[tuple[bool, int, int]], side: int) -> str:
    """The views of doodle.pixels.tta_views as ONNX ops: [N, S*S] -> [V*N, S*S], view after view."""
    img = g.op("Reshape", [x, g.const("image_shape", [-1, side, side])], "images")  # (N, S, S)
    mirror = None
    if any(m for m, _, _ in views):  # columns reversed: Slice with step -1 from the last to before the first
        mirror = g.op("Slice", [img, g.const("mirror_starts", [-1]), g.const("mirror_ends", [np.iinfo(np.int64).min]),
                                g.const("mirror_axes", [2]), g.const("mirror_steps", [-1])], "mirrored")
    m = max(max(abs(dy), abs(dx)) for _, dy, dx in views)
    padded = {}
    stacked = []
    for mirrored, dy, dx in views:
        v = img
        if mirrored:
            assert mirror is not None  # made above whenever a view is mirrored
            v = mirror
        if dy or dx:  # moved dy down and dx right with zero fill: a window of the zero-padded image
            if v not in padded:
                padded[v] = g.op("Pad", [v, g.const("pads", [0, m, m, 0, m, m])], f"{v}_padded")
            start = [m - dy, m - dx]
            v = g.op("Slice", [padded[v], g.const("starts", start), g.const("ends", [s + side for s in start]),
                               g.const("axes", [1, 2])], f"view_{'m' if mirrored else ''}{dy}_{dx}")
        stacked.append(g.op("Unsqueeze", [v, g.const("axis0", [0])], f"{v}_1"))
    views_ = g.op("Concat", stacked, "views", axis=0)  # (V, N, S, S)
    return g.op("Reshape", [views_, g.const("flat_shape", [-1, side * side])], "view_pixels")  # (V*N, S*S)


def build_onnx(model: MLP, meta: dict, run: str = ""):
    """The model as an onnx.ModelProto: pixels [N, S*S] -> logits, probabilities (TTA and temperature inside)."""
    _need_onnx()
    from onnx import TensorProto, helper

    g = _Graph()
    n_in, n_classes = model.layer_sizes[0], model.layer_sizes[-1]
    side = meta["raster"]["size"]
    views = lookup(TTA, model.tta, "tta")
    x = _tta_onnx(g, INPUT_NAME, views, side) if views else INPUT_NAME
    for layer in model.layers:
        x = layer_export(layer).onnx(layer, g, x)
    if views:  # mean of the views' logits as doodle takes it: their sum, then times 1/V
        x = g.op("Reshape", [x, g.const("view_logits_shape", [len(views), -1, n_classes])], "view_logits")
        x = g.op("ReduceSum", [x, g.const("view_axis", [0])], "sum_logits", keepdims=0)
        x = g.op("Mul", [x, g.const("one_over_views", np.float32(1.0 / len(views)))], "mean_logits")
    g.nodes.append(helper.make_node("Identity", [x], [LOGITS_NAME], name=LOGITS_NAME))
    z = LOGITS_NAME
    if model.temperature != 1.0:
        z = g.op("Mul", [z, g.const("one_over_temperature", np.float32(1.0 / model.temperature))], "calibrated")
    g.nodes.append(helper.make_node("Softmax", [z], [PROBS_NAME], name=PROBS_NAME, axis=-1))
    graph = helper.make_graph(
        g.nodes, "doodle", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["N", n_classes]),
         helper.make_tensor_value_info(PROBS_NAME, TensorProto.FLOAT, ["N", n_classes])],
        initializer=g.initializers)
    proto = helper.make_model(graph, producer_name=PRODUCER, producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=_doc(model, meta))
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v)
                                   for k, v in _contract(model, meta, run).items()})
    return proto


def _contract(model: MLP, meta: dict, run: str) -> dict:
    """What a consumer needs to prepare a drawing and read the answer (ONNX metadata_props, network.json)."""
    return {"classes": list(meta["classes"]), "raster": dict(meta["raster"]), "temperature": model.temperature,
            "tta": model.tta, "tta_views": [list(v) for v in TTA[model.tta]], "doodle_version": __version__,
            "network": _network_name(model), "run": run,
            "input": f"float32 [N, {model.layer_sizes[0]}]: {meta['raster']['size']}x{meta['raster']['size']} "
                     "pixels, row-major from the top-left, white ink (1.0) on black (0.0), uint8 / 255",
            "preprocessing": "raw strokes -> Google's raw-to-simplified recipe (align to the top-left, scale to "
                             "0..255, resample at 1 unit, Ramer-Douglas-Peucker epsilon 2, round) -> doodle's "
                             "rasterizer with `raster` (size, line_width, padding in 0..255 units) -> uint8 / 255"}


def _network_name(model: MLP) -> str:
    extras = [model.activation] + (["batch norm"] if model.norm != "none" else [])
    return f"{'-'.join(map(str, model.layer_sizes))} ({', '.join(extras)})"


def _doc(model: MLP, meta: dict) -> str:
    size = meta["raster"]["size"]
    views = TTA[model.tta]
    tta = (f"Test-time augmentation '{model.tta}' is inside the graph ({len(views)} views: shifted by a pixel and/or "
           "mirrored; the mean of their logits): feed the plain bitmap." if views else "No test-time augmentation.")
    return (f"doodle {__version__}: a Quick, Draw! doodle classifier, {_network_name(model)}, {len(meta['classes'])} "
            f"classes (metadata 'classes', in output order). Input '{INPUT_NAME}': float32 [N, {size * size}], N "
            f"drawings of {size}x{size} pixels in row-major order from the top-left, white ink on black, each pixel a "
            f"uint8 value / 255 in [0, 1]. Make the pixels the way doodle does (metadata 'preprocessing', 'raster'). "
            f"{tta} Outputs: '{LOGITS_NAME}' [N, C], and '{PROBS_NAME}' [N, C] = softmax({LOGITS_NAME} / temperature), "
            f"temperature {model.temperature:.6g} (metadata 'temperature'): what `doodle predict` prints.")


# --- the web page -------------------------------------------------------------------------------------------


def network_json(model: MLP, meta: dict, run_dir: Path, quantize: str) -> tuple[dict, bytes]:
    """network.json's content and weights.bin's bytes, walking the model's layers."""
    weights = _Weights(quantize)
    layers = [{"name": layer.name, "kind": layer_export(layer).kind, **layer_export(layer).web(layer, weights)}
              for layer in model.layers]
    data = weights.tobytes()
    desc = {"format": WEB_FORMAT, "format_version": WEB_FORMAT_VERSION,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **_contract(model, meta, run_dir.name),
            "source": {"run": str(run_dir.resolve()), "run_id": meta.get("run_id"),
                       "test_accuracy": (meta.get("metrics") or {}).get("test_accuracy")},
            "confidence": confidence_rule(meta.get("metrics") or {}),  # from how sure the page says "I see X"
            "network_spec": asdict(model.spec),
            "weights": {"file": WEIGHTS_BIN, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "dtype": quantize},
            "layers": layers}
    return desc, data


def page_html(static_html: str) -> str:
    """doodle play's index.html for a static host: its assets beside it, the model's scripts before play.js, and
    no teach mode (teaching needs doodle play's server; its button shows only where teach.js runs)."""
    html = static_html.replace('"/static/', '"').replace(f'<script src="{TEACH_SCRIPT}" defer></script>\n', "")
    scripts = "".join(f'<script src="{name}" defer></script>\n  ' for name in (*CORE_SCRIPTS, PAGE_SCRIPT))
    anchor = '<script src="play.js"'
    if anchor not in html or TEACH_SCRIPT in html:
        raise DoodleError(f"{STATIC_DIR / 'index.html'}: not the script tags an exported page is made from (play.js, "
                          f"then {TEACH_SCRIPT} on a line of its own); the package is damaged, reinstall doodle")
    return html.replace(anchor, scripts + anchor, 1)


def is_web_export(path) -> bool:
    """Whether `path` is a folder `doodle export --format web` wrote."""
    if path is None:
        return False
    try:
        desc = json.loads((Path(path) / NETWORK_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(desc, dict) and desc.get("format") == WEB_FORMAT


def load_web(folder: str | Path, calibrated: bool = True) -> tuple[MLP, dict]:
    """An exported web folder as (model, meta): an MLP with the very weights its page uses (float16 and int8
    dequantised exactly as network.js does), and network.json as metadata (classes, raster, source run)."""
    folder = Path(folder)
    path = folder / NETWORK_JSON
    damaged = "the export is damaged; export it again"
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
        spec = ModelSpec(**desc["network_spec"])
        entries = desc["layers"]
        info = desc["weights"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DoodleError(f"{path}: not a readable doodle web export ({type(exc).__name__}); {damaged}") from None
    except DoodleError as exc:
        raise DoodleError(f"{path}: {str(exc)[:100]}; {damaged}") from None
    if desc.get("format") != WEB_FORMAT or desc.get("format_version") != WEB_FORMAT_VERSION:
        raise DoodleError(f"{path}: not a doodle web export of format version {WEB_FORMAT_VERSION}; export it again "
                          "with this doodle")
    bin_path = folder / str(info.get("file", WEIGHTS_BIN))
    try:
        buf = bin_path.read_bytes()
    except OSError as exc:
        raise DoodleError(f"{bin_path}: cannot read ({exc.strerror or exc}); {damaged}") from None
    if len(buf) != info.get("bytes") or hashlib.sha256(buf).hexdigest() != info.get("sha256"):
        raise DoodleError(f"{bin_path}: does not match {NETWORK_JSON} (size or checksum); {damaged}")
    model = MLP.from_spec(spec)
    expected = [(layer.name, layer_export(layer).kind) for layer in model.layers]
    if [(e.get("name"), e.get("kind")) for e in entries if isinstance(e, dict)] != expected:
        raise DoodleError(f"{path}: its layers are not those of the {'-'.join(map(str, spec.layer_sizes))} network "
                          f"it names; {damaged}")
    state = {f"{e['name']}.{k}": _dequantize(buf, v, f"{path} {e['name']}.{k}")
             for e in entries for k, v in e.items() if isinstance(v, dict)}
    try:
        model.load_state_dict(state)
    except DoodleError as exc:
        raise DoodleError(f"{path}: {str(exc)[:120]}; {damaged}") from None
    temperature = desc.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise DoodleError(f"{path}: temperature must be a positive number; {damaged}")
    model.temperature = float(temperature) if calibrated else 1.0
    meta = {"classes": desc.get("classes"), "raster": desc.get("raster"), "source": desc.get("source") or {},
            "weights": info.get("dtype")}
    if not isinstance(meta["classes"], list) or len(meta["classes"]) != spec.layer_sizes[-1]:
        raise DoodleError(f"{path}: 'classes' do not fit the network; {damaged}")
    try:
        raster = RasterSpec.from_dict(meta["raster"])
    except DoodleError as exc:
        raise DoodleError(f"{path}: {exc}; {damaged}") from None
    if raster.size ** 2 != spec.layer_sizes[0]:
        raise DoodleError(f"{path}: 'raster' size {raster.size} does not fit the network's "
                          f"{spec.layer_sizes[0]} inputs; {damaged}")
    return model, meta


def source_run(meta: dict) -> tuple[Path, dict]:
    """The run a web export came from, with its metadata: where its held-out test split is."""
    run = (meta.get("source") or {}).get("run")
    try:
        run_dir = resolve_model_path(run)
    except (DoodleError, TypeError):
        raise DoodleError(f"the run this export came from ({run}) is gone, so its test split is too; pass DATA "
                          "files to evaluate on") from None
    run_meta = read_meta(run_dir)
    if run_meta.get("run_id") != meta["source"].get("run_id"):
        raise DoodleError(f"{run_dir}: now holds another run than the one exported; pass DATA files to evaluate on")
    return run_dir, run_meta


# --- checks: the export against doodle's own prediction ---------------------------------------------------------


def check_bitmaps(raster: dict) -> np.ndarray:
    """(K, S, S) uint8: a few synthetic drawings of each built-in shape, rasterized with the model's settings."""
    return _check_bitmaps(raster["size"], float(raster["line_width"]), float(raster["padding"]))


@functools.lru_cache(maxsize=4)
def _check_bitmaps(size: int, line_width: float, padding: float) -> np.ndarray:
    from doodle.rasterpool import rasterize_batch
    from doodle.synthetic import SHAPES, generate

    drawings = [rec["drawing"] for word in SHAPES for rec in generate(word, CHECK_DRAWINGS, seed=7)]
    bitmaps = rasterize_batch(drawings, size=size, line_width=line_width, padding=padding)
    bitmaps.flags.writeable = False  # shared by every export of this process
    return bitmaps


def compare(expected: np.ndarray, got: np.ndarray) -> dict:
    """Max |probability difference| and how many drawings have the same top-1 class."""
    return {"max_abs_diff": float(np.abs(expected.astype(np.float64) - got).max()), "drawings": len(expected),
            "same_top1": int((expected.argmax(axis=1) == got.argmax(axis=1)).sum())}


def onnx_probabilities(source: bytes | str | Path, pixels: np.ndarray, runtime: str) -> np.ndarray:
    """The ONNX model's `probabilities` for float32 pixels (N, S*S), by the ONNX reference evaluator or onnxruntime."""
    if runtime == "reference":
        from onnx.reference import ReferenceEvaluator

        # onnx types run() as dict | list: it is the list of the outputs asked for unless intermediate=True
        return ReferenceEvaluator(source if isinstance(source, bytes) else str(source)).run(
            [PROBS_NAME], {INPUT_NAME: pixels})[0]  # type: ignore[index]
    import onnxruntime

    session = onnxruntime.InferenceSession(source if isinstance(source, bytes) else str(source),
                                           providers=["CPUExecutionProvider"])
    return session.run([PROBS_NAME], {INPUT_NAME: pixels})[0]


def _checked(name: str, figures: dict, strict: bool = True) -> dict:
    ok = figures["max_abs_diff"] <= CHECK_TOLERANCE and figures["same_top1"] == figures["drawings"]
    if strict and not ok:
        raise DoodleError(f"export check failed, nothing written: {name} differs from doodle's prediction by "
                          f"{figures['max_abs_diff']:.2g} (tolerance {CHECK_TOLERANCE:g}), same top-1 on "
                          f"{figures['same_top1']}/{figures['drawings']} drawings", exit_code=1)
    return {"check": name, "passed": ok, **figures}


def _check_onnx(data: bytes, onnx, model: MLP, bitmaps: np.ndarray) -> list[dict]:
    from doodle.pixels import to_float

    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    checks = [{"check": "onnx.checker", "passed": True}]
    expected = model.predict_proba(bitmaps)
    pixels = to_float(bitmaps)
    checks.append(_checked("onnx.reference", compare(expected, onnx_probabilities(data, pixels, "reference"))))
    try:
        import onnxruntime  # noqa: F401  (a test dependency, not the export's)
    except ImportError:
        checks.append({"check": "onnxruntime", "passed": None, "skipped": "onnxruntime is not installed"})
    else:
        checks.append(_checked("onnxruntime", compare(expected, onnx_probabilities(data, pixels, "onnxruntime"))))
    return checks


# --- doodle export ---------------------------------------------------------------------------------------------


def _writable_onnx(out: Path, onnx) -> None:
    """Refuse to overwrite anything but an earlier ONNX export of doodle's."""
    if not out.exists():
        return
    if out.is_file():
        try:
            if onnx.load(str(out), load_external_data=False).producer_name == PRODUCER:
                return
        except Exception:  # noqa: BLE001 - whatever onnx makes of a file that is not ONNX, it is not ours
            pass
    raise DoodleError(f"{out}: exists and is not an earlier doodle ONNX export; choose another --out or remove it")


def _writable_folder(out: Path) -> None:
    """Refuse to replace anything but an earlier web export of doodle's (or an empty folder)."""
    if not out.exists() or (out.is_dir() and (is_web_export(out) or not any(out.iterdir()))):
        return
    raise DoodleError(f"{out}: exists and is not an earlier doodle web export; choose another --out or remove it")


def _export_onnx(model: MLP, meta: dict, run_dir: Path, out: Path, quantize: str | None,
                 reporter: Reporter) -> dict:
    if quantize is not None:
        raise DoodleError("--quantize is for --format web; the ONNX graph keeps float32 weights")
    onnx = _need_onnx()
    _writable_onnx(out, onnx)
    proto = build_onnx(model, meta, run_dir.name)
    data = proto.SerializeToString()
    reporter.update("export", advance=1)
    checks = _check_onnx(data, onnx, model, check_bitmaps(meta["raster"]))
    reporter.update("export", advance=1)
    fsutil.write_bytes(out, data)
    return {"files": [{"path": str(out), "bytes": len(data)}], "weights": "float32", "checks": checks}


def _export_web(model: MLP, meta: dict, run_dir: Path, out: Path, quantize: str | None,
                reporter: Reporter) -> dict:
    quantize = quantize or "float32"
    lookup(QUANTIZE, quantize, "--quantize precision")
    _writable_folder(out)
    desc, data = network_json(model, meta, run_dir, quantize)
    reporter.update("export", advance=1)
    with fsutil.atomic_folder(out) as tmp:
        for name in PAGE_FILES:
            source = STATIC_DIR / name
            if name == "index.html":
                (tmp / name).write_text(page_html(source.read_text(encoding="utf-8")), encoding="utf-8")
            else:
                (tmp / name).write_bytes(source.read_bytes())
        for name in (*CORE_SCRIPTS, PAGE_SCRIPT):
            (tmp / name).write_bytes((WEB_DIR / name).read_bytes())
        (tmp / WEIGHTS_BIN).write_bytes(data)
        (tmp / NETWORK_JSON).write_text(json.dumps(desc, separators=(",", ":")) + "\n", encoding="utf-8")
        # Read back as doodle evaluate reads it: float32 must be the model itself, to the bit.
        bitmaps = check_bitmaps(meta["raster"])
        figures = compare(model.predict_proba(bitmaps), load_web(tmp)[0].predict_proba(bitmaps))
        if quantize == "float32" and figures["max_abs_diff"] != 0.0:
            raise DoodleError(f"export check failed, nothing written: the weights read back from {WEIGHTS_BIN} differ "
                              f"from the model's (max |diff| of probabilities {figures['max_abs_diff']:.2g})",
                              exit_code=1)
        checks = [{"check": f"read back ({quantize})", "passed": True, **figures}]
        files = [{"path": str(out / p.name), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())]
        reporter.update("export", advance=1)
    return {"files": files, "weights": quantize, "checks": checks}


FORMATS: dict[str, Callable] = {"onnx": _export_onnx, "web": _export_web}
DEFAULT_OUT = {"onnx": "model.onnx", "web": "doodle-web"}


def export(model_path: str | Path | None, fmt: str, out: str | Path | None = None, quantize: str | None = None,
           reporter: Reporter = NULL_REPORTER) -> dict:
    """Export a run as `fmt` (onnx or web) to `out`; returns what was written and the checks run (the --json)."""
    write = lookup(FORMATS, fmt, "export format")
    out = Path(out if out is not None else DEFAULT_OUT[fmt])
    run_dir = resolve_model_path(model_path)
    model, meta = load_model(run_dir)
    reporter.start("export", f"exporting {run_dir.name} as {fmt}", total=2)
    try:
        result = write(model, meta, run_dir, out, quantize, reporter)
    finally:
        reporter.end("export")
    views = len(TTA[model.tta])
    return {"format": fmt, "out": str(out), "run": str(run_dir), "network": _network_name(model),
            "classes": len(meta["classes"]), "temperature": model.temperature, "tta": model.tta,
            "tta_views": views, "tta_included": True, **result,
            "bytes": sum(f["bytes"] for f in result["files"])}
