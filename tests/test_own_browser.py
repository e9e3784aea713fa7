"""Teach mode in a real browser (issue 22): a word taught from 5 drawings replayed with the real mouse, then a
sixth drawing of it guessed. Its own server and a copy of the play model: teaching changes what a server serves."""

from __future__ import annotations

import json
import time

import pytest
from conftest import REPO
from test_play_browser import browser, draw, guesses, pad_box, replay_strokes, until  # noqa: F401 (browser: a fixture)

from doodle.play import make_app, running
from doodle.predict import predict
from helpers import copy_run

FORK = REPO / "tests" / "fixtures" / "play" / "teach_fork.ndjson"


@pytest.fixture()
def teach_site(play_model, tmp_path):
    run = copy_run(play_model, tmp_path / "runs", "shapes")  # taught runs are written beside the model's folder
    save_dir = tmp_path / "mine"
    with running(make_app(run, save_dir)) as url:
        yield url, run, save_dir


def test_a_word_taught_from_five_drawings_is_guessed_in_the_sixth(browser, teach_site, record_property):  # noqa: F811
    url, run, save_dir = teach_site
    forks = [json.loads(line) for line in FORK.read_text().splitlines()]
    ctx = browser.new_context(viewport={"width": 1200, "height": 860})
    problems = []
    try:
        page = ctx.new_page()
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.goto(url + "/?mode=teach")
        page.wait_for_selector("body[data-ready='1']")
        assert page.is_visible("#teach-panel") and page.is_disabled("#teach-learn")
        assert "fork" not in page.eval_on_selector_all("#categories li", "els => els.map(e => e.dataset.category)")
        page.fill("#teach-word", "fork")
        page.keyboard.press("Enter")  # out of the field: A adds an example now
        assert page.inner_text("#target") == "fork"
        for drawing in forks[:5]:
            draw(page, replay_strokes(drawing["drawing"], pad_box(page)["width"]))
            page.keyboard.press("a")
        assert page.evaluate("teach.examples.length") == 5 and page.evaluate("state.strokes.length") == 0
        assert page.is_enabled("#teach-learn")
        clicked = time.perf_counter()
        page.click("#teach-learn")
        until(page, "!document.getElementById('teach-result').hidden", timeout=30)
        record_property("teach_seconds_from_click", round(time.perf_counter() - clicked, 2))
        chips = page.eval_on_selector_all("#categories li", "els => els.map(e => e.dataset.category)")
        assert chips[-1] == "fork"
        taught = next(p for p in run.parent.iterdir() if p.name.startswith("teach-fork-"))
        assert str(taught) in page.inner_text("#teach-result") and page.inner_text("#model-name") == taught.name

        draw(page, replay_strokes(forks[5]["drawing"], pad_box(page)["width"]))  # held out
        assert guesses(page)[0] == "fork"
    finally:
        ctx.close()
    assert not problems, problems
    kept = [json.loads(line) for line in (save_dir / "fork.ndjson").read_text().splitlines()]
    assert len(kept) == 5 and all(len(s) == 3 for r in kept for s in r["drawing"])  # raw, with times
    meta = json.loads((taught / "model.json").read_text())
    assert meta["taught"][0]["key_ids"] == [r["key_id"] for r in kept]
    results, _ = predict([str(save_dir / "fork.ndjson")], taught, top_k=1)  # the run works like any other
    assert sum(r["top"][0]["category"] == "fork" for r in results) >= 4
