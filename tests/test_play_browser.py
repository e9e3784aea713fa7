"""`doodle play` in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for Python)
opens the page on a free loopback port, draws with real mouse moves and reads the guesses off the screen.

Without Chromium or Playwright these tests skip with a one-line reason; with CI set (CI=true) they fail.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
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

    def opener(query: str = "?mode=free", **context):
        ctx = browser.new_context(viewport={"width": 1200, "height": 860}, **context)
        page = ctx.new_page()
        problems = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.goto(site[0] + "/" + query)
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


def guesses(page) -> list[str]:
    return page.eval_on_selector_all("#guesses li:not(.empty)", "els => els.map(e => e.dataset.category)")


def ink(page, selector: str = "#pad") -> int:
    """How many pixels of a canvas are not blank."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] && (d[i - 1] || d[i - 2] || d[i - 3] || d[i] < 255)) n++;
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
    assert page.inner_text("#guess-line").split()[-1].strip("?") in ("circle", "circle,")
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


def test_saving_and_a_game_round(open_page, site, request):
    url, save_dir = site
    before = len(saved(save_dir, "circle"))
    page = open_page()
    draw(page, [circle_points(page)])
    assert page.input_value("#save-word") == "circle"  # the top guess is offered
    page.click("#save")
    page.wait_for_selector("#status:has-text('Saved to')")
    records = saved(save_dir, "circle")
    assert len(records) == before + 1
    assert records[-1]["drawing"] == page.evaluate("state.strokes.map(s => [s.xs, s.ys, s.ts])")

    # A game round: the word in the link, Go, draw it; the win is tallied and the drawing kept by itself.
    page = open_page("?word=circle")
    assert page.inner_text("#target") == "circle" and page.is_visible("#overlay")
    page.keyboard.press("Enter")
    assert page.is_hidden("#overlay")
    draw(page, [circle_points(page)])
    page.wait_for_selector("#status:has-text('Saved to')")
    assert page.inner_text("#tally-score") == "1 / 1" and "circle" in page.inner_text("#history")
    assert page.eval_on_selector(".chips li.target", "e => e.dataset.category") == "circle"
    records = saved(save_dir, "circle")
    assert len(records) == before + 2 and records[-1]["recognized"] is True
    keep_screenshot(page, request, "play-game-won.png")
    page.keyboard.press("n")  # the next round asks for another word
    assert page.inner_text("#target") != "circle" and page.is_visible("#overlay")
