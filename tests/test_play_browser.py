"""`doodle play` in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for Python)
opens the page on a free loopback port, draws with real mouse moves and reads the guesses off the screen.

One browser serves the whole module; each test opens fresh pages. Games run with a shortened clock through the
page's query string (?seconds=N&pause=MS), never by waiting out Quick, Draw!'s 20 seconds.

Without Chromium or Playwright these tests skip with a one-line reason; with CI set (CI=true) they fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import REPO, quickdraw_root

from doodle.play import make_app, running
from doodle.predict import predict

FIXTURE = REPO / "tests" / "fixtures" / "play" / "raw_shapes.ndjson"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium() -> str | None:
    found = shutil.which("chromium")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, missing = None, "Playwright for Python is not installed (pip install -e '.[test]')"
    else:
        missing = None if chromium() else "no chromium on PATH or at /usr/bin/chromium (apt-get install chromium)"
    if missing:
        (pytest.fail if in_ci() else pytest.skip)(f"browser tests: {missing}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def site(play_model, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("browser-mine")
    with running(make_app(play_model, save_dir)) as url:
        yield url, save_dir


@pytest.fixture
def open_page(browser, site):
    pages = []

    def opener(query: str = "?mode=free", size=(1200, 860), url=None, failed_requests_expected=False, setup=None,
               **context):
        ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, **context)
        page = ctx.new_page()
        if setup:
            setup(page)
        problems = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        if not failed_requests_expected:
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.goto((url or site[0]) + "/" + query)
        page.wait_for_selector("body[data-ready='1']")
        pages.append((ctx, problems))
        return page

    yield opener
    for ctx, problems in pages:
        ctx.close()
        assert not problems, problems  # no script errors, no failed requests (a missing file would show here)


def pad_box(page) -> dict:
    return page.locator("#pad").bounding_box()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw strokes given in canvas pixels with the real mouse, then wait for the guess of the whole drawing."""
    box = pad_box(page)
    for points in strokes:
        page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.up()
    page.wait_for_selector("body[data-guessing='0']")


def circle_points(page, n=32) -> list[tuple[float, float]]:
    size = pad_box(page)["width"]
    return [(size / 2 + 0.32 * size * math.cos(a), size / 2 + 0.3 * size * math.sin(a))
            for a in (2 * math.pi * i / (n - 1) for i in range(n))]


def square_points(page, n=6) -> list[tuple[float, float]]:
    """A square, a shape the small test model is sure of (its circles come out nearer its octagons)."""
    size = pad_box(page)["width"]
    corners = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8), (0.2, 0.2)]
    return [(size * (x0 + (x1 - x0) * j / n), size * (y0 + (y1 - y0) * j / n))
            for (x0, y0), (x1, y1) in zip(corners, corners[1:]) for j in range(n)] + [(0.2 * size, 0.2 * size)]


def guesses(page) -> list[str]:
    return page.eval_on_selector_all("#guesses li:not(.empty)", "els => els.map(e => e.dataset.category)")


def ink(page, selector: str = "#pad") -> int:
    """How many pixels of a canvas are not blank."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] && (d[i - 1] || d[i - 2] || d[i - 3] || d[i] < 255)) n++;
        return n; }""")


def dark(page, selector: str) -> int:
    """How many pixels of a canvas are drawn in ink (dark), on whatever background."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 128 && d[i] < 128) n++;
        return n; }""")


def keep_screenshot(page, request, name: str) -> Path:
    """A screenshot for people to look at: under $DOODLE_ARTIFACTS, else the test's tmp dir; listed at the end."""
    folder = Path(os.environ.get("DOODLE_ARTIFACTS") or request.getfixturevalue("tmp_path"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    request.node.user_properties.append(("artifact", str(path)))
    return path


def test_a_circle_drawn_with_the_mouse_is_guessed_circle(open_page):
    page = open_page()
    draw(page, [circle_points(page)])
    assert guesses(page)[0] == "circle"
    assert ink(page, "#bitmap") > 28  # the network's view is drawn
    raw = page.evaluate("state.strokes.map(s => [s.xs, s.ys, s.ts])")
    assert len(raw) == 1 and len(raw[0][0]) == 32 and raw[0][2] == sorted(raw[0][2]) and raw[0][2][0] == 0


def confident(drawings: list[dict], model: Path, margin: float = 0.25) -> list[tuple[dict, str]]:
    """Drawings whose `doodle predict` top guess leads the second by `margin`: replaying them with the mouse
    moves every point by up to half a pixel, which must not be allowed to decide a near tie."""
    stdin = io.StringIO("".join(json.dumps(d) + "\n" for d in drawings))  # `doodle predict -` reads ndjson
    results, _ = predict(["-"], model, top_k=2, stdin=stdin)
    return [(d, r["top"][0]["category"]) for d, r in zip(drawings, results)
            if r["top"][0]["probability"] - r["top"][1]["probability"] >= margin]


def replay_strokes(drawing: list, size: float) -> list[list[tuple[float, float]]]:
    """A raw drawing scaled into the canvas (80% of it, centred)."""
    xs = [x for s in drawing for x in s[0]]
    ys = [y for s in drawing for y in s[1]]
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    k = 0.8 * size / max(w, h, 1)
    ox, oy = (size - k * w) / 2 - k * min(xs), (size - k * h) / 2 - k * min(ys)
    return [[(ox + k * x, oy + k * y) for x, y in zip(s[0], s[1])] for s in drawing]


def test_replayed_quickdraw_drawings_get_the_guess_of_doodle_predict(open_page, play_model, record_property):
    """Two committed drawings of different shapes, and one of the shared sample when it is there (each mouse
    move costs a frame, ~20 ms, so a few drawings of ~100 points are what the time allows)."""
    committed = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    chosen = list({word: (d, word) for d, word in reversed(confident(committed, play_model))}.values())[:2]
    assert len(chosen) == 2
    shared = quickdraw_root() / "full" / "raw" / "star.ndjson"
    if shared.is_file():
        chosen += confident([json.loads(line) for line in shared.read_text().splitlines()[10:20]], play_model)[:1]
    page = open_page()
    for drawing, expected in chosen:
        page.keyboard.press("c")
        draw(page, replay_strokes(drawing["drawing"], pad_box(page)["width"]))
        assert guesses(page)[0] == expected, drawing["key_id"]
    record_property("replayed", len(chosen))


def test_undo_and_clear(open_page):
    page = open_page(device_scale_factor=2)
    box = pad_box(page)
    assert page.eval_on_selector("#pad", "c => c.width") == round(box["width"] * 2)  # sharp on high-DPI screens
    assert page.is_disabled("#undo") and page.is_disabled("#clear")
    draw(page, [circle_points(page)])
    alone, circle_ink = guesses(page), ink(page)
    draw(page, [[(20, 20), (box["width"] - 20, 40)], [(30, box["height"] - 30), (60, box["height"] - 60)]])
    assert page.evaluate("state.strokes.length") == 3 and ink(page) > circle_ink
    page.click("#undo")
    page.keyboard.press("z")
    page.wait_for_selector("body[data-guessing='0']")
    assert page.evaluate("state.strokes.length") == 1
    assert guesses(page) == alone and abs(ink(page) - circle_ink) < circle_ink * 0.02
    page.keyboard.press("Control+z")
    assert page.evaluate("state.strokes.length") == 0 and ink(page) == 0 and guesses(page) == []
    draw(page, [circle_points(page)])
    page.click("#clear")
    assert ink(page) == 0 and guesses(page) == [] and ink(page, "#bitmap") == 0
    draw(page, [circle_points(page)])
    page.keyboard.press("Escape")
    assert ink(page) == 0 and page.is_visible("#pad-hint")




def saved(save_dir: Path, word: str) -> list[dict]:
    path = save_dir / f"{word}.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def counts(save_dir: Path) -> dict[str, int]:
    return {path.stem: len(path.read_text().splitlines()) for path in save_dir.glob("*.ndjson")}


def added(before: dict, save_dir: Path) -> dict[str, int]:
    """How many records each word's file gained since `before`."""
    return {w: n - before.get(w, 0) for w, n in counts(save_dir).items() if n != before.get(w, 0)}


def status(page) -> str:
    return page.inner_text("#status")


def in_view(page, selector: str) -> bool:
    """The element is entirely inside the viewport, the page not scrolled."""
    box, view = page.locator(selector).bounding_box(), page.viewport_size
    return (box is not None and page.evaluate("scrollY") == 0 and box["y"] >= 0 and box["x"] >= 0
            and box["y"] + box["height"] <= view["height"] and box["x"] + box["width"] <= view["width"])


def rows_of(page, selector: str) -> int:
    """How many lines the visible children of a flex row occupy."""
    tops = page.eval_on_selector(selector, """row => [...row.children]
        .map(e => e.getBoundingClientRect()).filter(r => r.height).map(r => r.top)""")
    return len({round(t / 10) for t in tops})  # buttons and the word menu may differ by a pixel or two


def until(page, condition: str, timeout: float = 10.0) -> None:
    """Wait until a JS expression on the page is true (polled: the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"still not {condition} after {timeout} s"
        page.wait_for_timeout(20)


def dot(page) -> None:
    box = pad_box(page)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("body[data-guessing='0']")


# ---------------------------------------------------------------- free drawing: the word it is saved under


def test_a_picked_word_does_not_stick_to_the_next_drawing(open_page, site):
    """The issue's case: pick a word by hand, Clear, draw something else: it is saved under its own top guess."""
    save_dir = site[1]
    page = open_page()
    draw(page, [circle_points(page)])
    assert page.input_value("#save-word") == "circle"  # the top guess is offered
    page.select_option("#save-word", "star")  # the user says otherwise
    assert page.inner_text("#save-label") == "you say it's a"
    page.click("#clear")
    assert page.input_value("#save-word") == "" and page.inner_text("#save-label") == "it's a"
    draw(page, [circle_points(page)])
    assert page.input_value("#save-word") == "circle"  # a new drawing: the top guess again, not the old pick
    before = counts(save_dir)
    page.click("#save")
    page.wait_for_selector("#status:has-text('Saved as')")
    assert added(before, save_dir) == {"circle": 1}
    assert "\u201ccircle\u201d" in status(page)  # the confirmation names the word
    assert ink(page) == 0 and page.input_value("#save-word") == ""  # saved: the next drawing starts fresh

    # a word picked for the drawing on the canvas (or before drawing it) is the one it is saved under
    page.click(".chips button[data-category='star']")
    draw(page, [circle_points(page)])
    assert page.input_value("#save-word") == "star"
    before = counts(save_dir)
    page.keyboard.press("s")
    page.wait_for_selector("#status:has-text('Saved as \u201cstar\u201d')")
    assert added(before, save_dir) == {"star": 1}
    record = saved(save_dir, "star")[-1]
    assert record["word"] == "star" and record["recognized"] is False
    draw(page, [circle_points(page)])
    assert page.input_value("#save-word") == "circle"  # and after that save, the guess again


def test_keys_do_one_thing_whatever_has_focus(open_page, site):
    save_dir = site[1]
    page = open_page()
    draw(page, [circle_points(page)])
    page.focus("#save-word")
    page.select_option("#save-word", "square")
    before = counts(save_dir)
    page.keyboard.press("s")  # the menu's type-ahead would make it "star" and save nothing
    page.wait_for_selector("#status:has-text('Saved as')")
    assert added(before, save_dir) == {"square": 1}
    assert page.evaluate("document.activeElement.id") == "save-word"  # still in the menu, and still:
    box = pad_box(page)
    draw(page, [circle_points(page), [(20, 20), (box["width"] - 20, 40)]])
    page.focus("#save-word")
    page.keyboard.press("z")
    assert page.evaluate("state.strokes.length") == 1
    page.keyboard.press("c")
    assert page.evaluate("state.strokes.length") == 0 and ink(page) == 0
    page.keyboard.press("n")  # a game key: says so, and stays in free drawing
    assert page.evaluate("state.mode") == "free" and "M switches" in status(page)
    page.focus(".chips button[data-category='line']")
    draw(page, [circle_points(page)])
    page.keyboard.press("c")
    assert ink(page) == 0
    # the primary button of free drawing is Save; the game's Skip is not there
    shown = "bs => bs.filter(b => b.offsetParent).map(b => b.id)"
    assert page.eval_on_selector_all(".tools button.primary", shown) == ["save"]
    assert page.is_hidden("#skip")
    page.keyboard.press("m")
    assert page.evaluate("state.mode") == "game" and page.is_visible("#skip") and page.is_hidden("#save")
    # only a text field being typed into keeps its letters (none on the page today: one is added)
    page.evaluate("document.body.append(Object.assign(document.createElement('input'), {id: 'typed'}))")
    page.focus("#typed")
    page.keyboard.type("mcs")
    assert page.input_value("#typed") == "mcs" and page.evaluate("state.mode") == "game"


def test_a_drawing_is_saved_once(open_page, site):
    save_dir = site[1]
    page = open_page()
    draw(page, [circle_points(page)])
    before = counts(save_dir)
    page.keyboard.press("s")
    page.keyboard.press("s")  # while the first is on its way, or once it is done: nothing more is saved
    page.wait_for_selector("#status:has-text('Saved as')")
    page.keyboard.press("s")
    page.click("#save")
    assert added(before, save_dir) == {"circle": 1}
    assert ink(page) == 0 and status(page).startswith("Saved as \u201ccircle\u201d")  # the confirmation stays
    draw(page, [circle_points(page)])
    page.keyboard.press("c")
    page.keyboard.press("s")
    assert status(page) == "Nothing to save yet: draw something first." and added(before, save_dir) == {"circle": 1}


# ---------------------------------------------------------------- what the network says, and when


def test_i_see_only_past_the_threshold_and_a_dot_is_no_guess(open_page, play_model):
    threshold = json.loads((play_model / "model.json").read_text())["metrics"]["confident_at"]
    page = open_page()
    assert page.evaluate("state.confidence") == {"threshold": threshold, "precision": 0.9, "source": "validation"}
    assert f"from {threshold:.0%} sure" in page.inner_text("#rule")
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/predict" in r.url else None)
    dot(page)  # a dot is no drawing: nothing is asked, nothing announced
    assert asked == [] and guesses(page) == [] and page.inner_text("#guess-line") == "Keep drawing\u2026"
    said = []
    for shape, word in ((circle_points, "circle"), (square_points, "square")):
        page.keyboard.press("c")
        draw(page, [shape(page)])
        top = page.evaluate("state.lastGuess.top[0]")
        said.append(page.inner_text("#guess-line"))
        assert top["category"] == word
        assert said[-1] == (f"I see {word}" if top["probability"] >= threshold else "I'm not sure yet\u2026")
    assert asked and "I see square" in said

    # A game against a model that is never sure enough: its word on top is no win, and it says it is unsure.
    def never_sure(p):
        def answer(route):
            info = route.fetch().json()
            info["confidence"]["threshold"] = 1.01
            route.fulfill(json=info)
        p.route("**/api/model", answer)

    page = open_page("?word=square&seconds=60", setup=never_sure)
    page.keyboard.press("Enter")
    draw(page, [square_points(page)])
    assert guesses(page)[0] == "square" and page.inner_text("#guess-line") == "I'm not sure yet\u2026"
    assert page.evaluate("game.phase") == "playing" and page.inner_text("#tally-score") == "0 / 0"


# ---------------------------------------------------------------- the game


def test_a_game_is_six_rounds_then_the_drawings(open_page, site, request):
    """One key starts the game; the rounds follow by themselves; the end shows each drawing, the guess, the time."""
    save_dir = site[1]
    before = counts(save_dir)
    words = ["square", "circle", "triangle", "hexagon", "octagon", "star"]
    page = open_page(f"?words={','.join(words)}&seconds=3&pause=40", size=(1280, 800))
    assert page.text_content("#overlay-kicker") == "Round 1 of 6" and page.is_visible("#overlay-go")
    page.keyboard.press("Enter")
    draw(page, [square_points(page)])  # round 1: recognised
    until(page, "game.round === 1 && game.phase === 'playing'")  # round 2 began by itself
    assert page.evaluate("game.results[0].won") is True and page.inner_text("#tally-score") == "1 / 1"
    dot(page)  # round 2: too little to guess, and the clock runs out
    until(page, "game.round === 2 && game.phase === 'playing'", timeout=6)
    for round_ in range(3, 7):  # rounds 3 to 6: skipped with N
        page.keyboard.press("n")
        until(page, f"game.round === {round_} || game.phase === 'over'")
        if round_ < 6:
            until(page, "game.phase === 'playing'")
    page.wait_for_selector("#summary:not([hidden])")
    assert page.is_hidden("#pad-wrap") and page.inner_text("#tally-score") == "1 / 6"
    assert "guessed 1 of your 6" in page.inner_text("#summary-title")
    texts = "lis => lis.map(li => [...li.querySelectorAll('p')].map(p => p.textContent))"
    items = page.eval_on_selector_all("#drawings li", texts)  # per drawing: the word, the time, the guess
    assert [item[0] for item in items] == ["\u2713 square"] + [f"\u2717 {w}" for w in words[1:]]
    assert items[0][1].startswith("guessed in ") and items[0][1].endswith(" s")
    assert items[0][2].startswith("I saw square, ")
    assert items[1][1] == "not guessed in 3 s" and items[1][2] == "too little to guess"
    assert all(item[1].startswith("skipped after") and item[2] == "nothing drawn" for item in items[2:])
    thumbs = [dark(page, f"#drawings li:nth-child({i}) canvas") for i in range(1, 7)]
    assert thumbs[0] > 500 and 0 < thumbs[1] < 200 and thumbs[2:] == [0, 0, 0, 0]  # a square, a dot, nothing
    assert added(before, save_dir) == {"square": 1, "circle": 1}  # the drawn rounds are kept
    assert saved(save_dir, "square")[-1]["recognized"] is True
    assert in_view(page, "#again")
    keep_screenshot(page, request, "play-game-over.png")

    page.keyboard.press("Enter")  # play again: the first round starts by itself, no click
    assert page.is_hidden("#summary") and page.inner_text("#tally-score") == "0 / 0"
    until(page, "game.phase === 'playing' && game.round === 0")
    assert page.is_visible("#pad") and page.evaluate("game.words.length") == 6


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("mode", ["free", "game"])
def test_at_1280x800_the_tools_fit_one_row_and_feedback_shows_without_scrolling(open_page, mode, request):
    page = open_page("?mode=free" if mode == "free" else "?word=square&seconds=20", size=(1280, 800))
    assert rows_of(page, "#tools") == 1
    if mode == "game":
        page.keyboard.press("Enter")
    draw(page, [square_points(page)])
    if mode == "free":
        page.keyboard.press("s")
        page.wait_for_selector("#status:has-text('Saved as')")
    else:
        page.wait_for_selector("#status:has-text('square in')")
    assert in_view(page, "#status") and in_view(page, "#tools") and rows_of(page, "#tools") == 1
    keep_screenshot(page, request, f"play-1280x800-{mode}.png")


@pytest.mark.parametrize("size", [(390, 844), (520, 740), (640, 740), (768, 1024), (860, 740)])
def test_the_guesses_are_in_view_while_drawing(open_page, size, request):
    page = open_page(size=size, has_touch=size[0] < 520)
    draw(page, [circle_points(page)])
    assert guesses(page)[0] == "circle"
    assert in_view(page, "#guess-line") and in_view(page, "#guesses li:first-child") and in_view(page, "#pad")
    keep_screenshot(page, request, f"play-drawing-{size[0]}x{size[1]}.png")


# ---------------------------------------------------------------- small things


def test_the_round_card_selects_no_text_and_controls_are_reachable_by_keyboard(open_page):
    page = open_page("?word=circle")
    assert page.eval_on_selector("#overlay-title", "e => getComputedStyle(e).userSelect") == "none"
    card = page.locator("#overlay .card").bounding_box()
    page.mouse.move(card["x"] + 2, card["y"] + 2)
    page.mouse.down()
    page.mouse.move(card["x"] + card["width"] - 2, card["y"] + card["height"] - 2, steps=5)
    page.mouse.up()
    assert page.evaluate("getSelection().toString()") == ""
    assert page.get_attribute(".chips button", "aria-disabled") == "true"  # in the game, a chip picks nothing

    page = open_page()  # free drawing: Tab reaches the guesses and every category, which Enter picks
    assert page.get_attribute("#guess-line", "aria-live") == "polite"
    assert page.get_attribute("#guesses", "aria-label").startswith("the network's five best guesses")
    draw(page, [circle_points(page)])
    reached = []
    for _ in range(30):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.dataset.category || ''"))
    assert "guesses" in reached and {"circle", "square", "zigzag"} <= set(reached)
    page.focus(".chips button[data-category='zigzag']")
    page.keyboard.press("Enter")
    assert page.input_value("#save-word") == "zigzag" and page.inner_text("#save-label") == "you say it's a"


def test_a_stopped_server_says_so_and_how_to_restart_it(open_page, play_model, tmp_path):
    with contextlib.ExitStack() as server:
        url = server.enter_context(running(make_app(play_model, tmp_path)))
        page = open_page(url=url, size=(1280, 800), failed_requests_expected=True)
        draw(page, [circle_points(page)])
        assert guesses(page)[0] == "circle"
    page.keyboard.press("c")
    draw(page, [circle_points(page)])
    text = status(page)
    assert "server is not answering" in text and "`doodle play`" in text and "Failed to fetch" not in text
    assert in_view(page, "#status")
    page.select_option("#save-word", "circle")  # no guess without the server: the user names it
    page.keyboard.press("s")
    page.wait_for_selector("#status:has-text('Not saved')")
    assert "`doodle play`" in status(page) and ink(page) > 0  # the drawing is still there
