// doodle play: draw, and the network guesses while you draw.
// The page records strokes in Quick, Draw!'s raw format, [xs, ys, ts] per stroke (canvas pixels,
// milliseconds since the first touch), and sends them to the server, which prepares them exactly as
// the training drawings were prepared. No pixels of this canvas ever reach the model.
//
// Sections, in order: settings; the API; stroke capture (the canvas); the guesses view; the game
// (6 rounds, then the drawings); free drawing (the word to save under); keys; start-up.
"use strict";

// ---------------------------------------------------------------- settings

const params = new URLSearchParams(location.search);

function setting(name, fallback, lo, hi) {
  const v = Number(params.get(name));
  return params.has(name) && Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
}

// The query string can shorten a game (the browser tests use ?seconds=2&pause=0): the defaults are Quick, Draw!'s.
const SETTINGS = {
  roundSeconds: setting("seconds", 20, 0.5, 120),
  rounds: Math.round(setting("rounds", 6, 1, 20)),
  pauseMs: setting("pause", 1500, 0, 10000),  // the result, then the next word: each shown this long
  words: (params.get("words") || params.get("word") || "").split(",").map((w) => w.trim()).filter(Boolean),
  mode: ["free", "teach"].includes(params.get("mode")) ? params.get("mode") : "game",
};
const THROTTLE_MS = 200;  // a guess at most this often while a stroke is being drawn
const TOP_K = 5;
const MIN_INK = 0.2;  // no guess before the strokes are this long in all (in canvas widths): a dot says nothing

const $ = (id) => document.getElementById(id);
const el = {
  pad: $("pad"), wrap: $("pad-wrap"), hint: $("pad-hint"), bitmap: $("bitmap"),
  guesses: $("guesses"), guessLine: $("guess-line"), rule: $("rule"), categories: $("categories"),
  catCount: $("cat-count"), target: $("target"), taskLabel: $("task-label"), clock: $("clock"),
  clockText: $("clock-text"), roundNo: $("round-no"), timebar: $("timebar"), timebarFill: $("timebar-fill"),
  overlay: $("overlay"), overlayKicker: $("overlay-kicker"), overlayTitle: $("overlay-title"),
  overlayText: $("overlay-text"), overlayGo: $("overlay-go"), countdown: $("countdown"),
  countdownFill: $("countdown-fill"), summary: $("summary"), summaryTitle: $("summary-title"),
  drawings: $("drawings"), again: $("again"), tools: $("tools"), undo: $("undo"), clear: $("clear"),
  skip: $("skip"), save: $("save"), saveGroup: $("save-group"), saveLabel: $("save-label"),
  saveWord: $("save-word"), status: $("status"), history: $("history"), rounds: $("rounds"),
  tally: $("tally-score"), modeGame: $("mode-game"), modeFree: $("mode-free"), modelName: $("model-name"),
  saveDir: $("save-dir"), why: $("why"), whyWord: $("why-word"), whyPixels: $("why-pixels"),
  whyStrokes: $("why-strokes"),
};

const state = {
  categories: [],
  confidence: {threshold: 0.9, precision: 0.9, source: "default"},  // replaced by /api/model's
  mode: "game",          // "game" or "free"
  strokes: [],           // finished strokes, each {xs, ys, ts}
  current: null,         // the stroke being drawn
  pointerId: null,
  t0: null,              // event time of the drawing's first touch
  base: 0,               // canvas CSS width when the drawing began (strokes are in those pixels)
  version: 0,            // bumped on every change that makes older guesses stale
  lastGuess: null,       // the latest /api/predict answer shown, or null
};

// ---------------------------------------------------------------- the API

const SERVER_GONE = "The doodle server is not answering: it was stopped, or its terminal closed. " +
  "Start it again with `doodle play`, then reload this page.";

async function api(path, body) {
  if (window.doodleLocal) return window.doodleLocal.api(path, body);  // a page from `doodle export`: no server
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {  // no answer at all (a fetch that reached the server rejects only on a bad URL)
    throw new Error(SERVER_GONE);
  }
  let data;
  try { data = await response.json(); } catch (e) { data = {error: `server answered ${response.status}`}; }
  if (!response.ok) throw new Error(data.error || `server answered ${response.status}`);
  return data;
}

const fetchModel = () => api("/api/model");
const fetchGuess = (drawing) => api(`/api/predict?top_k=${TOP_K}&explain=1`, {drawing});  // with its "why?"
const saveDrawing = (word, drawing) => api("/api/save", {word, drawing});

// ---------------------------------------------------------------- stroke capture

const ctx = el.pad.getContext("2d");

function fitCanvas() {
  const rect = el.pad.getBoundingClientRect();
  if (!rect.width) return;  // hidden (the end of a game): fitted again when shown
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
  return state.mode !== "game" || game.phase === "playing";
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

function rawDrawing() {
  const all = state.current ? [...state.strokes, state.current] : state.strokes;
  return all.filter((s) => s.xs.length).map((s) => [s.xs, s.ys, s.ts]);
}

function inkLength(drawing) {
  // the strokes' total length in canvas widths (the drawing is rescaled to fill the model's input, so
  // only this tells a dot from a drawing)
  let length = 0;
  for (const [xs, ys] of drawing) {
    for (let i = 1; i < xs.length; i++) length += Math.hypot(xs[i] - xs[i - 1], ys[i] - ys[i - 1]);
  }
  return state.base ? length / state.base : 0;
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
  drawingChanged();
}
el.pad.addEventListener("pointerup", endStroke);
el.pad.addEventListener("pointercancel", endStroke);
el.pad.addEventListener("contextmenu", (e) => e.preventDefault());

function drawingChanged() {
  state.version++;
  const empty = !state.strokes.length && !state.current;
  if (empty) {  // whatever comes next is a new drawing
    state.t0 = null;
    state.base = 0;
  }
  freeDrawingChanged(empty);
  redraw();
  requestGuess();
}

function undo() {
  if (state.current || !state.strokes.length || !canDraw()) return;
  state.strokes.pop();
  drawingChanged();
}

function userClear() {
  if (canDraw()) clearDrawing();  // a finished round's drawing stays until the next round
}

function clearDrawing() {
  state.strokes = [];
  state.current = null;
  state.pointerId = null;
  drawingChanged();
}

// ---------------------------------------------------------------- guesses: asking, and the view

// One request in flight at most; a request asked for meanwhile goes out when it returns, with the
// strokes of that moment. Answers for a drawing that has since been undone or cleared are dropped.
let inFlight = false, wanted = false, lastSent = 0;

function requestGuess() {
  if (inFlight) { wanted = true; return; }
  const drawing = rawDrawing();
  if (inkLength(drawing) < MIN_INK) {  // nothing to ask yet
    showGuesses(null, drawing);
    document.body.dataset.guessing = "0";
    return;
  }
  inFlight = true;
  document.body.dataset.guessing = "1";  // "0" once the guess for the latest strokes is shown
  lastSent = performance.now();
  const version = state.version;
  fetchGuess(drawing)
    .then((data) => { if (version === state.version) showGuesses(data, drawing); })
    .catch((err) => setStatus(err.message, "bad"))
    .finally(() => {
      inFlight = false;
      if (wanted) { wanted = false; requestGuess(); } else document.body.dataset.guessing = "0";
    });
}

function buildGuesses() {
  el.guesses.innerHTML = "";
  for (let i = 0; i < Math.min(TOP_K, state.categories.length); i++) {
    const li = document.createElement("li");
    li.className = "empty";
    li.innerHTML = '<span class="name"></span><span class="pct"></span><span class="track"><span class="fill"></span></span>';
    el.guesses.appendChild(li);
  }
}

const percent = (p) => `${(p * 100).toFixed(p < 0.1 ? 1 : 0)}%`;

// What the network says about a drawing: nothing drawn, too little ink, a guess below the threshold
// (not sure), or "I see" (the calibrated confidence reaches the threshold chosen on validation).
function verdict(top, drawing) {
  if (!drawing.length) return {kind: "empty"};
  if (!top || !top.length) return {kind: "ink"};
  return {kind: top[0].probability >= state.confidence.threshold ? "sure" : "unsure", ...top[0]};
}

const SAYINGS = {
  empty: () => [game.phase === "playing" ? "I'm watching\u2026" : "Draw something and I will guess."],
  ink: () => ["Keep drawing\u2026"],
  unsure: () => ["I'm not sure yet\u2026"],
  sure: (v) => ["I see ", v.category],
};

function showGuesses(data, drawing) {
  state.lastGuess = data;
  const top = data ? data.top : [];
  const rows = el.guesses.children;
  for (let i = 0; i < rows.length; i++) {
    const li = rows[i], g = top[i];
    li.className = g ? (g.category === game.target && state.mode === "game" ? "target" : "") : "empty";
    li.dataset.category = g ? g.category : "";
    li.querySelector(".name").textContent = g ? g.category : "";
    li.querySelector(".pct").textContent = g ? percent(g.probability) : "";
    li.querySelector(".fill").style.width = g ? `${(g.probability * 100).toFixed(1)}%` : "0";
  }
  drawBitmap(data ? data.bitmap : null);
  drawWhy(data ? data.why : null, data ? data.bitmap : null, drawing);
  for (const chip of el.categories.children) chip.classList.toggle("top", !!top.length && chip.dataset.category === top[0].category);
  const v = verdict(top, drawing);
  say(SAYINGS[v.kind](v));
  document.body.dataset.verdict = v.kind;
  followTopGuess(top);
  if (v.kind === "sure") roundRecognised(v, drawing);
}

function say([text, word]) {
  // the line is a live region: rewrite it only when what it says changes
  if (el.guessLine.textContent === text + (word || "")) return;
  el.guessLine.textContent = text;
  if (word) {
    const strong = document.createElement("b");
    strong.textContent = word;
    el.guessLine.append(strong);
  }
}

function showRule() {
  const {threshold, precision, source} = state.confidence;
  el.rule.textContent = source === "validation"
    ? `"I see" from ${percent(threshold)} sure: on validation drawings, guesses that sure were right ` +
      `${percent(precision)} of the time.`
    : `"I see" from ${percent(threshold)} sure (a default: this model was trained before doodle measured it).`;
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

// The "why?" view: the top guess's saliency over the 28x28 bitmap, and the strokes coloured by what each
// adds to its probability, on doodle explain's diverging scale (red for, blue against, white neither).
const RDBU = [[33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43]];

function diverging(v, vmax) {
  const t = (Math.max(-1, Math.min(1, vmax > 0 ? v / vmax : 0)) + 1) / 2 * (RDBU.length - 1);
  const i = Math.min(RDBU.length - 2, Math.floor(t)), f = t - i;
  return RDBU[i].map((c, k) => Math.round(c + f * (RDBU[i + 1][k] - c)));
}

function drawWhy(why, bitmap, drawing) {
  el.whyWord.textContent = why ? why.category : "\u2026";
  const pixels = el.whyPixels, pc = pixels.getContext("2d");
  const n = why ? why.saliency.length : pixels.width;
  if (pixels.width !== n) { pixels.width = n; pixels.height = n; }
  const img = pc.createImageData(n, n);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const i = 4 * (y * n + x);
      // the map's colour, darkened where there is ink (as in doodle explain's pictures)
      const rgb = why ? diverging(why.saliency[y][x], why.scale) : [255, 255, 255];
      const shade = bitmap ? 1 - 0.45 * bitmap[y][x] / 255 : 1;
      for (let k = 0; k < 3; k++) img.data[i + k] = Math.round(rgb[k] * shade);
      img.data[i + 3] = 255;
    }
  }
  pc.putImageData(img, 0, 0);
  const given = why && why.strokes;  // null for a drawing too long to re-render once per stroke
  const top = given ? Math.max(...given.map((d) => Math.abs(d || 0))) : 0;
  const colours = given ? given.map((d) => `rgb(${diverging(d || 0, top).join(",")})`) : undefined;
  drawThumb(el.whyStrokes, why ? drawing : [], colours);
}

// ---------------------------------------------------------------- the game

// phase: "idle" (free mode), "card" (the next word shown), "playing", "result" (a round just ended),
// "over" (the drawings of the game shown)
const game = {phase: "idle", words: [], round: 0, results: [], target: null, roundStart: 0, clock: null, wait: null};

function shuffled(list) {
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function chooseWords(n, first) {
  // the words asked for in the link first, then others at random, none twice while there are enough
  const known = state.categories;
  const asked = first.filter((w) => known.includes(w)).slice(0, n);
  const words = [...asked, ...shuffled(known.filter((w) => !asked.includes(w)))].slice(0, n);
  while (words.length < n) words.push(known[Math.floor(Math.random() * known.length)]);
  return words;
}

function newGame(autoStart) {
  stopGameTimers();
  game.words = chooseWords(SETTINGS.rounds, game.results.length ? [] : SETTINGS.words);
  game.round = 0;
  game.results = [];
  el.history.innerHTML = "";
  el.rounds.hidden = true;
  showTally();
  showStage("draw");
  setStatus("");
  showCard(autoStart);
}

function showCard(autoStart) {
  // the next word; the first round of a game waits for Go, the others start by themselves
  game.phase = "card";
  game.target = game.words[game.round];
  clearDrawing();
  el.wrap.classList.remove("won", "lost");
  el.taskLabel.textContent = "Draw:";
  el.target.textContent = game.target;
  el.roundNo.textContent = `${game.round + 1}/${game.words.length}`;
  showClock(SETTINGS.roundSeconds);
  el.overlayKicker.textContent = `Round ${game.round + 1} of ${game.words.length}`;
  el.overlayTitle.textContent = game.target;
  el.overlayText.textContent = `in under ${SETTINGS.roundSeconds} seconds`;
  el.overlayGo.innerHTML = autoStart ? "Go now <kbd>Enter</kbd>" : "Go <kbd>Enter</kbd>";
  el.countdown.hidden = !autoStart;
  el.overlay.hidden = false;
  markTarget();
  if (autoStart) {
    el.countdownFill.style.animation = "none";
    void el.countdownFill.offsetWidth;  // restart the bar's animation
    el.countdownFill.style.animation = `countdown ${SETTINGS.pauseMs}ms linear forwards`;
    game.wait = setTimeout(startRound, SETTINGS.pauseMs);
  }
  el.overlayGo.focus({preventScroll: true});
}

function startRound() {
  if (game.phase !== "card") return;
  stopGameTimers();
  game.phase = "playing";
  el.overlay.hidden = true;
  setStatus("");
  game.roundStart = performance.now();
  game.clock = setInterval(tick, 100);
  showGuesses(null, []);
  redraw();
}

function tick() {
  const left = SETTINGS.roundSeconds - (performance.now() - game.roundStart) / 1000;
  showClock(Math.max(0, left));
  if (left <= 0) endRound({won: false});
}

function showClock(left) {
  el.clockText.textContent = Math.ceil(left).toString();
  el.timebarFill.style.transform = `scaleX(${left / SETTINGS.roundSeconds})`;
  const low = left <= 5 && game.phase === "playing";
  el.clock.classList.toggle("low", low);
  el.timebar.classList.toggle("low", low);
}

function stopGameTimers() {
  clearInterval(game.clock);
  clearTimeout(game.wait);
  game.clock = game.wait = null;
}

function roundRecognised(v, drawing) {
  // the drawing kept is the one that was recognised, as in Quick, Draw!'s data
  if (state.mode === "game" && game.phase === "playing" && v.category === game.target) {
    endRound({won: true, drawing, guess: {category: v.category, probability: v.probability}});
  }
}

function skipRound() {
  if (state.mode !== "game") { setStatus("N skips a word in the game; M switches to it.", ""); return; }
  if (game.phase === "playing") endRound({won: false, skipped: true});
}

function endRound({won, skipped = false, drawing = null, guess = null}) {
  if (game.phase !== "playing") return;
  stopGameTimers();
  if (state.current) {  // the clock ran out mid-stroke: that stroke still counts
    if (state.current.xs.length) state.strokes.push(state.current);
    state.current = null;
    state.pointerId = null;
  }
  game.phase = "result";
  redraw();
  drawing = drawing || rawDrawing();
  const last = state.lastGuess && state.lastGuess.top.length ? state.lastGuess.top[0] : null;
  const result = {word: game.target, won, skipped, drawing, guess: guess || last, ink: inkLength(drawing),
                  seconds: Math.min(SETTINGS.roundSeconds, (performance.now() - game.roundStart) / 1000)};
  game.results.push(result);
  showTally();
  const li = document.createElement("li");
  li.className = won ? "won" : "";
  li.textContent = `${won ? "\u2713" : "\u2717"} ${result.word}${won ? ` ${result.seconds.toFixed(1)}s` : ""}`;
  el.history.appendChild(li);
  el.rounds.hidden = false;
  el.wrap.classList.add(won ? "won" : "lost");
  const said = won ? `\u2713 ${result.word} in ${result.seconds.toFixed(1)} s!`
    : skipped ? `\u2717 ${result.word}: skipped.` : `\u2717 Time's up: I did not see ${result.word}.`;
  setStatus(said, won ? "good" : "bad");
  if (drawing.length) {  // every game drawing is kept, recognised or not
    saveDrawing(result.word, drawing)
      .then((r) => {
        result.guess = r.top[0];  // the server's guess for exactly the drawing kept
        if (game.results.at(-1) === result && game.phase === "result") {
          setStatus(`${said} Saved.`, won ? "good" : "bad");
        }
      })
      .catch((err) => setStatus(`${said} Not saved: ${err.message}`, "bad"));
  }
  game.wait = setTimeout(nextRound, SETTINGS.pauseMs);
}

function nextRound() {
  if (game.phase !== "result") return;
  if (game.round + 1 < game.words.length) {
    game.round++;
    showCard(true);
  } else {
    showSummary();
  }
}

function showTally() {
  el.tally.textContent = `${game.results.filter((r) => r.won).length} / ${game.results.length}`;
}

function showSummary() {
  // the end of a game: every drawing, with what the network thought of it, then "play again"
  game.phase = "over";
  const won = game.results.filter((r) => r.won).length;
  el.summaryTitle.textContent = `The network guessed ${won} of your ${game.results.length} drawings`;
  el.taskLabel.textContent = "Game over:";
  el.target.textContent = `${won} of ${game.results.length}`;
  el.drawings.innerHTML = "";
  for (const r of game.results) el.drawings.appendChild(summaryItem(r));
  showStage("summary");
  setStatus("");
  showGuesses(null, []);
  el.again.focus({preventScroll: true});
}

function summaryItem(r) {
  const li = document.createElement("li");
  li.className = r.won ? "won" : "lost";
  const thumb = document.createElement("canvas");
  thumb.className = "thumb";
  thumb.width = thumb.height = 2 * 120;
  thumb.setAttribute("aria-hidden", "true");
  drawThumb(thumb, r.drawing);
  const word = document.createElement("p");
  word.className = "word";
  word.textContent = `${r.won ? "\u2713" : "\u2717"} ${r.word}`;
  const when = document.createElement("p");
  when.className = "when";
  when.textContent = r.won ? `guessed in ${r.seconds.toFixed(1)} s`
    : r.skipped ? `skipped after ${r.seconds.toFixed(1)} s` : `not guessed in ${SETTINGS.roundSeconds} s`;
  const thought = document.createElement("p");
  thought.className = "thought";
  const g = r.guess;
  thought.textContent = !r.drawing.length ? "nothing drawn"
    : !g || r.ink < MIN_INK ? "too little to guess"
    : g.probability >= state.confidence.threshold ? `I saw ${g.category}, ${percent(g.probability)}`
    : `not sure: ${g.category}? ${percent(g.probability)}`;
  li.append(thumb, word, when, thought);
  return li;
}

function drawThumb(canvas, drawing, colours) {
  // the strokes scaled to fit, as the user drew them (not the network's 28x28 view); with colours, each
  // stroke in its own over a grey outline (so a white one still shows)
  const c = canvas.getContext("2d"), size = canvas.width;
  c.setTransform(1, 0, 0, 1, 0, 0);  // a canvas drawn on again (the "why?" view) starts from its own pixels
  c.fillStyle = "#fff";
  c.fillRect(0, 0, size, size);
  const xs = drawing.flatMap((s) => s[0]), ys = drawing.flatMap((s) => s[1]);
  if (!xs.length) return;
  const x0 = Math.min(...xs), y0 = Math.min(...ys);
  const w = Math.max(...xs) - x0, h = Math.max(...ys) - y0;
  const k = 0.8 * size / Math.max(w, h, 1);
  c.setTransform(k, 0, 0, k, (size - k * w) / 2 - k * x0, (size - k * h) / 2 - k * y0);
  c.lineCap = c.lineJoin = "round";
  drawing.forEach(([sx, sy], j) => {
    for (const [colour, width] of colours ? [["#8a8a8a", size / 22], [colours[j], size / 34]] : [["#1d1d1f", size / 60]]) {
      c.lineWidth = width / k;
      c.strokeStyle = colour;
      c.beginPath();
      c.moveTo(sx[0], sy[0]);
      if (sx.length === 1) c.lineTo(sx[0] + 0.01, sy[0]);
      for (let i = 1; i < sx.length; i++) c.lineTo(sx[i], sy[i]);
      c.stroke();
    }
  });
}

function showStage(which) {
  // "draw": the canvas and its tools; "summary": a finished game's drawings in their place
  el.summary.hidden = which !== "summary";
  el.wrap.hidden = el.tools.hidden = which === "summary";
  document.body.classList.toggle("over", which === "summary");
  if (which === "draw") fitCanvas();
}

function markTarget() {
  for (const chip of el.categories.children) {
    chip.classList.toggle("target", state.mode === "game" && chip.dataset.category === game.target);
  }
}

function pressGo() {
  // Enter: start the round on the card, or play again at the end
  if (state.mode !== "game") return false;
  if (game.phase === "card") { startRound(); return true; }
  if (game.phase === "over") { newGame(true); return true; }
  return false;
}

// ---------------------------------------------------------------- free drawing

// The word a free drawing is saved under follows the top guess until the user picks one (in the menu or
// a category chip); a new drawing (after Clear, Undo of the last stroke, or a save) follows the guess again.
// A saved drawing is cleared away, so it cannot be saved twice.
const free = {picked: false, saving: false, justSaved: false};

function followTopGuess(top) {
  if (state.mode === "free" && !free.picked) el.saveWord.value = top.length ? top[0].category : "";
}

function pickWord(word) {
  el.saveWord.value = word;
  free.picked = !!word;
  showPicked();
}

function freeDrawingChanged(empty) {
  free.justSaved = false;
  if (!empty) return;
  free.picked = false;  // a new drawing: the word follows its top guess again
  el.saveWord.value = "";
  showPicked();
}

function showPicked() {
  el.saveGroup.classList.toggle("picked", free.picked);
  el.saveLabel.textContent = free.picked ? "you say it's a" : "it's a";
}

function saveFree() {
  if (state.mode !== "free") {
    setStatus("Game drawings are saved by themselves; S saves in Free draw (M switches).", "");
    return;
  }
  if (state.current || free.saving) return;  // mid-stroke, or that drawing is being saved already
  const drawing = rawDrawing();
  const word = el.saveWord.value;
  if (!drawing.length) {
    if (!free.justSaved) setStatus("Nothing to save yet: draw something first.", "bad");
    return;  // right after a save (S pressed twice), its confirmation stays
  }
  if (!word) { setStatus("No guess yet: keep drawing, or pick the word it is.", "bad"); return; }
  free.saving = true;
  el.save.disabled = true;
  setStatus(`Saving as \u201c${word}\u201d\u2026`, "");
  const version = state.version;
  saveDrawing(word, drawing)
    .then((r) => {
      // a saved drawing is done: the canvas clears, so the same drawing can never be saved twice
      setStatus(`Saved as \u201c${word}\u201d in ${r.saved.split(/[\\/]/).pop()}. Draw the next one!`, "good");
      el.status.title = r.saved;
      if (state.version === version && !state.current) {  // (a stroke begun meanwhile is not thrown away)
        clearDrawing();
        free.justSaved = true;
      }
    })
    .catch((err) => setStatus(`Not saved: ${err.message}`, "bad"))
    .finally(() => {
      free.saving = false;
      el.save.disabled = false;
    });
}

// ---------------------------------------------------------------- modes and the status line

const modeHooks = [];  // called with the new mode after every switch (teach.js's panel)

function setMode(mode) {
  state.mode = mode;
  document.body.classList.toggle("free", mode !== "game");  // teach mode draws freely too
  el.modeGame.setAttribute("aria-pressed", String(mode === "game"));
  el.modeFree.setAttribute("aria-pressed", String(mode === "free"));
  el.saveGroup.hidden = mode !== "free";
  el.skip.hidden = mode !== "game";
  for (const chip of el.categories.children) chip.firstChild.setAttribute("aria-disabled", String(mode !== "free"));
  stopGameTimers();
  if (mode !== "game") {
    game.phase = "idle";
    game.target = null;
    el.overlay.hidden = true;
    el.rounds.hidden = true;
    showStage("draw");
    el.wrap.classList.remove("won", "lost");
    el.taskLabel.textContent = "Free draw:";
    el.target.textContent = "anything from the list";
    markTarget();
    clearDrawing();
    setStatus("");
  } else {
    newGame(false);
  }
  for (const hook of modeHooks) hook(mode);
}

function setStatus(text, kind) {
  el.status.textContent = text;
  el.status.title = "";
  el.status.className = `status ${kind || ""}`.trim();
}

// ---------------------------------------------------------------- keys

// One key, one action, whatever has focus (the word menu included: its type-ahead must not eat S or C);
// only a text field being typed into keeps its letters.
const KEYS = {
  z: undo, c: userClear, escape: userClear, s: saveFree, n: skipRound,
  m: () => setMode(state.mode === "game" ? "free" : "game"),
};

const TEXT_FIELDS = "textarea, [contenteditable], " +
  "input:not([type=button], [type=checkbox], [type=radio], [type=range], [type=submit], [type=reset])";

function typing(target) {
  return target instanceof Element && target.matches(TEXT_FIELDS);
}

window.addEventListener("keydown", (e) => {
  if (typing(e.target) || e.isComposing) return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === "z" && !e.altKey) { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (KEYS[key]) {
    e.preventDefault();
    e.stopPropagation();
    if (!e.repeat) KEYS[key]();
  } else if (key === "enter" && pressGo()) {
    e.preventDefault();
  }
}, true);  // the capture phase: before a focused control acts on the key

// ---------------------------------------------------------------- start-up

el.undo.addEventListener("click", undo);
el.clear.addEventListener("click", userClear);
el.skip.addEventListener("click", skipRound);
el.save.addEventListener("click", saveFree);
el.overlayGo.addEventListener("click", startRound);
el.again.addEventListener("click", () => newGame(true));
el.modeGame.addEventListener("click", () => { if (state.mode !== "game") setMode("game"); });
el.modeFree.addEventListener("click", () => { if (state.mode !== "free") setMode("free"); });
el.saveWord.addEventListener("change", () => pickWord(el.saveWord.value));
el.categories.addEventListener("click", (e) => {
  const chip = e.target.closest("button");
  if (chip && state.mode === "free") pickWord(chip.dataset.category);
});
window.addEventListener("resize", fitCanvas);

function buildCategories(categories) {
  el.catCount.textContent = `(${categories.length})`;
  for (const c of categories) {
    const li = document.createElement("li");
    li.dataset.category = c;
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.dataset.category = c;
    chip.textContent = c;
    chip.title = `Free draw: save the drawing as ${c}`;
    li.appendChild(chip);
    el.categories.appendChild(li);
    el.saveWord.appendChild(new Option(c, c));
  }
}

async function init() {
  fitCanvas();
  drawBitmap(null);
  document.body.dataset.guessing = "0";
  try {
    const info = await fetchModel();
    state.categories = info.categories;
    if (info.confidence) state.confidence = info.confidence;
    el.modelName.textContent = info.run;
    el.saveDir.textContent = info.save_dir;
    el.why.hidden = !!info.exported;  // an exported page guesses in the browser, without the server's "why?"
    if (SETTINGS.mode === "teach" && !modeHooks.length) SETTINGS.mode = "free";  // a page without teach.js
    buildCategories(info.categories);
    buildGuesses();
    showRule();
    setMode(SETTINGS.mode);
    document.body.dataset.ready = "1";
  } catch (err) {
    setStatus(`Cannot reach the model: ${err.message}`, "bad");
  }
}

init();
