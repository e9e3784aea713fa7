"""`doodle play`'s "why?": the API's explanation of the top guess (explain=1) is doodle.explain's, on the
request's own strokes, and the page draws it beside the guesses, updated with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from starlette.testclient import TestClient
from test_play_browser import browser, draw, open_page, site, square_points  # noqa: F401 (fixtures)

from doodle.checkpoint import load_model
from doodle.explain import why
from doodle.play import make_app
from doodle.predict import probabilities
from doodle.simplify import simplify_raw

JSON = {"Content-Type": "application/json"}


def square_and_line() -> list:
    """A raw square, an empty stroke, and a stray line, in canvas pixels and milliseconds."""
    xs, ys = [100, 400, 400, 100, 100], [100, 100, 400, 400, 100]
    return [[xs, ys, [0, 100, 200, 300, 400]], [[], [], []], [[150, 350], [450, 470], [600, 700]]]


@pytest.fixture(scope="module")
def client(play_model, tmp_path_factory):
    return TestClient(make_app(play_model, tmp_path_factory.mktemp("mine")))


def test_explain_gives_the_top_guess_why_on_the_request_strokes(client, play_model):
    drawing = square_and_line()
    res = client.post("/api/predict", params={"explain": "1"}, content=json.dumps({"drawing": drawing}),
                      headers=JSON)
    assert res.status_code == 200, res.text
    body = res.json()
    got = body["why"]
    assert got["category"] == body["top"][0]["category"]
    assert len(got["saliency"]) == 28 and all(len(row) == 28 for row in got["saliency"])
    assert got["scale"] == pytest.approx(np.abs(np.array(got["saliency"])).max(), rel=1e-3) and got["scale"] > 0
    assert len(got["strokes"]) == 3 and got["strokes"][1] is None  # one per request stroke; none for the empty one
    # The same numbers as doodle.explain, computed here from the drawing on predict's path.
    model, meta = load_model(play_model)
    strokes = simplify_raw([s for s in drawing if s[0]])
    bitmap = np.array(body["bitmap"], dtype=np.uint8)
    expected = why(model, meta["raster"], bitmap, strokes, probabilities(model, bitmap[None], play_model)[0],
                   play_model)
    assert got["saliency"] == expected["saliency"]
    assert [got["strokes"][0], got["strokes"][2]] == expected["strokes"]


def test_a_drawing_too_long_to_re_render_per_stroke_gets_its_pixels_explained_only(client, monkeypatch):
    from doodle import play

    body = json.dumps({"drawing": square_and_line()})
    monkeypatch.setattr(play, "MAX_ATTRIBUTION", 13)  # simplified, the square and the line: 2 strokes x 7 points
    got = client.post("/api/predict", params={"explain": "1"}, content=body, headers=JSON).json()["why"]
    assert got["strokes"] is None and len(got["saliency"]) == 28 and got["scale"] > 0
    monkeypatch.setattr(play, "MAX_ATTRIBUTION", 14)
    got = client.post("/api/predict", params={"explain": "1"}, content=body, headers=JSON).json()["why"]
    assert len(got["strokes"]) == 3


def test_no_explanation_unless_asked_and_a_bad_value_is_refused(client):
    body = json.dumps({"drawing": square_and_line()})
    for params in ({}, {"explain": "0"}):
        res = client.post("/api/predict", params=params, content=body, headers=JSON)
        assert res.status_code == 200 and "why" not in res.json()
    res = client.post("/api/predict", params={"explain": "yes"}, content=body, headers=JSON)
    assert res.status_code == 400 and res.json() == {"error": "explain must be 0 or 1, got 'yes'"}


def colours(page, selector: str) -> dict[str, int]:
    """How many pixels of a canvas are reddish, bluish, and drawn at all (painted, not white)."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let red = 0, blue = 0, drawn = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (!d[i + 3]) continue;  // never painted
          if (d[i] > d[i + 2] + 40) red++;
          if (d[i + 2] > d[i] + 40) blue++;
          if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) drawn++;
        }
        return {red, blue, drawn}; }""")


def test_the_page_shows_why_beside_the_guesses_and_updates_it(open_page):  # noqa: F811 (a fixture)
    page = open_page()
    assert colours(page, "#why-pixels")["drawn"] == 0  # nothing drawn, nothing explained
    size = page.locator("#pad").bounding_box()["width"]
    draw(page, [square_points(page), [(0.1 * size, 0.9 * size), (0.5 * size, 0.95 * size)]])
    shown = page.evaluate("state.lastGuess")
    top = shown["top"][0]["category"]
    assert page.inner_text("#why-word") == top and len(shown["why"]["strokes"]) == 2
    pixels = colours(page, "#why-pixels")
    assert pixels["red"] > 20 and pixels["blue"] > 20  # pixels for and against the top guess
    strokes = colours(page, "#why-strokes")
    assert strokes["drawn"] > 200 and strokes["red"] + strokes["blue"] > 0
    page.keyboard.press("c")  # cleared: the view empties with the guesses
    page.wait_for_selector("body[data-guessing='0']")
    assert colours(page, "#why-pixels")["drawn"] == 0 and page.inner_text("#why-word") == "\u2026"


def test_an_exported_page_guesses_without_a_server_and_hides_the_why(browser, play_model, tmp_path):  # noqa: F811
    import functools
    import http.server
    import threading

    from doodle.export import export

    export(play_model, "web", tmp_path / "site")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx = browser.new_context(viewport={"width": 1200, "height": 860})
    try:
        page = ctx.new_page()
        problems = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/site/?mode=free")
        page.wait_for_selector("body[data-ready='1']")
        draw(page, [square_points(page)])
        assert page.evaluate("state.lastGuess.top.length") > 0 and page.is_hidden("#why") and not problems
    finally:
        ctx.close()
        server.shutdown()
        server.server_close()
