// Google's raw -> simplified recipe, a port of doodle/simplify.py (simplify_raw): the same float64 arithmetic in the
// same order, so a drawing comes out as the very integers doodle (and Google) make of it.
// Raw strokes [xs, ys(, ts)] in canvas pixels -> simplified strokes [xs, ys] of integers in 0..255.
"use strict";
(function (doodle) {
  const RDP_EPSILON = 2.0;  // Google's Ramer-Douglas-Peucker tolerance, in 0..255 units

  // numpy's rint: half to even (Math.round sends halves up)
  function rint(v) {
    const r = Math.round(v);
    return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // Points every 1 unit along one stroke (t = 0, 1, 2, ... from its start), then its exact end point.
  // As doodle's _resample: lengths summed from 0, the blend (1-u)*a + u*b; ties in RDP hang on these last bits.
  function resample(px, py) {
    const n = px.length, cum = new Float64Array(n), seg = new Float64Array(n);
    for (let i = 0; i + 1 < n; i++) {
      const dx = px[i + 1] - px[i], dy = py[i + 1] - py[i];
      seg[i] = Math.sqrt(dx * dx + dy * dy);
      cum[i + 1] = cum[i] + seg[i];
    }
    const qx = [], qy = [];
    const sample = (g, t) => {
      const inside = g + 1 < n;
      const len = inside ? seg[g] : 0;
      const u = (t - cum[g]) / (len > 0 ? len : 1.0);
      const h = inside ? g + 1 : g;
      qx.push((1.0 - u) * px[g] + u * px[h]);
      qy.push((1.0 - u) * py[g] + u * py[h]);
    };
    if (cum[n - 1] === 0) {
      sample(0, 0);  // a dot keeps its first point, then its end
    } else {
      let t = 0;
      for (let g = 0; g + 1 < n; g++) {
        for (let k = Math.ceil(cum[g + 1]) - Math.ceil(cum[g]); k > 0; k--) sample(g, t++);
      }
    }
    qx.push(px[n - 1]);
    qy.push(py[n - 1]);
    return [qx, qy];
  }

  // Which points survive RDP (ends always); the split is the first farthest point, as doodle's _rdp_keep.
  function rdpKeep(px, py, eps) {
    const keep = new Uint8Array(px.length);
    keep[0] = keep[px.length - 1] = 1;
    const stack = [[0, px.length - 1]];
    while (stack.length) {
      const [lo, hi] = stack.pop();
      if (hi - lo < 2) continue;
      const ax = px[lo], ay = py[lo], dx = px[hi] - ax, dy = py[hi] - ay;
      let length = Math.sqrt(dx * dx + dy * dy);
      const degenerate = length === 0;
      if (degenerate) length = 1.0;
      let top = -1, at = -1;
      for (let i = lo + 1; i < hi; i++) {
        const sx = px[i] - ax, sy = py[i] - ay;
        const dist = (degenerate ? Math.sqrt(sx * sx + sy * sy) : Math.abs(dx * sy - dy * sx)) / length;
        if (dist > top) { top = dist; at = i; }
      }
      if (top > eps) {
        keep[at] = 1;
        stack.push([at, hi], [lo, at]);
      }
    }
    return keep;
  }

  function simplifyRaw(strokes) {
    const kept = strokes.filter((s) => s[0].length);
    if (!kept.length) throw new Error("cannot simplify an empty drawing (no points)");
    let minX = Infinity, minY = Infinity;
    for (const [xs, ys] of kept) {
      for (let i = 0; i < xs.length; i++) { minX = Math.min(minX, xs[i]); minY = Math.min(minY, ys[i]); }
    }
    // Align to the top-left, then scale uniformly so the larger side spans 0..255 (v * 255 / extent, in that order).
    const shifted = kept.map(([xs, ys]) => [Float64Array.from(xs, (v) => v - minX), Float64Array.from(ys, (v) => v - minY)]);
    let extent = 0;
    for (const [xs, ys] of shifted) for (let i = 0; i < xs.length; i++) extent = Math.max(extent, xs[i], ys[i]);
    if (!(extent > 0)) extent = Infinity;  // a lone dot scales to 0, not NaN
    return shifted.map(([xs, ys]) => {
      const [qx, qy] = resample(xs.map((v) => v * 255.0 / extent), ys.map((v) => v * 255.0 / extent));
      const keep = rdpKeep(qx, qy, RDP_EPSILON);
      const ox = [], oy = [];
      for (let i = 0; i < qx.length; i++) if (keep[i]) { ox.push(rint(qx[i])); oy.push(rint(qy[i])); }
      return [ox, oy];
    });
  }

  doodle.rint = rint;
  doodle.simplifyRaw = simplifyRaw;
})(window.doodle = window.doodle || {});
