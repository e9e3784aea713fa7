// doodle play: draw, and the network guesses while you draw.
// The page records strokes in Quick, Draw!'s raw format, [xs, ys, ts] per stroke (canvas pixels,
// milliseconds since the first touch), and sends them to the server, which prepares them exactly as
// the training drawings were prepared. No pixels of this canvas ever reach the model.
"use strict";

const ROUND_SECONDS = 20;
const THROTTLE_MS = 200;  // a guess at most this often while a stroke is being drawn
const TOP_K = 5;

const $ = (id) => document.getElementById(id);
const el = {
  pad: $("pad"), wrap: $("pad-wrap"), hint: $("pad-hint"), bitmap: $("bitmap"),
  guesses: $("guesses"), guessLine: $("guess-line"), categories: $("categories"), catCount: $("cat-count"),
  target: $("target"), taskLabel: $("task-label"), clock: $("clock"), clockText: $("clock-text"),
  timebar: $("timebar"), timebarFill: $("timebar-fill"), overlay: $("overlay"), overlayKicker: $("overlay-kicker"),
  overlayTitle: $("overlay-title"), overlayText: $("overlay-text"), overlayGo: $("overlay-go"),
  undo: $("undo"), clear: $("clear"), next: $("next"), save: $("save"), saveGroup: $("save-group"),
  saveWord: $("save-word"), status: $("status"), history: $("history"), rounds: $("rounds"), tally: $("tally-score"),
  modeGame: $("mode-game"), modeFree: $("mode-free"), modelName: $("model-name"), saveDir: $("save-dir"),
};

const state = {
  categories: [],
  mode: "game",          // "game" or "free"
  phase: "ready",        // game: "ready" (card shown), "playing", "over"
  target: null,
  roundStart: 0,
  strokes: [],           // finished strokes, each {xs, ys, ts}
  current: null,         // the stroke being drawn
  pointerId: null,
  t0: null,              // performance.now() at the drawing's first touch
  base: 0,               // canvas CSS width when the drawing began (strokes are in those pixels)
  version: 0,            // bumped on every change that makes older guesses stale
  lastGuess: null,
  saveWordTouched: false,
  played: 0, won: 0,
};

// ---------------------------------------------------------------- the API

async function api(path, body) {
  if (window.doodleLocal) return window.doodleLocal.api(path, body);  // a page from `doodle export`: no server
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  let data;
  try { data = await response.json(); } catch (e) { data = {error: `server answered ${response.status}`}; }
  if (!response.ok) throw new Error(data.error || `server answered ${response.status}`);
  return data;
}

function rawDrawing() {
  const all = state.current ? [...state.strokes, state.current] : state.strokes;
  return all.filter((s) => s.xs.length).map((s) => [s.xs, s.ys, s.ts]);
}

// One request in flight at most; a request asked for meanwhile goes out when it returns, with the
// strokes of that moment. Answers for a drawing that has since been undone or cleared are dropped.
let inFlight = false, wanted = false, lastSent = 0;

function requestGuess() {
  if (inFlight) { wanted = true; return; }
  const drawing = rawDrawing();
  if (!drawing.length) { showGuesses(null); return; }
  inFlight = true;
  document.body.dataset.guessing = "1";  // "0" once the guess for the latest strokes is shown
  lastSent = performance.now();
  const version = state.version;
  api(`/api/predict?top_k=${TOP_K}`, {drawing})
    .then((data) => { if (version === state.version) showGuesses(data, drawing); })
    .catch((err) => setStatus(err.message, "bad"))
    .finally(() => {
      inFlight = false;
      document.body.dataset.guessing = "0";
      if (wanted) { wanted = false; requestGuess(); }
    });
}

// ---------------------------------------------------------------- the canvas

const ctx = el.pad.getContext("2d");

function fitCanvas() {
  const rect = el.pad.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  el.pad.width = Math.round(rect.width * dpr);
  el.pad.height = Math.round(rect.height * dpr);
  redraw();
}

function penScale() {
  // strokes are kept in the pixels of the canvas size they were drawn at; a resized canvas scales them
  const width = el.pad.getBoundingClientRect().width || 1;
  return state.base ? width / state.base : 1;
}

function setPen() {
  const dpr = el.pad.width / (el.pad.getBoundingClientRect().width || 1);
  const s = penScale();
  ctx.setTransform(dpr * s, 0, 0, dpr * s, 0, 0);
  ctx.lineWidth = Math.max(3, el.pad.getBoundingClientRect().width / 110) / s;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#1d1d1f";
}

function drawStroke(s, from) {
  const n = s.xs.length;
  if (!n) return;
  ctx.beginPath();
  const i0 = Math.max(0, from);
  ctx.moveTo(s.xs[i0], s.ys[i0]);
  if (n === 1) ctx.lineTo(s.xs[0] + 0.01, s.ys[0]);  // a dot
  for (let i = i0 + 1; i < n; i++) ctx.lineTo(s.xs[i], s.ys[i]);
  ctx.stroke();
}

function redraw() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, el.pad.width, el.pad.height);
  setPen();
  for (const s of state.strokes) drawStroke(s, 0);
  if (state.current) drawStroke(state.current, 0);
  el.hint.hidden = state.strokes.length > 0 || state.current !== null;
  el.undo.disabled = el.clear.disabled = state.strokes.length === 0 || !canDraw();
}

function canDraw() {
  return state.mode === "free" || state.phase === "playing";
}

function point(e) {
  const rect = el.pad.getBoundingClientRect();
  const s = penScale();
  const r2 = (v) => Math.round(v * 100) / 100;
  return [r2((e.clientX - rect.left) / s), r2((e.clientY - rect.top) / s)];
}

function addPoint(e) {
  const s = state.current;
  const [x, y] = point(e);
  const n = s.xs.length;
  if (n && s.xs[n - 1] === x && s.ys[n - 1] === y) return;
  s.xs.push(x);
  s.ys.push(y);
  s.ts.push(Math.max(0, Math.round(e.timeStamp - state.t0)));
}

el.pad.addEventListener("pointerdown", (e) => {
  if (!e.isPrimary || e.button !== 0 || state.current || !canDraw()) return;
  e.preventDefault();
  el.pad.setPointerCapture(e.pointerId);
  if (state.t0 === null) {
    state.t0 = e.timeStamp;
    state.base = el.pad.getBoundingClientRect().width;
  }
  state.pointerId = e.pointerId;
  state.current = {xs: [], ys: [], ts: []};
  addPoint(e);
  setPen();
  drawStroke(state.current, 0);
  el.hint.hidden = true;
});

el.pad.addEventListener("pointermove", (e) => {
  if (e.pointerId !== state.pointerId || !state.current) return;
  const s = state.current;
  const before = s.xs.length;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of (events.length ? events : [e])) addPoint(ev);
  if (s.xs.length > before) drawStroke(s, before - 1);
  if (performance.now() - lastSent > THROTTLE_MS) requestGuess();
});

function endStroke(e) {
  if (e.pointerId !== state.pointerId || !state.current) return;
  const s = state.current;
  state.current = null;
  state.pointerId = null;
  if (s.xs.length) state.strokes.push(s);
  state.version++;
  redraw();
  requestGuess();
}
el.pad.addEventListener("pointerup", endStroke);
el.pad.addEventListener("pointercancel", endStroke);
el.pad.addEventListener("contextmenu", (e) => e.preventDefault());

function undo() {
  if (state.current || !state.strokes.length || !canDraw()) return;
  state.strokes.pop();
  state.version++;
  redraw();
  requestGuess();
}

function userClear() {
  if (canDraw()) clearDrawing();  // a finished round's drawing stays until the next round
}

function clearDrawing() {
  state.strokes = [];
  state.current = null;
  state.pointerId = null;
  state.t0 = null;
  state.base = 0;
  state.version++;
  redraw();
  showGuesses(null);
}

// ---------------------------------------------------------------- guesses and the bitmap

function buildGuesses() {
  el.guesses.innerHTML = "";
  for (let i = 0; i < Math.min(TOP_K, state.categories.length); i++) {
    const li = document.createElement("li");
    li.className = "empty";
    li.innerHTML = '<span class="name"></span><span class="pct"></span><span class="track"><span class="fill"></span></span>';
    el.guesses.appendChild(li);
  }
}

function showGuesses(data, drawing) {
  state.lastGuess = data;
  const rows = el.guesses.children;
  const top = data ? data.top : [];
  for (let i = 0; i < rows.length; i++) {
    const li = rows[i], g = top[i];
    li.className = g ? (g.category === state.target && state.mode === "game" ? "target" : "") : "empty";
    li.dataset.category = g ? g.category : "";
    li.querySelector(".name").textContent = g ? g.category : "";
    li.querySelector(".pct").textContent = g ? `${(g.probability * 100).toFixed(g.probability < 0.1 ? 1 : 0)}%` : "";
    li.querySelector(".fill").style.width = g ? `${(g.probability * 100).toFixed(1)}%` : "0";
  }
  drawBitmap(data ? data.bitmap : null);
  for (const chip of el.categories.children) chip.classList.toggle("top", !!top.length && chip.dataset.category === top[0].category);
  el.guessLine.innerHTML = "";
  if (!top.length) {
    el.guessLine.textContent = state.mode === "game" && state.phase === "playing" ? "I'm watching\u2026" : "Draw something and I will guess.";
  } else {
    const [a, b] = top;
    const line = top[0].probability >= 0.6 ? ["I see ", a.category, ""]
      : b ? ["Hmm\u2026 ", a.category, `, or ${b.category}?`] : ["Maybe ", a.category, "?"];
    el.guessLine.append(line[0]);
    const strong = document.createElement("b");
    strong.textContent = line[1];
    el.guessLine.append(strong, line[2]);
  }
  if (!state.saveWordTouched && top.length) el.saveWord.value = top[0].category;
  if (state.mode === "game" && state.phase === "playing" && top.length && top[0].category === state.target) {
    endRound(true, drawing);  // the drawing kept is the one that was recognised, as in Quick, Draw!'s data
  }
}

const bctx = el.bitmap.getContext("2d");

function drawBitmap(rows) {
  const n = rows ? rows.length : el.bitmap.width;
  if (el.bitmap.width !== n) { el.bitmap.width = n; el.bitmap.height = n; }
  const img = bctx.createImageData(n, n);
  if (rows) {
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const v = rows[y][x], i = 4 * (y * n + x);
        img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
        img.data[i + 3] = 255;
      }
    }
  } else {
    for (let i = 3; i < img.data.length; i += 4) img.data[i] = 255;
  }
  bctx.putImageData(img, 0, 0);
}

// ---------------------------------------------------------------- the game

let clockTimer = null;

function pick() {
  const others = state.categories.filter((c) => c !== state.target);
  const pool = others.length ? others : state.categories;
  return pool[Math.floor(Math.random() * pool.length)];
}

function newRound(word) {
  if (state.mode !== "game") setMode("game");
  stopClock();
  clearDrawing();
  state.target = word && state.categories.includes(word) ? word : pick();
  state.phase = "ready";
  el.wrap.classList.remove("won", "lost");
  el.target.textContent = state.target;
  el.overlayKicker.textContent = "Draw";
  el.overlayTitle.textContent = state.target;
  el.overlayText.textContent = `in under ${ROUND_SECONDS} seconds`;
  el.overlayGo.innerHTML = "Go <kbd>Enter</kbd>";
  el.overlay.hidden = false;
  showClock(ROUND_SECONDS);
  markTarget();
  setStatus("");
  el.overlayGo.focus({preventScroll: true});
}

function startRound() {
  if (state.phase === "over") { newRound(); return; }
  if (state.phase !== "ready") return;
  state.phase = "playing";
  el.overlay.hidden = true;
  state.roundStart = performance.now();
  clockTimer = setInterval(tick, 100);
  showGuesses(null);
}

function tick() {
  const left = ROUND_SECONDS - (performance.now() - state.roundStart) / 1000;
  showClock(Math.max(0, left));
  if (left <= 0) endRound(false);
}

function showClock(left) {
  el.clockText.textContent = Math.ceil(left).toString();
  el.timebarFill.style.transform = `scaleX(${left / ROUND_SECONDS})`;
  const low = left <= 5 && state.phase === "playing";
  el.clock.classList.toggle("low", low);
  el.timebar.classList.toggle("low", low);
}

function stopClock() {
  if (clockTimer) clearInterval(clockTimer);
  clockTimer = null;
}

function endRound(won, recognised) {
  if (state.phase !== "playing") return;
  stopClock();
  if (state.current) {  // the clock ran out mid-stroke: that stroke still counts
    if (state.current.xs.length) state.strokes.push(state.current);
    state.current = null;
    state.pointerId = null;
  }
  state.phase = "over";
  redraw();
  const seconds = (performance.now() - state.roundStart) / 1000;
  state.played++;
  if (won) state.won++;
  el.tally.textContent = `${state.won} / ${state.played}`;
  el.wrap.classList.add(won ? "won" : "lost");
  const li = document.createElement("li");
  li.className = won ? "won" : "";
  li.textContent = `${won ? "\u2713" : "\u2717"} ${state.target}${won ? ` ${seconds.toFixed(1)}s` : ""}`;
  el.history.appendChild(li);
  el.rounds.hidden = false;
  const said = won ? `Got it in ${seconds.toFixed(1)} s: it's ${state.target}! ` : `Time's up: the network did not see ${state.target}. `;
  setStatus(said, won ? "good" : "bad");
  const drawing = recognised || rawDrawing();
  if (drawing.length) save(state.target, drawing, said, won ? "good" : "bad");  // every finished game drawing is kept
  setTimeout(() => {
    if (state.phase !== "over" || state.mode !== "game") return;
    el.overlayKicker.textContent = won ? "Got it" : "Time's up";
    el.overlayTitle.textContent = state.target;
    el.overlayText.textContent = won ? `guessed in ${seconds.toFixed(1)} seconds` : "the network could not tell";
    el.overlayGo.innerHTML = "Next <kbd>N</kbd>";
    el.overlay.hidden = false;
  }, 1400);
}

function markTarget() {
  for (const chip of el.categories.children) {
    chip.classList.toggle("target", state.mode === "game" && chip.dataset.category === state.target);
  }
}

// ---------------------------------------------------------------- saving and modes

function save(word, drawing, said = "", kind = "good") {
  // `said` is the status line to keep in front of the outcome
  return api("/api/save", {word, drawing})
    .then((r) => setStatus(`${said}Saved to ${r.saved}.`, kind))
    .catch((err) => setStatus(`${said}Not saved: ${err.message}`, "bad"));
}

function saveFree() {
  if (state.mode !== "free" || state.current) return;
  const drawing = rawDrawing();
  if (!drawing.length) { setStatus("Nothing to save yet: draw something first.", "bad"); return; }
  setStatus("");
  save(el.saveWord.value, drawing);
}

function setMode(mode) {
  state.mode = mode;
  document.body.classList.toggle("free", mode === "free");
  el.modeGame.setAttribute("aria-pressed", String(mode === "game"));
  el.modeFree.setAttribute("aria-pressed", String(mode === "free"));
  el.saveGroup.hidden = mode !== "free";
  stopClock();
  if (mode === "free") {
    state.phase = "ready";
    state.target = null;
    el.overlay.hidden = true;
    el.wrap.classList.remove("won", "lost");
    el.taskLabel.textContent = "Free draw:";
    el.target.textContent = "anything from the list";
    markTarget();
    clearDrawing();
    setStatus("");
  } else {
    el.taskLabel.textContent = "Draw:";
    newRound();
  }
}

function setStatus(text, kind) {
  el.status.textContent = text;
  el.status.className = `status ${kind || ""}`.trim();
}

// ---------------------------------------------------------------- wiring

el.undo.addEventListener("click", undo);
el.clear.addEventListener("click", userClear);
el.next.addEventListener("click", () => newRound());
el.save.addEventListener("click", saveFree);
el.overlayGo.addEventListener("click", startRound);
el.modeGame.addEventListener("click", () => { if (state.mode !== "game") setMode("game"); });
el.modeFree.addEventListener("click", () => { if (state.mode !== "free") setMode("free"); });
el.saveWord.addEventListener("change", () => { state.saveWordTouched = true; });
el.categories.addEventListener("click", (e) => {
  const chip = e.target.closest("li");
  if (chip && state.mode === "free") { el.saveWord.value = chip.dataset.category; state.saveWordTouched = true; }
});

document.addEventListener("keydown", (e) => {
  if (e.target.closest && e.target.closest("select, input, textarea")) return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (key === "z") undo();
  else if (key === "c" || key === "escape") userClear();
  else if (key === "n") newRound();
  else if (key === "s") saveFree();
  else if (key === "m") setMode(state.mode === "game" ? "free" : "game");
  else if ((key === "enter" || key === " ") && !el.overlay.hidden) { e.preventDefault(); startRound(); }
  else return;
});

window.addEventListener("resize", fitCanvas);

async function init() {
  fitCanvas();
  drawBitmap(null);
  try {
    const info = await api("/api/model");
    state.categories = info.categories;
    el.modelName.textContent = info.run;
    el.saveDir.textContent = info.save_dir;
    el.catCount.textContent = `(${info.categories.length})`;
    for (const c of info.categories) {
      const li = document.createElement("li");
      li.textContent = c;
      li.dataset.category = c;
      el.categories.appendChild(li);
      el.saveWord.appendChild(new Option(c, c));
    }
    buildGuesses();
    const params = new URLSearchParams(location.search);
    if (params.get("mode") === "free") setMode("free");
    else newRound(params.get("word"));
    document.body.dataset.ready = "1";
  } catch (err) {
    setStatus(`Cannot reach the model: ${err.message}`, "bad");
  }
}

init();
