// doodle's rasterizer (doodle/raster.py), one drawing at a time: simplified strokes -> size x size uint8, white ink
// on black, pixel for pixel what doodle draws for training. The same steps in the same order: device coordinates
// rounded to cairo's 1/256 pixel, SUBROWS sample lines per pixel row, each capsule's crossing of a line in float32
// (Math.fround wherever numpy computes in float32), the crossings of one stroke merged per line, spread over
// columns in float64, and the strokes composited row by row.
"use strict";
(function (doodle) {
  const SOURCE_SIDE = 256.0, SUBROWS = 15, TOLERANCE = 0.1, FIXED = 256.0, QBITS = 10, PROFILE_STEPS = 4096;
  const EDGE = 1e-3, QUANTUM = 1 << QBITS;
  const f32 = Math.fround;
  const rint = doodle.rint;

  // glibc's hypot (the one numpy calls here), without FMA: Math.hypot rounds differently in 1 case of 3
  function hypot(x, y) {
    x = Math.abs(x);
    y = Math.abs(y);
    const ax = Math.max(x, y), ay = Math.min(x, y);
    if (ay < 2 ** -511) return ax >= ay / 2 ** -54 ? ax + ay : kernel(ax / 2 ** -600, ay / 2 ** -600) * 2 ** -600;
    return ay <= ax * 2 ** -54 ? ax + ay : kernel(ax, ay);
  }

  function kernel(ax, ay) {
    let h = Math.sqrt(ax * ax + ay * ay), t1, t2;
    if (h <= 2.0 * ay) {
      const delta = h - ay;
      t1 = ax * (2.0 * delta - ax);
      t2 = (delta - 2.0 * (ax - ay)) * delta;
    } else {
      const delta = h - ax;
      t1 = 2.0 * delta * (ax - 2.0 * ay);
      t2 = (4.0 * delta - ay) * ay + delta * delta;
    }
    return h - (t1 + t2) / (2.0 * h);
  }

  // numpy's interp for one x (xp ascending), right of the last point: `right`
  function interp(x, xp, fp, right) {
    const last = xp.length - 1;
    if (x > xp[last]) return right;
    if (x === xp[last]) return fp[last];
    let j = 0;
    while (xp[j + 1] <= x) j++;
    if (xp[j] === x) return fp[j];
    const slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    return slope * (x - xp[j]) + fp[j];
  }

  function penVertices(radius) {
    if (TOLERANCE >= radius) return 4;
    const n = Math.ceil(2 * Math.PI / Math.acos(1 - TOLERANCE / radius));
    return Math.max(4, n + n % 2);
  }

  // Half-width of cairo's polygonal pen at heights (i + 0.5) / STEPS of the radius, float32, the last entry 0.
  function penProfile(radius) {
    const n = penVertices(radius), heights = [], widths = [];
    for (let i = 0; i <= Math.floor(n / 4); i++) {
      const a = 2 * Math.PI * i / n;
      if (a <= Math.PI / 2 + 1e-12) { heights.push(Math.sin(a)); widths.push(Math.cos(a)); }
    }
    const out = new Float32Array(PROFILE_STEPS + 1);
    for (let i = 0; i < PROFILE_STEPS; i++) out[i] = interp((i + 0.5) / PROFILE_STEPS, heights, widths, 0.0) * radius;
    return out;
  }

  const profiles = new Map();

  function geometry(size, lineWidth, padding) {
    const totalPadding = 2.0 * padding + lineWidth;
    const scale = size / (SOURCE_SIDE + totalPadding);
    return {scale, shift: totalPadding / 2.0, r: lineWidth / 2.0 * scale};
  }

  // Segments in device pixels, stroke by stroke: [x0, y0, x1, y1] with y0 <= y1; a one-point stroke is a dot.
  function segments(strokes, scale, shift) {
    let maxX = -Infinity, maxY = -Infinity;
    for (const [xs, ys] of strokes) for (let i = 0; i < xs.length; i++) { maxX = Math.max(maxX, xs[i]); maxY = Math.max(maxY, ys[i]); }
    const offX = (SOURCE_SIDE - maxX) / 2.0 + shift, offY = (SOURCE_SIDE - maxY) / 2.0 + shift, k = scale * FIXED;
    return strokes.map(([xs, ys]) => {
      const X = xs.map((v) => rint((v + offX) * k) / FIXED + 0.5 / QUANTUM);
      const Y = ys.map((v) => rint((v + offY) * k) / FIXED);
      const segs = [];
      for (let a = 0; a < Math.max(1, X.length - 1); a++) {
        let p = a, q = X.length > 1 ? a + 1 : a;
        if (Y[p] > Y[q]) [p, q] = [q, p];
        segs.push([X[p], Y[p], X[q], Y[q]]);
      }
      return segs;
    });
  }

  // Where each sample line k = kLo..kLo+count-1 crosses one capsule: [lo, hi] in 1/QUANTUM pixel, as integers.
  function crossings(seg, kLo, count, r, size, profile, push) {
    const [x0, y0, x1, y1] = seg, q = QUANTUM;
    const dx = x1 - x0, dy = y1 - y0, length = hypot(dx, dy), dot = length === 0;
    const safe = dot ? 1.0 : length, ux = dot ? 0.0 : dx / safe, uy = dot ? 1.0 : dy / safe;
    const slope = uy > 1e-9 ? ux / Math.max(uy, 1e-9) : 0.0;
    const base = f32((kLo + 0.5) / SUBROWS - y0), fdy = f32(dy), step = f32(1.0 / SUBROWS);
    const inv = f32(PROFILE_STEPS / r), top = PROFILE_STEPS;
    const X0 = f32(x0 * q), X1 = f32(x1 * q), rux = f32(r * ux), nrux = -rux, fslope = f32(slope * q);
    const left = f32((x0 - r * uy - slope * r * ux) * q), right = f32((x0 + r * uy + slope * r * ux) * q);
    const limit = size * q;
    for (let j = 0; j < count; j++) {
      const d0 = f32(f32(j * step) + base), d1 = f32(d0 - fdy);
      const h0 = profile[Math.trunc(Math.min(f32(Math.abs(d0) * inv), top))];
      const h1 = profile[Math.trunc(Math.min(f32(Math.abs(d1) * inv), top))];
      const t = f32(fslope * d0);
      let lo = d0 < rux ? f32(X0 - h0) : d1 > rux ? f32(X1 - h1) : f32(left + t);
      let hi = d0 < nrux ? f32(X0 + h0) : d1 > nrux ? f32(X1 + h1) : f32(right + t);
      // doodle clips only when a capsule nears the border; clipping always gives the same integers
      lo = Math.min(Math.max(lo, 0), limit);
      hi = Math.min(Math.max(hi, 0), limit);
      push(kLo + j, Math.trunc(lo), Math.trunc(Math.max(hi, lo)));
    }
  }

  function rasterize(strokes, size = 28, lineWidth = 16.0, padding = 16.0) {
    strokes = strokes.filter((s) => s[0].length);
    if (!strokes.length) throw new Error("nothing to rasterize: the drawing has no points");
    const {scale, shift, r} = geometry(size, lineWidth, padding);
    if (!profiles.has(r)) profiles.set(r, penProfile(r).map((v) => f32(v * QUANTUM)));
    const profile = profiles.get(r);
    const nLines = size * SUBROWS, width = size + 1;
    const S = 1.0 / SUBROWS, F = S * (1.0 / QUANTUM);
    const through = new Float64Array(size * size).fill(1.0), touched = new Uint8Array(size);
    for (const segs of segments(strokes, scale, shift)) {
      // this stroke's crossings, per sample line
      const lines = new Map();
      let kMin = nLines, kMax = -1;
      for (const seg of segs) {
        const kLo = Math.min(Math.max(Math.ceil((seg[1] - r + EDGE) * SUBROWS - 0.5), 0), nLines);
        const kHi = Math.min(Math.max(Math.floor((seg[3] + r - EDGE) * SUBROWS - 0.5), -1), nLines - 1);
        const count = Math.max(kHi - kLo + 1, 0);
        if (!count) continue;
        kMin = Math.min(kMin, kLo);
        kMax = Math.max(kMax, kHi);
        crossings(seg, kLo, count, r, size, profile, (k, lo, hi) => {
          if (!lines.has(k)) lines.set(k, []);
          lines.get(k).push([lo, hi]);
        });
      }
      if (kMax < kMin) continue;
      // Per pixel row (doodle's slot): merge each line's crossings into runs, spread the runs over the columns
      // (ends, then starts, in run order: the order doodle's bincount adds them), composite over what is below.
      for (let row = Math.floor(kMin / SUBROWS); row <= Math.floor(kMax / SUBROWS); row++) {
        const runs = [];
        for (let k = row * SUBROWS; k < (row + 1) * SUBROWS; k++) {
          const found = lines.get(k);
          if (!found) continue;
          found.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
          let [start, end] = found[0];
          for (let i = 1; i < found.length; i++) {
            const [lo, hi] = found[i];
            if (lo > end) { runs.push([start, end]); start = lo; }
            end = Math.max(end, hi);
          }
          runs.push([start, end]);
        }
        const cover = new Float64Array(width), frac = new Float64Array(width);
        for (const [, e] of runs) cover[e >> QBITS] += -S;
        for (const [s] of runs) cover[s >> QBITS] += S;
        for (let c = 1; c < width; c++) cover[c] += cover[c - 1];
        for (const [, e] of runs) frac[e >> QBITS] += F * (e & (QUANTUM - 1));
        for (const [s] of runs) frac[s >> QBITS] += -F * (s & (QUANTUM - 1));
        for (let c = 0; c < size; c++) through[row * size + c] *= 1.0 - (cover[c] + frac[c]);
        touched[row] = 1;
      }
    }
    const out = new Uint8Array(size * size);
    for (let row = 0; row < size; row++) {
      if (!touched[row]) continue;
      for (let c = 0; c < size; c++) out[row * size + c] = Math.min(255, Math.max(0, rint(255.0 - through[row * size + c] * 255.0)));
    }
    return out;
  }

  doodle.rasterize = rasterize;
  doodle.penProfile = penProfile;
  doodle.hypot = hypot;
})(window.doodle = window.doodle || {});
