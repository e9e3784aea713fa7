// doodle's rasterizer (doodle/raster.py, render_flat), one drawing at a time: simplified strokes -> size x size
// uint8, white ink on black, pixel for pixel what doodle draws for training. The same steps in the same order:
// device coordinates in cairo's 1/256 pixel; strokes cut into chains whose y never turns back; on each of the 15
// sample lines per pixel row, a chain's interval is the min and max over its pens (a polygon looked up in a
// table) and its segments' sides (float32: Math.fround wherever numpy computes in float32); the chains of a
// stroke merged per line into disjoint pieces, spread over columns in float64 in the order doodle's bincount
// adds them, and the strokes composited row by row.
"use strict";
(function (doodle) {
  const SOURCE_SIDE = 256.0, SUBROWS = 15, TOLERANCE = 0.1, GRID = 256 * SUBROWS, QBITS = 10, NETWORK = 4;
  const Q1 = 1 << QBITS, BIG = 2 ** 26;
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

  // numpy's interp for one x (xp ascending; left and right of the points: the end values)
  function interp(x, xp, fp) {
    const last = xp.length - 1;
    if (x < xp[0]) return fp[0];
    if (x >= xp[last]) return fp[last];
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

  // doodle.raster._pen_table: the pen's half-width (1/1024 px, float32) on each line it crosses, for each of the
  // 256 phases of its centre; -Infinity past the pen.
  function penTable(radius) {
    const n = penVertices(radius), heights = [], widths = [];
    for (let i = 0; i <= Math.floor(n / 4); i++) {
      const a = 2 * Math.PI * i / n;
      if (a <= Math.PI / 2 + 1e-12) { heights.push(Math.sin(a) * radius); widths.push(Math.cos(a) * radius); }
    }
    const reach = radius * GRID, lowest = Math.floor(-reach) + 1, span = Math.ceil((reach - lowest) / 256) + 1;
    const half = new Float32Array(256 * span);
    for (let p = 0; p < 256; p++) {
      for (let t = 0; t < span; t++) {
        const offset = Math.abs(lowest + p + 256 * t);
        half[p * span + t] = offset >= reach ? -Infinity : interp(offset / GRID, heights, widths) * Q1;
      }
    }
    return {lowest, span, half};
  }

  const tables = new Map();

  function geometry(size, lineWidth, padding) {
    const totalPadding = 2.0 * padding + lineWidth;
    const scale = size / (SOURCE_SIDE + totalPadding);
    return {scale, shift: totalPadding / 2.0, r: lineWidth / 2.0 * scale};
  }

  // One stroke's chains: runs of segments whose y never turns back (level segments go with the direction before
  // them), each [first point, last point]; a turning point ends one chain and starts the next.
  function chains(my) {
    if (my.length === 1) return [[0, 0]];
    const out = [];
    let direction = null, begin = 0, last = 0;
    for (let s = 0; s + 1 < my.length; s++) {
      const dy = my[s + 1] - my[s];
      const d = s === 0 || dy !== 0 ? Math.sign(dy) : direction;
      if (s > 0 && d !== direction) { out.push([begin, s]); begin = s; }
      direction = d;
      last = s + 1;
    }
    out.push([begin, last]);
    return out;
  }

  function rasterize(strokes, size = 28, lineWidth = 16.0, padding = 16.0) {
    strokes = strokes.filter((s) => s[0].length);
    if (!strokes.length) throw new Error("nothing to rasterize: the drawing has no points");
    const {scale, shift, r} = geometry(size, lineWidth, padding);
    if (!tables.has(r)) tables.set(r, penTable(r));
    const {lowest, span, half} = tables.get(r);
    const nLines = size * SUBROWS, limit = size * Q1;

    let maxX = -Infinity, maxY = -Infinity;
    for (const [xs, ys] of strokes) for (let i = 0; i < xs.length; i++) { maxX = Math.max(maxX, xs[i]); maxY = Math.max(maxY, ys[i]); }
    const offX = (SOURCE_SIDE - maxX) / 2.0 + shift, offY = (SOURCE_SIDE - maxY) / 2.0 + shift, k = scale * 256;

    // Chains, with their lines: kmin..kmax clipped to the image, in whole pixel rows rmin .. rmin + rows - 1.
    const all = strokes.map(([xs, ys]) => {
      const mx = xs.map((v) => rint((v + offX) * k)), my = ys.map((v) => rint((v + offY) * k));
      const cs = chains(my).map(([p0, p1]) => {
        const k0s = [];
        for (let p = p0; p <= p1; p++) k0s.push(Math.floor((SUBROWS * my[p] + (lowest - 128 + 255)) / 256));
        const kmin = Math.max(Math.min(...k0s), 0), kmax = Math.min(Math.max(...k0s) + span - 1, nLines - 1);
        const rmin = Math.floor(kmin / SUBROWS), rows = Math.max(Math.floor(kmax / SUBROWS) - rmin + 1, 0);
        const left = new Float32Array(rows * SUBROWS).fill(Infinity), right = new Float32Array(rows * SUBROWS).fill(-Infinity);
        return {p0, p1, k0s, kmin, kmax, rmin, rows, left, right};
      });
      return {mx, my, chains: cs};
    });

    // Pens: every point of every chain (a turning point is in both of its chains).
    for (const {mx, my, chains: cs} of all) {
      for (const c of cs) {
        for (let p = c.p0; p <= c.p1; p++) {
          const m15 = SUBROWS * my[p], k0 = c.k0s[p - c.p0], phase = 256 * k0 + (128 - lowest) - m15;
          const x = f32(mx[p] * 4);
          for (let t = 0; t < span; t++) {
            const line = k0 + t, h = half[phase * span + t];
            if (line < 0 || line >= nLines || h === -Infinity) continue;
            const at = line - SUBROWS * c.rmin;
            c.left[at] = Math.min(c.left[at], f32(x - h));
            c.right[at] = Math.max(c.right[at], f32(x + h));
          }
        }
      }
    }

    // Sides: each segment moved r along its normal, between its tangent points; all left sides, then all right
    // ones, numbered line after line as doodle numbers them (its float64 arithmetic depends on that number).
    const sides = [];
    for (const side of [1, -1]) {
      for (const {mx, my, chains: cs} of all) {
        for (const c of cs) {
          for (let a = c.p0; a < c.p1; a++) {
            const dyi = my[a + 1] - my[a], flip = dyi < 0, pa = flip ? a + 1 : a, pb = flip ? a : a + 1;
            const x0 = mx[pa] * (1 / 256), y0 = my[pa] * (1 / 256), dx = mx[pb] * (1 / 256) - x0;
            const dy = Math.abs(dyi) * (1 / 256), steep = dy > 0;
            const inv = r / (steep ? hypot(dx, dy) : 1.0);
            const rux = dx * inv, ruy = dy * inv, slope = dx / (steep ? dy : 1.0);
            const yFrom = side > 0 ? y0 + rux : y0 - rux, xFrom = side > 0 ? x0 - ruy : x0 + ruy;
            const kLo = Math.max(Math.ceil(yFrom * SUBROWS - 0.5), c.kmin);
            const kHi = Math.min(Math.floor((yFrom + dy) * SUBROWS - 0.5), c.kmax);
            sides.push({c, side, xFrom, yFrom, slope, kLo, count: steep ? Math.max(kHi - kLo + 1, 0) : 0});
          }
        }
      }
    }
    let first = 0;
    for (const {c, side, xFrom, yFrom, slope, kLo, count} of sides) {
      const base = (xFrom + slope * ((kLo - first + 0.5) / SUBROWS - yFrom)) * Q1, step = slope * (Q1 / SUBROWS);
      for (let t = 0; t < count; t++) {
        const x = f32(base + step * (first + t)), at = kLo + t - SUBROWS * c.rmin;
        if (side > 0) c.left[at] = Math.min(c.left[at], x); else c.right[at] = Math.max(c.right[at], x);
      }
      first += count;
    }
    for (const {chains: cs} of all) {
      for (const c of cs) {
        for (let i = 0; i < c.left.length; i++) {
          const hi = Math.min(Math.max(c.right[i], 0), limit);
          c.left[i] = Math.min(Math.min(Math.max(c.left[i], 0), limit), hi);  // a line nothing covers: [0, 0]
          c.right[i] = hi;
        }
      }
    }

    // Per stroke row: its chains' lines merged into disjoint pieces, spread over the columns, composited.
    const through = new Float64Array(size * size).fill(1.0), touched = new Uint8Array(size);
    for (const {chains: cs} of all) {
      const on = cs.filter((c) => c.rows > 0);
      if (!on.length) continue;
      const top = Math.min(...on.map((c) => c.rmin)), bottom = Math.max(...on.map((c) => c.rmin + c.rows - 1));
      for (let row = top; row <= bottom; row++) {
        const here = on.filter((c) => c.rmin <= row && row < c.rmin + c.rows);
        touched[row] = 1;
        if (!here.length) continue;
        const cover = spread(pieces(here, row), size);
        for (let col = 0; col < size; col++) through[row * size + col] *= 1.0 - cover[col] * (1.0 / (SUBROWS * Q1));
      }
    }
    const out = new Uint8Array(size * size);
    for (let row = 0; row < size; row++) {
      if (!touched[row]) continue;
      for (let c = 0; c < size; c++) out[row * size + c] = Math.min(255, Math.max(0, rint(255.0 - through[row * size + c] * 255.0)));
    }
    return out;
  }

  // doodle.raster._merge for one stroke row: [lo, hi] pieces in doodle's order. One chain: its lines as they are;
  // up to NETWORK: both ends sorted per line, piece j from max(lo_j, hi_j-1) to hi_j, piece after piece; more:
  // the same on ends cut to whole 1/1024 px, line after line.
  function pieces(here, row) {
    const lines = (c) => [c.left.subarray((row - c.rmin) * SUBROWS), c.right.subarray((row - c.rmin) * SUBROWS)];
    const rows = here.map(lines), m = rows.length, out = [];
    if (m === 1) {
      for (let l = 0; l < SUBROWS; l++) out.push([rows[0][0][l], rows[0][1][l]]);
      return out;
    }
    const cut = m > NETWORK ? Math.trunc : (v) => v;
    const sorted = [];
    for (let l = 0; l < SUBROWS; l++) {
      const lo = rows.map(([left]) => cut(left[l])).sort((a, b) => a - b);
      const hi = rows.map(([, right]) => cut(right[l])).sort((a, b) => a - b);
      sorted.push(lo.map((v, j) => [j ? Math.max(v, hi[j - 1]) : v, hi[j]]));
    }
    if (m > NETWORK) for (let l = 0; l < SUBROWS; l++) out.push(...sorted[l]);
    else for (let j = 0; j < m; j++) for (let l = 0; l < SUBROWS; l++) out.push(sorted[l][j]);
    return out;
  }

  // Pieces -> each column's coverage * 15 * 1024: starts and ends as doodle's two bincounts add them (a step of
  // 2**26 per piece beside its fractions), then the running sum of the steps.
  function spread(list, size) {
    const width = size + 2, starts = new Float64Array(width), ends = new Float64Array(width);
    for (const [lo] of list) {
      const cs = Math.floor(lo * (1 / Q1));
      starts[cs] += f32(cs * Q1 - lo) + BIG;
    }
    for (const [, hi] of list) {
      const ce = Math.floor(hi * (1 / Q1));
      ends[ce] += f32(hi - ce * Q1) - BIG;
    }
    const cover = new Float64Array(width), steps = new Float64Array(width);
    for (let col = 0; col < width; col++) {
      cover[col] = starts[col] + ends[col];
      steps[col] = rint(cover[col] * (1 / BIG));
      cover[col] -= steps[col] * BIG;
    }
    for (let col = 1; col < size; col++) steps[col] += steps[col - 1];
    for (let col = 0; col < width; col++) cover[col] += steps[col] * Q1;
    return cover;
  }

  doodle.rasterize = rasterize;
  doodle.penTable = penTable;
  doodle.hypot = hypot;
})(window.doodle = window.doodle || {});
