"""`doodle play`'s API through Starlette's TestClient (and, where it matters, a real uvicorn on a loopback
port): guesses, every kind of bad input, the size limit, static files only from doodle/static, saving in
Google's raw format, parity with `doodle predict`, and the CLI command."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from starlette.testclient import TestClient
from typer.testing import CliRunner

from doodle import metrics, play
from doodle.checkpoint import load_model
from doodle.cli import app as cli_app
from doodle.play import MAX_BODY, MAX_STROKES, make_app, running
from doodle.predict import predict
from doodle.raster import rasterize
from doodle.simplify import MAX_INK, simplify_raw
from doodle.strokes import MAX_POINTS, iter_drawings, parse_drawing

FIXTURE = REPO / "tests" / "fixtures" / "play" / "raw_shapes.ndjson"
SHAPES = ["circle", "square", "triangle", "hexagon", "octagon", "star", "line", "zigzag"]
JSON = {"Content-Type": "application/json"}


def circle(n=60, cx=300.0, cy=260.0, r=140.0) -> list:
    """One raw stroke going once round a circle, in canvas pixels, 16 ms apart."""
    a = np.linspace(0, 2 * np.pi, n)
    return [[(cx + r * np.cos(a)).round(2).tolist(), (cy + r * np.sin(a)).round(2).tolist(),
             list(range(0, 16 * n, 16))]]


@pytest.fixture(scope="module")
def client(play_model, tmp_path_factory):
    return TestClient(make_app(play_model, tmp_path_factory.mktemp("mine")))


def post(client, path, body=None, content=None, headers=JSON, **params):
    if content is None:
        content = json.dumps(body)
    return client.post(path, content=content, headers=headers, params=params)


def error_of(res, status: int) -> str:
    assert res.status_code == status, res.text
    body = res.json()
    assert list(body) == ["error"] and "\n" not in body["error"], body
    return body["error"]


# ---------------------------------------------------------------- model, page, static files


def test_model_endpoint(client, play_model):
    info = client.get("/api/model").json()
    _, meta = load_model(play_model)
    assert info["categories"] == meta["classes"] == SHAPES
    assert info["raster"] == meta["raster"] and info["run"] == play_model.name
    assert info["limits"] == {"body_bytes": MAX_BODY, "points": MAX_POINTS, "strokes": MAX_STROKES, "ink": MAX_INK}
    # "I see X" from the threshold training chose on the validation split
    threshold = meta["metrics"]["confident_at"]
    assert info["confidence"] == {"threshold": threshold, "precision": 0.9, "source": "validation"}
    assert 0 < info["confidence"]["threshold"] <= 1


def test_a_model_without_a_threshold_gets_the_default(play_model, tmp_path):
    import shutil

    old = shutil.copytree(play_model, tmp_path / "old")
    meta = json.loads((old / "model.json").read_text())
    for key in ("confident_at", "confident_precision"):
        del meta["metrics"][key]
    (old / "model.json").write_text(json.dumps(meta))
    info = TestClient(make_app(old, tmp_path / "mine")).get("/api/model").json()
    assert info["confidence"] == {"threshold": metrics.DEFAULT_CONFIDENT_AT, "precision": 0.9, "source": "default"}


def test_page_is_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and "/static/play.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("play.js", "text/javascript"), ("play.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        res = client.get(f"/static/{name}")
        assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
        assert res.content == (REPO / "doodle" / "static" / name).read_bytes()
    assert "http" not in (REPO / "doodle" / "static" / "index.html").read_text().replace("http-equiv", "")  # no CDN


def asgi_call(app, path: str, method: str = "GET", headers=(), chunks=(), endless: bytes | None = None):
    """Call the ASGI app directly (raw, un-normalised path; body in chunks). Returns (status, body, chunks read)."""
    sent, reads = [], [0]
    pieces = list(chunks)

    async def receive():
        reads[0] += 1
        if endless is not None:
            return {"type": "http.request", "body": endless, "more_body": True}
        body = pieces.pop(0) if pieces else b""
        return {"type": "http.request", "body": body, "more_body": bool(pieces)}

    async def send(message):
        sent.append(message)

    raw_path = path.encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": raw_path, "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, reads[0]


TRAVERSALS = ["/static/../play.py", "/static/..%2fplay.py", "/static/%2e%2e%2fplay.py", "/static/%2e%2e/play.py",
              "/static/..%2f..%2fpyproject.toml", "/static/..%5c..%5cpyproject.toml", "/static/%2fetc%2fpasswd",
              "/static//etc/passwd", "/static/.%2e/play.py", "/static/%252e%252e%252fplay.py", "/static/",
              "/static/__init__.py", "/static/play.py", "/../pyproject.toml", "/static/..", "/static/play.js/.."]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_the_static_folder(client, path):
    served = {p.read_bytes() for p in (REPO / "doodle" / "static").iterdir()}
    res = client.get(path)  # httpx sends %-escapes as they are, but resolves a literal /../ itself
    assert res.status_code in (400, 404) or res.content in served, (path, res.status_code)
    status, body, _ = asgi_call(client.app, path.replace("%2f", "/").replace("%2e", "."))  # decoded, as a server may
    assert status in (400, 404) or body in served, (path, status)


# ---------------------------------------------------------------- guesses


def test_a_drawn_circle_is_a_circle(client, play_model):
    res = post(client, "/api/predict", {"drawing": circle()})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["top"][0]["category"] == "circle"
    assert len(out["top"]) == 5 and [t["probability"] for t in out["top"]] == sorted(
        (t["probability"] for t in out["top"]), reverse=True)
    bitmap = np.array(out["bitmap"])
    assert bitmap.shape == (28, 28) and bitmap.min() == 0 and bitmap.max() == 255
    assert "predict;dur=" in res.headers["server-timing"]
    every = post(client, "/api/predict", {"drawing": circle()}, top_k="100").json()["top"]  # clipped to all 8
    assert sorted(t["category"] for t in every) == sorted(SHAPES) and math.isclose(
        sum(t["probability"] for t in every), 1.0, abs_tol=1e-5)
    assert len(post(client, "/api/predict", {"drawing": circle()}, top_k="1").json()["top"]) == 1
    no_times = [s[:2] for s in circle()]
    assert post(client, "/api/predict", {"drawing": no_times}).json() == out
    assert post(client, "/api/predict", {"drawing": circle(), "format": None}).json() == out  # null: not given


def test_simplified_format_goes_straight_to_the_rasterizer(client, play_model):
    from doodle.synthetic import generate

    model, meta = load_model(play_model)
    drawing = generate("square", 1, seed=3)[0]["drawing"]
    out = post(client, "/api/predict", {"drawing": drawing, "format": "simplified"}, top_k="8").json()
    bitmap = rasterize(drawing, size=28, line_width=meta["raster"]["line_width"], padding=meta["raster"]["padding"])
    assert out["bitmap"] == bitmap.tolist()
    p = model.predict_proba(bitmap[None])[0]
    assert {t["category"]: t["probability"] for t in out["top"]} == {c: float(v) for c, v in zip(SHAPES, p)}


# ---------------------------------------------------------------- bad input


def stroke(n=3):
    return [list(range(n)), list(range(n)), list(range(n))]


BAD = [
    ("not JSON", "{\"drawing\": [", 400, "body: malformed JSON"),
    ("not UTF-8", b"\xff\xfe{}", 400, "UTF-8"),
    ("array body", [[1, 2]], 400, "JSON object"),
    ("no drawing", {"strokes": []}, 400, "missing 'drawing'"),
    ("drawing a number", {"drawing": 5}, 400, "list of strokes"),
    ("stroke of one row", {"drawing": [[[1, 2]]]}, 400, "stroke 1 is not"),
    ("stroke of four rows", {"drawing": [stroke() + [[1, 2, 3]]]}, 400, "stroke 1 is not"),
    ("stroke a dict", {"drawing": [stroke(), {"x": 1}]}, 400, "stroke 2 is not"),
    ("xs not a list", {"drawing": [[5, [1], [0]]]}, 400, "stroke 1 x is not a list"),
    ("string coordinate", {"drawing": [[["a"], [1], [0]]]}, 400, "stroke 1 x has \"a\""),
    ("boolean coordinate", {"drawing": [[[1], [True], [0]]]}, 400, "stroke 1 y has true"),
    ("null coordinate", {"drawing": [[[1, None], [1, 2], [0, 1]]]}, 400, "stroke 1 x has null"),
    ("nested coordinate", {"drawing": [[[[1]], [1], [0]]]}, 400, "not a number"),
    ("NaN", "{\"drawing\": [[[NaN], [1], [0]]]}", 400, "stroke 1 x has NaN, not a finite number"),
    ("Infinity", "{\"drawing\": [[[1], [-Infinity], [0]]]}", 400, "y has -Infinity, not a finite number"),
    ("overflow to inf", "{\"drawing\": [[[1e999], [1], [0]]]}", 400, "has Infinity, not a finite number"),
    ("huge coordinate", {"drawing": [[[1e12], [1], [0]]]}, 400, "outside"),
    ("huge integer", {"drawing": [[[10 ** 80], [1], [0]]]}, 400, "outside"),
    ("integer of 5,000 digits", "{\"drawing\": [[[" + "9" * 5000 + "], [1], [0]]]}", 400, "malformed JSON (Exceeds"),
    ("nested 100,000 deep", "[" * 100_000 + "]" * 100_000, 400, "malformed JSON (nested too deeply)"),
    ("lengths differ", {"drawing": [[[1, 2], [1], [0, 1]]]}, 400, "2 x but 1 y"),
    ("times short", {"drawing": [[[1, 2], [1, 2], [0]]]}, 400, "2 x but 1 t"),
    ("negative time", {"drawing": [[[1], [1], [-5]]]}, 400, "stroke 1 t has -5"),
    ("empty drawing", {"drawing": []}, 400, "empty drawing"),
    ("only empty strokes", {"drawing": [[[], [], []], [[], []]]}, 400, "empty drawing"),
    ("too many points", {"drawing": [stroke(MAX_POINTS // 2), stroke(MAX_POINTS // 2 + 1)]}, 413,
     "20,001 points, over the limit of 20,000"),
    ("too many strokes", {"drawing": [stroke(1)] * (MAX_STROKES + 1)}, 413, "1,001 strokes, over the limit of 1,000"),
    ("unknown format", {"drawing": [stroke()], "format": "svg"}, 400, "format must be"),
    ("files' own format", {"drawing": [stroke()], "format": "auto"}, 400, "format must be 'raw' or 'simplified'"),
    ("a list as format", {"drawing": [stroke()], "format": ["raw"]}, 400, "format must be 'raw' or 'simplified'"),
    ("an object as format", {"drawing": [stroke()], "format": {}}, 400, "format must be 'raw' or 'simplified'"),
    ("simplified floats", {"drawing": [[[1.5], [1]]], "format": "simplified"}, 400, "not an integer"),
    ("simplified out of range", {"drawing": [[[300], [1]]], "format": "simplified"}, 400, "outside 0..255"),
    ("simplified with times", {"drawing": [stroke()], "format": "simplified"}, 400, "is not [xs, ys]"),
]


@pytest.mark.parametrize("name,body,status,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_predictions_are_4xx_json(client, name, body, status, fragment):
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    assert fragment in error_of(post(client, "/api/predict", content=content), status)


@pytest.mark.parametrize("top_k", ["0", "-2", "three", "1.5", ""])
def test_bad_top_k(client, top_k):
    assert "top_k" in error_of(post(client, "/api/predict", {"drawing": circle()}, top_k=top_k), 400)


def test_wrong_content_type_and_routes(client):
    text = post(client, "/api/predict", content=json.dumps({"drawing": circle()}),
                headers={"Content-Type": "text/plain"})
    assert "Content-Type: application/json" in error_of(text, 415)
    assert error_of(client.get("/api/predict"), 405)
    assert error_of(client.get("/api/nothing"), 404)


def test_bodies_over_the_limit_are_refused_unread(client):
    big = json.dumps({"drawing": circle(), "pad": "x" * MAX_BODY})
    assert "limit" in error_of(post(client, "/api/predict", content=big), 413)
    # A chunked body (no Content-Length) that never ends: refused once the limit is passed, not read whole.
    chunk = b" " * 65536
    status, body, reads = asgi_call(client.app, "/api/predict", "POST", [("content-type", "application/json")],
                                    endless=chunk)
    assert status == 413 and b"limit" in body
    assert reads <= MAX_BODY // len(chunk) + 2
    status, body, reads = asgi_call(client.app, "/api/predict", "POST",
                                    [("content-type", "application/json"), ("content-length", str(10 ** 9))],
                                    endless=chunk)
    assert status == 413 and reads == 0  # Content-Length alone says no
    status, _, _ = asgi_call(client.app, "/api/predict", "POST",
                             [("content-type", "application/json"), ("content-length", "lots")], endless=chunk)
    assert status == 400


def test_a_real_server_refuses_a_huge_body_before_it_is_sent(play_model, tmp_path):
    """uvicorn on a loopback port: a 50 MB Content-Length gets its 413 with not one body byte sent."""
    with running(make_app(play_model, tmp_path)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 50000000\r\n\r\n")
            reply = b""
            while b"}" not in reply and (part := s.recv(4096)):
                reply += part
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "limit" in reply


def test_other_host_names_are_refused_when_asked(play_model, tmp_path):
    """A DNS-rebinding page reaches the loopback server under its own host name: refused."""
    guarded = TestClient(make_app(play_model, tmp_path, allowed_hosts=["127.0.0.1", "localhost"]),
                         base_url="http://127.0.0.1:8000")
    assert guarded.get("/api/model").status_code == 200
    refused = guarded.get("/api/model", headers={"Host": "evil.example:8000"})
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
    assert refused.json() == {"error": "this server answers only for 127.0.0.1, localhost, not for "
                                       "Host 'evil.example:8000'"}
    assert guarded.post("/api/predict", json={"drawing": [[[0, 10], [0, 10]]]},
                        headers={"Host": "evil.example"}).status_code == 400  # before the body is read
    assert guarded.get("/", headers={"Host": "localhost:8000"}).status_code == 200


# ---------------------------------------------------------------- saving


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_save_appends_google_raw_records_that_doodle_reads_back(play_model, tmp_path):
    save_dir = tmp_path / "mine"
    client = TestClient(make_app(play_model, save_dir))
    sent = fixture_records()[:6]
    for rec in sent:
        res = post(client, "/api/save", {"word": rec["word"], "drawing": rec["drawing"]})
        assert res.status_code == 200, res.text
        assert res.json()["saved"] == str(save_dir / f"{rec['word']}.ndjson")
    files = sorted(save_dir.glob("*.ndjson"))
    assert [f.name for f in files] == ["circle.ndjson", "square.ndjson", "triangle.ndjson"]
    saved = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(saved) == 6 and all(list(r) == ["key_id", "word", "countrycode", "timestamp", "recognized", "drawing"]
                                   for r in saved)
    assert sorted(json.dumps(r["drawing"]) for r in saved) == sorted(json.dumps(r["drawing"]) for r in sent)
    assert len({r["key_id"] for r in saved}) == 6
    assert all(r["key_id"].isdigit() and len(r["key_id"]) == 16 for r in saved)
    assert all(r["timestamp"].endswith(" UTC") and r["countrycode"] == "ZZ" for r in saved)
    # recognized = the model's top guess was the word, as in the game
    results, _ = predict([str(f) for f in files], play_model, top_k=1)
    assert [r["recognized"] for r in saved] == [res["top"][0]["category"] == r["word"]
                                                for res, r in zip(results, saved)]
    read = [d for f in files for d in iter_drawings(f, strict=True)]
    assert [d["word"] for d in read] == [r["word"] for r in saved]
    assert [d["drawing"] for d in read] == [simplify_raw(r["drawing"]) for r in saved]
    # ...and `doodle evaluate <save-dir>/*.ndjson` scores the model on them
    res = CliRunner().invoke(cli_app, ["evaluate", *map(str, files), "--model", str(play_model), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n"] == 6 and {k: v["support"] for k, v in summary["per_class"].items()
                                  if v["support"]} == {"circle": 3, "square": 2, "triangle": 1}


def test_save_after_a_torn_line_keeps_everything(play_model, tmp_path):
    """A file an earlier crash left without its final newline: the new record starts a line of its own."""
    path = tmp_path / "circle.ndjson"
    good = fixture_records()[0]
    before = (json.dumps(good) + "\n" + '{"word": "circle", "drawi').encode()
    path.write_bytes(before)
    client = TestClient(make_app(play_model, tmp_path))
    assert post(client, "/api/save", {"word": "circle", "drawing": circle()}).status_code == 200
    after = path.read_bytes()
    assert after.startswith(before + b"\n") and after.endswith(b"\n")
    drawings = list(iter_drawings(path))
    assert len(drawings) == 2 and drawings[1]["drawing"] == simplify_raw(circle())


@pytest.mark.parametrize("body,fragment", [
    ({"word": "cat", "drawing": circle()}, "unknown word \"cat\""),
    ({"word": ["circle"], "drawing": circle()}, "unknown word"),
    ({"drawing": circle()}, "missing 'word'"),
    ({"word": "circle", "drawing": [s[:2] for s in circle()]}, "[xs, ys, ts]"),
    ({"word": "circle", "drawing": circle(), "format": "simplified"}, "save takes raw drawings"),
    ({"word": "circle", "drawing": []}, "empty drawing"),
])
def test_bad_saves_write_nothing(play_model, tmp_path, body, fragment):
    client = TestClient(make_app(play_model, tmp_path / "mine"))
    assert fragment in error_of(post(client, "/api/save", body), 400)
    assert not (tmp_path / "mine").exists()


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "star.ndjson"
    lines = [json.dumps({"i": i, "pad": chr(97 + i) * 300_000}).encode() + b"\n" for i in range(12)]
    threads = [threading.Thread(target=play.append_line, args=(path, line)) for line in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(path.read_bytes().splitlines(keepends=True)) == sorted(lines)


# ---------------------------------------------------------------- parity with `doodle predict`


def parity(client, files: list[Path], play_model, n_classes: int) -> tuple[int, float]:
    """(drawings compared, max |API - doodle predict| probability) over every line of the files.

    The bitmaps must be identical; the probabilities then differ only by float32 rounding, as `doodle predict`
    runs all its drawings through the network as one batch and the API one at a time.
    """
    results, meta = predict([str(f) for f in files], play_model, top_k=n_classes)
    records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    assert len(records) == len(results)
    worst = 0.0
    for rec, expected in zip(records, results):
        out = post(client, "/api/predict", {"drawing": rec["drawing"]}, top_k=str(n_classes)).json()
        trained_way = rasterize(parse_drawing(rec, "x")["drawing"], size=28, line_width=meta["raster"]["line_width"],
                                padding=meta["raster"]["padding"])  # what `doodle predict` feeds the model
        assert out["bitmap"] == trained_way.tolist(), expected["input"]
        got = out["top"]
        mine = {t["category"]: t["probability"] for t in got}
        theirs = {t["category"]: t["probability"] for t in expected["top"]}
        assert mine.keys() == theirs.keys() and got[0]["category"] == expected["top"][0]["category"], expected["input"]
        worst = max(worst, max(abs(mine[c] - theirs[c]) for c in mine))
    return len(records), worst


def test_parity_with_doodle_predict_on_the_committed_drawings(client, play_model):
    n, worst = parity(client, [FIXTURE], play_model, len(SHAPES))
    assert n == 10 and worst <= 1e-6


@pytest.mark.shared
def test_parity_with_doodle_predict_on_the_shared_raw_sample(client, play_model, shared_quickdraw_dir, record_property):
    files = [shared_quickdraw_dir / "full" / "raw" / f"{w}.ndjson"
             for w in SHAPES + ["cat", "The Eiffel Tower", "bicycle"]]
    n, worst = parity(client, files, play_model, len(SHAPES))
    record_property("parity", f"{n} drawings, max abs diff {worst:.2e}")
    assert n > 300 and worst <= 1e-6


# ---------------------------------------------------------------- the command


def ctrl_c(monkeypatch) -> list:
    """uvicorn's Server.run replaced by Ctrl-C at once; returns the (app, address, socket protocol) it was asked to
    serve."""
    import uvicorn

    served = []

    def run(server, sockets=None):
        served.append((server.config.app, sockets[0].getsockname(), sockets[0].proto))
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn.Server, "run", run)
    return served


def test_doodle_play_prints_url_model_categories_and_stops_cleanly(play_model, tmp_path, monkeypatch):
    served = ctrl_c(monkeypatch)
    res = CliRunner().invoke(cli_app, ["play", "--model", str(play_model), "--port", "0", "--no-open",
                                       "--save-dir", str(tmp_path / "mine")])
    assert res.exit_code == 0, res.output
    (app, (host, port), proto), = served
    assert host == "127.0.0.1" and port > 0 and f"http://127.0.0.1:{port}/" in res.stdout
    assert str(play_model) in res.stdout and ", ".join(SHAPES) in res.stdout and "warning" not in res.output
    assert proto == socket.IPPROTO_TCP  # what makes asyncio set TCP_NODELAY on every accepted connection
    served_app = TestClient(app, base_url=f"http://127.0.0.1:{port}")
    assert served_app.get("/api/model").json()["categories"] == SHAPES
    for host_name in ("localhost", "[::1]", f"127.0.0.1:{port}"):
        assert served_app.get("/api/model", headers={"Host": host_name}).status_code == 200, host_name
    # the app `doodle play` serves on loopback answers only for loopback names (a DNS-rebinding page is refused)
    refused = served_app.post("/api/save", json={"word": "circle", "drawing": circle()},
                              headers={"Host": "evil.example"})
    assert refused.status_code == 400 and "answers only for" in refused.json()["error"]
    assert not (tmp_path / "mine").exists()
    with socket.socket() as busy:  # a port in use is a one-line error
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = CliRunner().invoke(cli_app, ["play", "--model", str(play_model), "--port", str(busy.getsockname()[1]),
                                           "--no-open"])
    assert res.exit_code == 2 and res.stderr.startswith("error: cannot listen on 127.0.0.1")
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cli_app, ["play", "--model", str(tmp_path / "nope"), "--no-open"])
    assert res.exit_code == 2 and "no such model" in res.stderr


def test_serving_beyond_loopback_warns(play_model, tmp_path, monkeypatch):
    from doodle.progress import Reporter

    class Logs(Reporter):
        lines: list[str] = []

        def log(self, message):
            self.lines.append(message)

    ctrl_c(monkeypatch)
    seen = []
    play.serve(play_model, host="0.0.0.0", port=0, save_dir=tmp_path, open_browser=False, reporter=Logs(),
               on_ready=seen.append)
    assert Logs.lines == ["warning: --host 0.0.0.0: other machines can use the model and save drawings"]
    # this machine opens it on loopback; other devices get this machine's network addresses, never 0.0.0.0
    assert seen[0]["url"].startswith("http://127.0.0.1:") and seen[0]["categories"] == SHAPES
    port = seen[0]["url"].rsplit(":", 1)[1]
    for url in seen[0]["lan_urls"]:
        address = url.removeprefix("http://").rsplit(":", 1)[0].strip("[]")
        assert url.endswith(f":{port}") and not ipaddress.ip_address(address).is_loopback and address != "0.0.0.0"
    served = ctrl_c(monkeypatch)
    res = CliRunner().invoke(cli_app, ["play", "--model", str(play_model), "--host", "0.0.0.0", "--port", "0",
                                       "--no-open", "--save-dir", str(tmp_path)], env={"COLUMNS": "80"})
    port = served[0][1][1]
    assert res.exit_code == 0 and f"doodle play at http://127.0.0.1:{port}/" in res.stdout
    assert "http://0.0.0.0" not in res.output
    shown = [line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.strip().startswith("other devices:")]
    with contextlib.closing(play.bind("0.0.0.0", 0)) as sock:  # the same addresses on another port
        other = sock.getsockname()[1]
        assert shown == [url.replace(f":{other}/", f":{port}/") for url in play.lan_urls(sock)]
    paths = (str(tmp_path), str(play_model))  # as long as they are
    assert all(len(line) <= 80 for line in res.output.splitlines() if not any(p in line for p in paths))
    assert play.is_loopback("127.0.0.1") and play.is_loopback("::1") and play.is_loopback("localhost")
    assert not play.is_loopback("0.0.0.0") and not play.is_loopback("192.168.1.5")


def test_play_names_a_few_categories_within_80_columns():
    from doodle.cli import _some_names

    names = [f"category {i}" for i in range(345)]
    line = _some_names("345 categories: ", names, 80)
    assert len(line) <= 80 and line.startswith("345 categories: category 0, category 1,") and line.endswith(" more)")
    shown = line.count("category ")
    assert f"(+{345 - shown} more)" in line
    assert _some_names("8 categories: ", SHAPES, 80) == "8 categories: " + ", ".join(SHAPES)


# ---------------------------------------------------------------- under a hostile or slow client


def test_accepted_connections_have_tcp_nodelay(play_model, tmp_path, monkeypatch):
    """Without it every answer on a kept-alive connection waits ~40 ms (Nagle and the delayed ACK)."""
    import http.client

    servers = []
    real = play._server
    monkeypatch.setattr(play, "_server", lambda app: servers.append(real(app)) or servers[-1])
    with running(make_app(play_model, tmp_path)) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)  # one connection, kept alive
        try:
            for _ in range(2):
                conn.request("GET", "/api/model")
                assert conn.getresponse().read()
            (protocol,) = servers[0].server_state.connections
            accepted = protocol.transport.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()


def zigzag(points: int = 20_000, top: float = 1e9) -> list:
    """The audit's worst case: one stroke from corner to corner and back (~340 KB of JSON raw)."""
    corners = [0 if i % 2 == 0 else top for i in range(points)]
    return [[corners, corners, list(range(points))]]


@pytest.mark.parametrize("body", [{"drawing": zigzag()}, {"drawing": [s[:2] for s in zigzag(top=255)],
                                                          "format": "simplified"},
                                  {"drawing": zigzag(), "word": "circle"}], ids=["raw", "simplified", "save"])
def test_a_drawing_over_the_work_budget_is_refused_before_any_work(play_model, tmp_path, monkeypatch, body):
    from doodle import simplify

    client = TestClient(make_app(play_model, tmp_path / "mine"))
    monkeypatch.setattr(simplify, "_resample", lambda *a: pytest.fail("resampled a drawing over the budget"))
    monkeypatch.setattr(play, "to_bitmap", lambda *a: pytest.fail("rasterized a drawing over the budget"))
    content = json.dumps(body)
    assert len(content) < MAX_BODY
    error = error_of(post(client, "/api/save" if "word" in body else "/api/predict", content=content), 413)
    assert error.startswith("drawing's strokes run ") and "over the limit of 100,000" in error
    assert not (tmp_path / "mine").exists()


def test_heavy_work_takes_turns_and_a_full_line_is_refused_with_503(play_model, tmp_path):
    gate = play.WorkGate(running=1, waiting=1)
    started, release, order = threading.Event(), threading.Event(), []

    def hold():
        with gate.turn():
            started.set()
            release.wait(10)
            order.append("first")

    def queue():
        with gate.turn():
            order.append("second")

    first, second = threading.Thread(target=hold), threading.Thread(target=queue)
    first.start()
    started.wait(10)
    second.start()  # waits in line
    time_out = threading.Event()
    for _ in range(200):  # until the second one is in line (it takes the line's last place)
        try:
            with gate.turn():
                pass
        except play.ApiError as exc:
            assert exc.status == 503 and "busy" in str(exc)
            break
        time_out.wait(0.01)
    else:
        pytest.fail("the line never filled")
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first", "second"]
    with gate.turn():  # free again
        pass
    app = make_app(play_model, tmp_path)
    app.state.player.gate = play.WorkGate(running=1, waiting=0)
    client = TestClient(app)
    with app.state.player.gate.turn():  # a heavy request in progress
        res = post(client, "/api/predict", {"drawing": circle()})
        assert "busy" in error_of(res, 503) and res.headers["retry-after"] == "1"
    assert post(client, "/api/predict", {"drawing": circle()}).status_code == 200


def test_out_of_memory_and_bugs_still_answer_json(play_model, tmp_path, monkeypatch):
    client = TestClient(make_app(play_model, tmp_path), raise_server_exceptions=False)

    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr(play, "to_bitmap", no_memory)
    res = post(client, "/api/predict", {"drawing": circle()})
    assert "ran out of memory" in error_of(res, 503) and res.headers["retry-after"] == "1"
    monkeypatch.setattr(play, "to_bitmap", lambda *a: 1 / 0)
    assert error_of(post(client, "/api/predict", {"drawing": circle()}), 500) == \
        "internal error (ZeroDivisionError); see the server's log"


@pytest.fixture
def overflowing_model(play_model, tmp_path) -> Path:
    """The play model with every weight times 1e30: finite weights, so it loads, but its logits overflow."""
    run = tmp_path / "huge"
    shutil.copytree(play_model, run)
    with np.load(run / "model.npz") as f:
        arrays = {k: f[k] * np.float32(1e30) if k.endswith(".W") else f[k] for k in f.files}
    np.savez(run / "model.npz", **arrays)
    model, _ = load_model(run)
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(model.predict_proba(np.full((1, 28, 28), 255, np.uint8))).any()
    return run


def test_a_model_whose_probabilities_are_not_finite_is_an_error_naming_it(overflowing_model, tmp_path):
    line = json.dumps({"word": "circle", "drawing": circle()})
    res = CliRunner().invoke(cli_app, ["predict", "-", "--model", str(overflowing_model), "--json"], input=line)
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.output
    assert res.stderr.startswith(f"error: {overflowing_model}: the model's probabilities are NaN or infinite "
                                 "for 1 of 1")
    (tmp_path / "circle.ndjson").write_text(line + "\n")
    res = CliRunner().invoke(cli_app, ["evaluate", str(tmp_path / "circle.ndjson"), "--model", str(overflowing_model)])
    assert res.exit_code == 2 and "probabilities are NaN or infinite" in res.stderr
    client = TestClient(make_app(overflowing_model, tmp_path / "mine"))
    error = error_of(post(client, "/api/predict", {"drawing": circle()}), 500)
    assert error.startswith(f"{overflowing_model}: the model's probabilities are NaN")
    assert error == error_of(post(client, "/api/save", {"word": "circle", "drawing": circle()}), 500)
    assert not (tmp_path / "mine").exists()  # a save either succeeds and says so, or writes nothing


def test_saves_that_fail_on_disk_write_nothing_and_say_why(play_model, tmp_path, monkeypatch):
    import errno

    client = TestClient(make_app(play_model, tmp_path))
    assert post(client, "/api/save", {"word": "circle", "drawing": circle()}).status_code == 200
    before = (tmp_path / "circle.ndjson").read_bytes()
    real_write, real_fsync = os.write, os.fsync
    failures = {"full": (os.write, lambda fd, data: real_write(fd, data[:10]), 507, "disk full (short write)"),
                "no space": (os.write, _raises(errno.ENOSPC), 507, "No space left on device"),
                "sync": (os.fsync, _raises(errno.EIO), 500, "Input/output error"),
                "long name": (os.write, _raises(errno.ENAMETOOLONG), 500, "File name too long")}
    for name, (target, fake, status, words) in failures.items():
        monkeypatch.setattr(os, target.__name__, fake)
        try:
            error = error_of(post(client, "/api/save", {"word": "circle", "drawing": circle()}), status)
        finally:
            monkeypatch.setattr(os, "write", real_write)
            monkeypatch.setattr(os, "fsync", real_fsync)
        assert words in error and error.endswith("nothing was written"), name
        assert (tmp_path / "circle.ndjson").read_bytes() == before, name


def _raises(code: int):
    def fail(*args):
        raise OSError(code, os.strerror(code))
    return fail


BAD_WORDS = ["../escaped", "", "a\x00b", "x" * 300, "two\nlines", ".hidden", "a/b", "back\\slash"]


@pytest.mark.parametrize("word", BAD_WORDS, ids=["dot-dot", "empty", "NUL", "300 chars", "newline", "hidden",
                                                 "slash", "backslash"])
def test_a_class_name_that_cannot_name_a_file_is_refused_at_load_and_never_saved(play_model, tmp_path, monkeypatch,
                                                                                   word):
    run = tmp_path / "run"
    shutil.copytree(play_model, run)
    meta = json.loads((run / "model.json").read_text())
    meta["classes"][0] = word
    (run / "model.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(cli_app, ["predict", str(FIXTURE), "--model", str(run)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.startswith(f"error: {run / 'model.json'}: class name ") and "cannot name a file" in res.stderr
    assert len(res.stderr.splitlines()) == 1
    # A model that slipped past load_model: play still writes nothing, inside the save folder or out of it.
    from doodle import checkpoint

    monkeypatch.setattr(checkpoint, "file_name_problem", lambda name: None)
    save_dir = tmp_path / "saves" / "mine"
    client = TestClient(make_app(run, save_dir))
    error = error_of(post(client, "/api/save", {"word": word, "drawing": circle()}), 400)
    assert "cannot name a file" in error
    assert sorted(p.name for p in tmp_path.rglob("*") if p.suffix == ".ndjson" or "escaped" in p.name) == []
