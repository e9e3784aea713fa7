// The network in the browser: network.json (the layers, in order, as doodle export walked them) and weights.bin
// (their arrays) -> a forward pass, test-time augmentation and calibrated probabilities, as doodle's
// MLP.predict_proba computes them. Sums run in float64 over the float32 weights (numpy sums in float32: the two
// agree to about 1e-7). Typed arrays read weights.bin little-endian, which every browser's platform is.
"use strict";
(function (doodle) {
  const f32 = Math.fround;

  // IEEE half -> its exact value
  function half(h) {
    const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e === 0) return sign * m * 2 ** -24;
    if (e === 31) return m ? NaN : sign * Infinity;
    return sign * (1 + m / 1024) * 2 ** (e - 15);
  }

  // One array of weights.bin as float32, dequantised as doodle.export._dequantize does: int8 q -> fround(q * scale),
  // one scale per output unit (the last axis).
  function readArray(buf, e) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    if (e.dtype === "float32") return new Float32Array(buf.slice(e.offset, e.offset + 4 * n));
    if (e.dtype === "float16") return Float32Array.from(new Uint16Array(buf, e.offset, n), half);
    if (e.dtype === "int8") {
      const q = new Int8Array(buf, e.offset, n), scale = readArray(buf, e.scale), cols = e.shape[e.shape.length - 1];
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f32(q[i] * scale[i % cols]);
      return out;
    }
    throw new Error(`weights.bin: unknown dtype ${e.dtype}`);
  }

  // out += a * W[row : row + n]
  function axpy(a, out, W, row, n) {
    let j = 0;
    for (const n4 = n - n % 4; j < n4; j += 4) {
      out[j] += a * W[row + j]; out[j + 1] += a * W[row + j + 1];
      out[j + 2] += a * W[row + j + 2]; out[j + 3] += a * W[row + j + 3];
    }
    for (; j < n; j++) out[j] += a * W[row + j];
  }

  // out += a * W[row : row + n] and out2 += a2 * W[row : row + n], reading each weight once
  function axpy2(a, out, a2, out2, W, row, n) {
    let j = 0;
    for (const n2 = n - n % 2; j < n2; j += 2) {
      const w0 = W[row + j], w1 = W[row + j + 1];
      out[j] += a * w0; out2[j] += a2 * w0; out[j + 1] += a * w1; out2[j + 1] += a2 * w1;
    }
    if (j < n) { out[j] += a * W[row + j]; out2[j] += a2 * W[row + j]; }
  }

  // kind -> {load(entry, buf) -> layer, forward(layer, xs) -> ys}: doodle.nn's layers. xs holds one Float64Array per
  // view of the drawing: all the views go through a layer together, so each weight row is read once for all of them.
  const each = (f) => (L, xs) => xs.map((x) => x.map((v) => f(L, v)));
  const KINDS = {
    dense: {
      load: (e, buf) => ({nIn: e.n_in, nOut: e.n_out, W: readArray(buf, e.W), b: e.b ? readArray(buf, e.b) : null}),
      forward(L, xs) {
        // x @ W row by row: a drawing's pixels and ReLU's outputs are mostly 0, and their rows are skipped. Two views
        // share each pass over a row (one read of the weights for two sums: 1.5x faster in V8 than one by one).
        const {nIn, nOut, W, b} = L, outs = xs.map(() => new Float64Array(nOut));
        for (let i = 0; i < nIn; i++) {
          let held = -1;  // a view waiting for a partner
          for (let v = 0; v < xs.length; v++) {
            if (xs[v][i] === 0) continue;
            if (held < 0) { held = v; continue; }
            axpy2(xs[held][i], outs[held], xs[v][i], outs[v], W, i * nOut, nOut);
            held = -1;
          }
          if (held >= 0) axpy(xs[held][i], outs[held], W, i * nOut, nOut);
        }
        if (b) for (const out of outs) for (let j = 0; j < nOut; j++) out[j] += b[j];
        return outs;
      },
    },
    batch_norm: {
      load(e, buf) {
        const v = readArray(buf, e.var), inv = new Float32Array(v.length);
        for (let j = 0; j < v.length; j++) inv[j] = f32(1 / f32(Math.sqrt(f32(v[j] + f32(e.eps)))));  // as numpy, float32
        return {mean: readArray(buf, e.mean), inv, gain: readArray(buf, e.gain), bias: readArray(buf, e.bias)};
      },
      forward: (L, xs) => xs.map((x) => x.map((v, j) => (v - L.mean[j]) * L.inv[j] * L.gain[j] + L.bias[j])),
    },
    relu: {load: () => ({}), forward: each((L, v) => (v > 0 ? v : 0))},
    leaky_relu: {load: (e) => ({alpha: e.alpha}), forward: each((L, v) => (v > 0 ? v : L.alpha * v))},
    tanh: {load: () => ({}), forward: each((L, v) => Math.tanh(v))},
    sigmoid: {load: () => ({}), forward: each((L, v) => (1 + Math.tanh(v * 0.5)) * 0.5)},
    dropout: {load: () => ({}), forward: (L, xs) => xs},  // identity at inference
  };

  async function fetchOk(url, what) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`cannot load ${what} (${url}: ${response.status})`);
    return response;
  }

  // Load an export's network from the folder at `base` (default: beside the page).
  async function loadNetwork(base = "") {
    const desc = await (await fetchOk(`${base}network.json`, "the network")).json();
    if (desc.format !== "doodle-web" || desc.format_version !== 1) throw new Error("network.json is not a doodle web export");
    const buf = await (await fetchOk(`${base}${desc.weights.file}`, "the weights")).arrayBuffer();
    if (buf.byteLength !== desc.weights.bytes) throw new Error(`${desc.weights.file} is damaged (size ${buf.byteLength}, not ${desc.weights.bytes})`);
    return fromDescription(desc, buf);
  }

  function fromDescription(desc, buf) {
    const layers = desc.layers.map((e) => {
      const kind = KINDS[e.kind];
      if (!kind) throw new Error(`network.json: unknown layer kind ${e.kind}`);
      return {kind: e.kind, name: e.name, ...kind.load(e, buf)};
    });
    return {desc, layers, classes: desc.classes, raster: desc.raster, temperature: desc.temperature,
            views: desc.tta_views, size: desc.raster.size};
  }

  // The logits of each input (Float64Arrays of pixels in [0, 1]).
  function forward(net, xs) {
    for (const L of net.layers) xs = KINDS[L.kind].forward(L, xs);
    return xs;
  }

  // uint8 bitmap -> pixels as the network reads them: float32(v) * float32(1/255), as doodle.pixels.to_float
  function toFloat(bitmap) {
    const k = f32(1 / 255), out = new Float64Array(bitmap.length);
    for (let i = 0; i < bitmap.length; i++) out[i] = f32(bitmap[i] * k);
    return out;
  }

  // One (mirrored, dy, dx) view of the S x S pixels: mirrored left to right, then moved dy down and dx right, zero fill.
  function view(x, s, mirrored, dy, dx) {
    const out = new Float64Array(s * s);
    for (let y = Math.max(dy, 0); y < s + Math.min(dy, 0); y++) {
      for (let c = Math.max(dx, 0); c < s + Math.min(dx, 0); c++) {
        const sc = c - dx;
        out[y * s + c] = x[(y - dy) * s + (mirrored ? s - 1 - sc : sc)];
      }
    }
    return out;
  }

  // The logits of a bitmap: with test-time augmentation, the mean over the views (their sum, times 1/V).
  function logits(net, bitmap) {
    const x = toFloat(bitmap);
    if (!net.views.length) return forward(net, [x])[0];
    const [sum, ...rest] = forward(net, net.views.map(([m, dy, dx]) => view(x, net.size, m, dy, dx)));
    for (const z of rest) for (let j = 0; j < z.length; j++) sum[j] += z[j];  // view after view, in order
    return sum.map((v) => v * (1 / net.views.length));
  }

  // softmax(logits / temperature): the calibrated probabilities `doodle predict` prints
  function probabilities(net, z) {
    const t = 1 / net.temperature, scaled = z.map((v) => v * t), top = Math.max(...scaled);
    const e = scaled.map((v) => Math.exp(v - top)), sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
  }

  // The whole path of a drawing, as doodle takes it: raw strokes [xs, ys(, ts)] -> Google's simplified strokes ->
  // the model's bitmap -> probabilities.
  function guess(net, raw) {
    const simplified = doodle.simplifyRaw(raw);
    const {size, line_width: lineWidth, padding} = net.raster;
    const bitmap = doodle.rasterize(simplified, size, lineWidth, padding);
    const z = logits(net, bitmap);
    return {simplified, bitmap, logits: z, probabilities: probabilities(net, z)};
  }

  Object.assign(doodle, {loadNetwork, fromDescription, forward, toFloat, view, logits, probabilities, guess, half});
})(window.doodle = window.doodle || {});
