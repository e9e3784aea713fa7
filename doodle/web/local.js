// `doodle play`'s API answered in the page itself, for an exported folder on a static host: the model runs here
// (network.js), and a saved drawing is kept in this browser until "Download my drawings" writes them all as one
// ndjson file of Google's raw records, as `doodle play` saves them. Nothing is ever sent anywhere.
"use strict";
(function (doodle) {
  // localStorage key of the saved records (one JSON line each): per page, so two exports on one site keep theirs apart
  const STORE = `doodle-drawings:${location.pathname}`;
  const LIMITS = {points: 20000, strokes: 1000};  // as doodle play's
  let loading = null;

  function network() {
    if (!loading) loading = doodle.loadNetwork();
    return loading;
  }

  function top(net, p, k) {
    const order = [...p.keys()].sort((a, b) => p[b] - p[a] || a - b);  // ties in class order, as doodle predict
    return order.slice(0, k).map((j) => ({category: net.classes[j], probability: p[j]}));
  }

  function rows(bitmap, size) {
    const out = [];
    for (let y = 0; y < size; y++) out.push(Array.from(bitmap.subarray(y * size, (y + 1) * size)));
    return out;
  }

  function checked(drawing) {
    if (!Array.isArray(drawing)) throw new Error("'drawing' must be a list of strokes [xs, ys, ts]");
    const strokes = drawing.filter((s) => Array.isArray(s) && Array.isArray(s[0]) && s[0].length);
    const points = strokes.reduce((n, s) => n + s[0].length, 0);
    if (!strokes.length) throw new Error("empty drawing: no points to guess from");
    if (strokes.length > LIMITS.strokes || points > LIMITS.points) throw new Error(`drawing over ${LIMITS.points} points or ${LIMITS.strokes} strokes`);
    return strokes;
  }

  function saved() {
    if (!stored) return memory;  // localStorage would answer with what it held before a refused write
    try {
      return (localStorage.getItem(STORE) || "").split("\n").filter(Boolean);
    } catch (e) {
      return memory;
    }
  }
  let memory = [];  // when localStorage is refused (a private window, file quotas)
  let stored = true;  // whether localStorage holds every drawing (its last write went through)

  function keep(lines) {
    memory = lines;
    try {
      localStorage.setItem(STORE, lines.join("\n"));
      stored = true;
    } catch (e) {
      stored = false;  // kept in memory for this visit
    }
    showCount();
  }

  function stamp(d) {
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:` +
      `${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}000 UTC`;
  }

  function keyId() {
    const digits = crypto.getRandomValues(new Uint8Array(15)).reduce((s, b) => s + (b % 10), "");
    return `${1 + (crypto.getRandomValues(new Uint8Array(1))[0] % 9)}${digits}`;
  }

  async function api(path, body) {
    const net = await network();
    const [route, query] = path.split("?");
    if (route === "/api/model") {
      const d = net.desc;
      return {run: d.run, path: d.run, save_dir: "this browser", categories: net.classes, raster: net.raster,
              test_accuracy: d.source ? d.source.test_accuracy : null, confidence: d.confidence, limits: LIMITS,
              exported: true};
    }
    if (route === "/api/predict") {
      const k = Math.min(Number(new URLSearchParams(query).get("top_k")) || 5, net.classes.length);
      const g = doodle.guess(net, checked(body.drawing));
      return {top: top(net, g.probabilities, k), bitmap: rows(g.bitmap, net.size)};
    }
    if (route === "/api/save") {
      if (!net.classes.includes(body.word)) throw new Error(`unknown word ${JSON.stringify(body.word)}`);
      const strokes = checked(body.drawing);
      const best = top(net, doodle.guess(net, strokes).probabilities, 1);
      const record = {key_id: keyId(), word: body.word, countrycode: "ZZ", timestamp: stamp(new Date()),
                      recognized: best[0].category === body.word, drawing: strokes};
      const lines = [...saved(), JSON.stringify(record)];
      keep(lines);
      return {saved: `this browser (${lines.length} drawing${lines.length === 1 ? "" : "s"} so far; "Download my drawings" keeps them in a file)`,
              key_id: record.key_id, recognized: record.recognized, word: body.word, top: best};
    }
    throw new Error(`no such call: ${route}`);
  }

  // ------------------------------------------------------------ "Download my drawings"

  let button = null;

  function showCount() {
    if (!button) return;
    const n = saved().length;
    button.textContent = `Download my drawings (${n})`;
    button.disabled = n === 0;
  }

  function download() {
    const lines = saved();
    if (!lines.length) return;
    const blob = new Blob([lines.join("\n") + "\n"], {type: "application/x-ndjson"});
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "my-drawings.ndjson";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function addButton() {
    const where = document.getElementById("save-dir");
    button = document.createElement("button");
    button.type = "button";
    button.id = "download";
    button.title = "Your saved drawings as one ndjson file (Google's raw format)";
    button.addEventListener("click", download);
    if (where) where.after(" ", button); else document.body.appendChild(button);
    showCount();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", addButton); else addButton();
  network().catch(() => {});  // start loading at once; the page's first call reports a failure
  window.doodleLocal = {api, saved, download, network, clear: () => keep([])};
})(window.doodle = window.doodle || {});
