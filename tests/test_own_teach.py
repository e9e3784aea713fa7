"""Teaching a running `doodle play` a new word (issue 22): the API, the run folder it writes, and the server
answering while it learns."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from starlette.testclient import TestClient

import doodle.teach
from doodle.checkpoint import load_model
from doodle.evaluate import evaluate
from doodle.play import make_app, running
from doodle.predict import predict
from helpers import Recorder, copy_run

FORK = REPO / "tests" / "fixtures" / "play" / "teach_fork.ndjson"
FORKS = [json.loads(line)["drawing"] for line in FORK.read_text().splitlines()]


@pytest.fixture()
def shapes(play_model, tmp_path):
    """A copy of the play model in tmp_path/runs (taught runs are written beside it), and a save folder."""
    return copy_run(play_model, tmp_path / "runs", "shapes"), tmp_path / "mine"


def ready(client) -> dict:
    deadline = time.monotonic() + 30
    while (status := client.get("/api/teach").json())["state"] == "preparing":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return status


def test_a_word_is_saved_taught_served_and_written_as_a_run_like_any_other(shapes):
    run, save_dir = shapes
    printed = Recorder()  # what `doodle play` prints in its terminal
    client = TestClient(make_app(run, save_dir, reporter=printed))
    assert ready(client) == {"state": "ready", "reason": None}
    answer = client.post("/api/teach", json={"word": "fork", "drawings": FORKS[:5]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    taught = Path(body["path"])
    assert taught.parent == run.parent and taught.name.startswith("teach-fork-") and body["run"] == taught.name
    assert body["categories"][-1] == "fork" and body["held_out"]["drawings"] == 5 and body["seconds"] < 30
    assert printed.lines == [f"taught 'fork' from 5 drawings in {body['seconds']:.1f} s "
                             f"({body['held_out']['recognised']} of 5 recognised when left out): {taught}"]
    info = client.get("/api/model").json()
    assert info["run"] == taught.name and info["categories"][-1] == "fork" and info["taught"] == ["fork"]
    sixth = client.post("/api/predict", json={"drawing": FORKS[5]}).json()
    assert sixth["top"][0]["category"] == "fork"
    assert client.post("/api/save", json={"word": "fork", "drawing": FORKS[5]}).status_code == 200  # a known word now

    kept = [json.loads(line) for line in (save_dir / "fork.ndjson").read_text().splitlines()]
    assert len(kept) == 6 and [r["drawing"] for r in kept[:5]] == FORKS[:5]  # the raw strokes, as drawn
    base, _ = load_model(run)
    model, meta = load_model(taught)
    assert meta["classes"] == [*base_classes(run), "fork"] and meta["taught"][0]["key_ids"] == \
        [r["key_id"] for r in kept[:5]]
    assert meta["extended_from"]["run"] == str(run.resolve()) and model.temperature == base.temperature
    old, new = base.state_dict(), model.state_dict()
    assert all(np.array_equal(new[k], v) for k, v in old.items() if k != "dense1.W" and k != "dense1.b")
    assert np.array_equal(new["dense1.W"][:, :-1], old["dense1.W"])  # the old rows as they were
    summary = evaluate(taught)  # its test split: the base run's (the word has only its examples)
    assert summary["n"] == evaluate(run)["n"] and summary["accuracy"] <= evaluate(run)["accuracy"]
    results, _ = predict([str(save_dir / "fork.ndjson")], taught, top_k=1)
    assert sum(r["top"][0]["category"] == "fork" for r in results) >= 5


def base_classes(run: Path) -> list[str]:
    return json.loads((run / "model.json").read_text())["classes"]


def test_a_taught_run_can_be_taught_again_in_a_later_session(shapes):
    run, save_dir = shapes
    first = TestClient(make_app(run, save_dir)).post("/api/teach", json={"word": "fork", "drawings": FORKS[:5]})
    taught = Path(first.json()["path"])
    later = TestClient(make_app(taught, save_dir))  # `doodle play --model` the taught run
    assert ready(later)["state"] == "ready"  # the fork drawings read back from fork.ndjson by key_id
    again = later.post("/api/teach", json={"word": "trident", "drawings": FORKS[3:6]})
    assert again.status_code == 200, again.text
    meta = json.loads((Path(again.json()["path"]) / "model.json").read_text())
    assert [t["word"] for t in meta["taught"]] == ["fork", "trident"] and meta["classes"][-2:] == ["fork", "trident"]
    assert meta["extended_from"]["run"] == str(taught.resolve())
    (save_dir / "fork.ndjson").unlink()
    gone = TestClient(make_app(taught, save_dir))
    status = ready(gone)
    assert status["state"] == "unavailable" and "the drawings that taught 'fork' are gone" in status["reason"]


@pytest.mark.parametrize("body, status, message", [
    ({"word": "circle", "drawings": FORKS[:5]}, 400, "already knows 'circle'"),
    ({"word": "../fork", "drawings": FORKS[:5]}, 400, "cannot name a file"),
    ({"word": "fork\n", "drawings": FORKS[:5]}, 400, "control character"),
    ({"word": "fork", "drawings": FORKS[:1]}, 400, "2 to 20 drawings"),
    ({"word": "fork", "drawings": "a fork"}, 400, "2 to 20 drawings"),
    ({"word": "fork", "drawings": [FORKS[0], FORKS[1], [[[1, 2], [3, 4]]]]}, 400, "drawing 3: stroke 1 is not"),
    ({"drawings": FORKS[:5]}, 400, "missing 'word'"),
])
def test_bad_requests_are_refused_and_nothing_is_saved(shapes, body, status, message):
    run, save_dir = shapes
    answer = TestClient(make_app(run, save_dir)).post("/api/teach", json=body)
    assert answer.status_code == status and message in answer.json()["error"]
    assert not save_dir.exists() or not list(save_dir.iterdir())
    assert [p.name for p in run.parent.iterdir()] == ["shapes"]


def test_without_the_runs_data_teaching_says_why_and_saves_nothing(shapes):
    run, save_dir = shapes
    meta = json.loads((run / "model.json").read_text())
    meta["data_dir"] = str(run.parent / "gone")
    (run / "model.json").write_text(json.dumps(meta))
    client = TestClient(make_app(run, save_dir))
    status = ready(client)
    assert status["state"] == "unavailable" and "which is gone" in status["reason"]
    answer = client.post("/api/teach", json={"word": "fork", "drawings": FORKS[:5]})
    assert answer.status_code == 503 and answer.json()["error"].startswith("cannot teach here: ")
    assert not (save_dir / "fork.ndjson").exists()


def test_the_server_answers_while_it_learns_and_refuses_a_second_learn(shapes, monkeypatch):
    run, save_dir = shapes
    release, inside = threading.Event(), threading.Event()
    real = doodle.teach.Teacher.teach

    def slow(self, *args, **kwargs):
        inside.set()
        assert release.wait(30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(doodle.teach.Teacher, "teach", slow)

    def post(url, path, body):
        request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    with running(make_app(run, save_dir)) as url:
        results = {}
        first = threading.Thread(target=lambda: results.update(first=post(url, "/api/teach",
                                                                          {"word": "fork", "drawings": FORKS[:5]})))
        first.start()
        assert inside.wait(30)
        code, guess = post(url, "/api/predict", {"drawing": FORKS[5]})  # answered while the word is learned
        assert code == 200 and guess["top"][0]["category"] != "fork"
        code, refused = post(url, "/api/teach", {"word": "spoon", "drawings": FORKS[:5]})
        assert code == 409 and refused["error"] == "already learning 'fork': wait until it is learned, then teach " \
                                                   "the next word"
        release.set()
        first.join(60)
        assert results["first"][0] == 200
        assert post(url, "/api/predict", {"drawing": FORKS[5]})[1]["top"][0]["category"] == "fork"
    assert not (save_dir / "spoon.ndjson").exists()
