// doodle play's teach mode: type a word the model does not know, draw it a few times (Add keeps each drawing
// as an example), press Learn. The server saves the drawings (data/mine/<word>.ndjson), teaches the model
// the word in a second or so (doodle.teach), writes the taught model as a new run folder and serves it: the
// guesses include the word from then on. Loaded after play.js, whose canvas, API and views it uses.
"use strict";

const TEACH = {min: 2, suggested: 5, max: 20};  // the server takes 2 to 20 drawings

const teachEl = {
  mode: $("mode-teach"), group: $("teach-group"), word: $("teach-word"), add: $("teach-add"),
  learn: $("teach-learn"), panel: $("teach-panel"), count: $("teach-count"), examples: $("teach-examples"),
  result: $("teach-result"),
};

const teach = {examples: [], learning: false, ready: null};  // examples: raw drawings [[xs, ys, ts], ...]

function teachWord() {
  return teachEl.word.value.trim();
}

function showTeach() {
  // the examples as thumbnails (click one to drop it), their count, and whether Learn can go
  const n = teach.examples.length;
  teachEl.count.textContent = n ? `(${n} of ~${TEACH.suggested})` : "";
  teachEl.examples.innerHTML = "";
  teach.examples.forEach((drawing, i) => {
    const li = document.createElement("li");
    const thumb = document.createElement("canvas");
    thumb.className = "thumb";
    thumb.width = thumb.height = 96;
    drawThumb(thumb, drawing);
    const drop = document.createElement("button");
    drop.type = "button";
    drop.className = "drop";
    drop.title = "Drop this example";
    drop.setAttribute("aria-label", `drop example ${i + 1}`);
    drop.textContent = "\u00d7";
    drop.addEventListener("click", () => { teach.examples.splice(i, 1); showTeach(); });
    li.append(thumb, drop);
    teachEl.examples.appendChild(li);
  });
  teachEl.learn.disabled = teach.learning || n < TEACH.min || !teachWord();
  teachEl.add.disabled = teach.learning;
  teachEl.learn.textContent = teach.learning ? "Learning\u2026" : `Learn${n ? ` (${n})` : ""}`;
  if (state.mode === "teach") el.target.textContent = teachWord() || "a new word";
}

function addExample() {
  // A, or Add: the drawing on the canvas becomes an example of the word, and the canvas is cleared for the next
  if (state.mode !== "teach") { setStatus("A adds an example in Teach mode.", ""); return; }
  if (state.current || teach.learning) return;
  const drawing = rawDrawing();
  if (!drawing.length) { setStatus("Draw an example first.", "bad"); return; }
  if (teach.examples.length >= TEACH.max) { setStatus(`${TEACH.max} examples are plenty: press Learn.`, "bad"); return; }
  teach.examples.push(drawing);
  clearDrawing();
  showTeach();
  const n = teach.examples.length, word = teachWord() || "the word";
  setStatus(n < TEACH.suggested ? `Example ${n} kept. Draw ${word} again.`
    : `${n} examples of ${word}: press Learn (or add more).`, "good");
}

async function learn() {
  const word = teachWord();
  if (!word) { setStatus("Type the word to teach first.", "bad"); teachEl.word.focus(); return; }
  if (teach.examples.length < TEACH.min || teach.learning) return;
  teach.learning = true;
  showTeach();
  setStatus(`Learning \u201c${word}\u201d from ${teach.examples.length} drawings\u2026`, "");
  try {
    const r = await api("/api/teach", {word, drawings: teach.examples});
    knowCategories(r.categories, r.run);
    teach.examples = [];
    teachEl.result.hidden = false;
    teachEl.result.textContent = `Learned \u201c${word}\u201d in ${r.seconds.toFixed(1)} s, saved as the run ` +
      `${r.path}. Each example left out in turn, the others taught it to recognise ` +
      `${r.held_out.recognised} of ${r.held_out.drawings}.`;
    setStatus(`Learned \u201c${word}\u201d: draw it again and watch the guesses.`, "good");
    el.status.title = r.path;
  } catch (err) {
    setStatus(`Not learned: ${err.message}`, "bad");
  } finally {
    teach.learning = false;
    showTeach();
  }
}

function knowCategories(categories, run) {
  // the served model changed: its categories (chips, save menu, game words) and its name
  state.categories = categories;
  el.categories.innerHTML = "";
  while (el.saveWord.options.length > 1) el.saveWord.remove(1);  // keeps "(top guess)"
  buildCategories(categories);
  buildGuesses();
  el.modelName.textContent = run;
  setMode(state.mode);  // chips and labels as this mode shows them
}

function teachMode(mode) {
  // play.js's setMode calls this after each switch
  const on = mode === "teach";
  document.body.classList.toggle("teach", on);
  teachEl.mode.setAttribute("aria-pressed", String(on));
  teachEl.group.hidden = teachEl.panel.hidden = !on;
  if (!on) return;
  el.taskLabel.textContent = "Teach:";
  showTeach();
  if (teach.ready !== "ready") {
    api("/api/teach")  // the first call starts the server's preparation
      .then((s) => {
        teach.ready = s.state;
        if (s.state === "unavailable") setStatus(`Teaching is not possible with this model: ${s.reason}`, "bad");
      })
      .catch((err) => setStatus(err.message, "bad"));
  }
}

modeHooks.push(teachMode);
teachEl.mode.hidden = false;  // the button is the page's only while this script is (an exported page has neither)
KEYS.a = addExample;
teachEl.mode.addEventListener("click", () => { if (state.mode !== "teach") setMode("teach"); });
teachEl.add.addEventListener("click", addExample);
teachEl.learn.addEventListener("click", learn);
teachEl.word.addEventListener("input", showTeach);
teachEl.word.addEventListener("keydown", (e) => {
  if (e.key === "Enter") { e.preventDefault(); teachEl.word.blur(); }  // then draw
});
