"""doodle.download against a loopback HTTP server that misbehaves on request."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from doodle import download as dl
from doodle.errors import DoodleError
from doodle.progress import Reporter

FAST = dict(retries=3, backoff=0.001, timeout=5.0)  # tiny backoff: tests must not sleep


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under server.root; server.cfg says how to misbehave, server.log records requests.

    cfg["script"] lists what to do to successive requests (for paths containing cfg["only"]):
    "fail" (answer fail_status), "drop" (promise the whole body, send half, hang up), "stall"
    (wait stall_seconds first), "badrange" (answer a Range with the file's first bytes, saying so),
    None (behave). Once it is empty, every request behaves.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv, cfg = self.server, self.server.cfg
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        entry = {"path": "/" + name, "range": self.headers.get("Range"), "status": None, "sent": 0}
        with srv.lock:
            srv.log.append(entry)
            targeted = cfg["only"] is None or cfg["only"] in name
            action = cfg["script"].pop(0) if targeted and cfg["script"] else None
        if action == "fail":
            return self._reply(entry, cfg["fail_status"], b"try later")
        file = srv.root / name
        if not file.is_file():
            return self._reply(entry, 404, b"no such object")
        data = file.read_bytes()
        status, start, body = 200, 0, data
        rng = self.headers.get("Range")
        if rng and cfg["honour_range"]:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self._reply(entry, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status, body = 206, data[start:end + 1]
            if action == "badrange":  # a cache that answers some other range than the one asked for
                start, body = 0, data[:len(body)]
        headers = {"Content-Length": str(len(body))}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        if action == "stall":
            time.sleep(cfg["stall_seconds"])
        if action == "drop":  # promise the whole body, send half, hang up
            body = body[:len(body) // 2]
            headers["Connection"] = "close"
            self.close_connection = True
        self._reply(entry, status, body, headers)

    def _reply(self, entry, status, body, headers=None):
        entry["status"], entry["sent"] = status, len(body)  # before sending: the client may finish first
        self.send_response(status)
        headers = headers or {"Content-Length": str(len(body))}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading, as it may
            pass


class Server:
    def __init__(self, root: Path, **cfg):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
        self.httpd.root = Path(root)
        self.httpd.cfg = dict(honour_range=True, script=[], fail_status=500, stall_seconds=0.0, only=None)
        self.httpd.cfg.update(cfg)
        self.httpd.log = []
        self.httpd.lock = threading.Lock()
        self.cfg, self.log = self.httpd.cfg, self.httpd.log
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(quickdraw_dir):
    """A server over the committed fixture; tweak `server.cfg` before downloading."""
    srv = Server(quickdraw_dir)
    yield srv
    srv.close()


@pytest.fixture
def tmp_server(tmp_path):
    """A server over an empty folder `server.httpd.root` that the test fills."""
    root = tmp_path / "remote"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.close()


class Recorder(Reporter):
    def __init__(self):
        self.events = []

    def start(self, key, description, total=None, unit=""):
        self.events.append(("start", key, total, unit))

    def update(self, key, advance=0, completed=None, total=None, **fields):
        self.events.append(("update", key, advance, completed))

    def end(self, key):
        self.events.append(("end", key))

    def log(self, message):
        self.events.append(("log", message))


def src(quickdraw_dir: Path, fmt: str, word: str) -> Path:
    return quickdraw_dir / "full" / fmt / f"{word}.{dl.FORMATS[fmt]}"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------- names

def test_names_and_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("DOODLE_BASE_URL", raising=False)
    assert dl.resolve_base_url() == dl.DEFAULT_BASE_URL
    assert dl.resolve_base_url("http://mirror/x/") == "http://mirror/x"
    assert dl.resolve_base_url(str(tmp_path)) == tmp_path.resolve().as_uri()
    monkeypatch.setenv("DOODLE_BASE_URL", "http://env-mirror")
    assert dl.resolve_base_url() == "http://env-mirror"
    assert dl.resolve_base_url("http://explicit") == "http://explicit"
    assert dl.remote_url("http://h/b", "simplified", "alarm clock") == \
        "http://h/b/full/simplified/alarm%20clock.ndjson"
    assert dl.remote_url("http://h/b/", "numpy_bitmap", "The Eiffel Tower") == \
        "http://h/b/full/numpy_bitmap/The%20Eiffel%20Tower.npy"
    assert dl.local_path(tmp_path, "raw", "alarm clock") == tmp_path / "raw" / "alarm clock.ndjson"
    with pytest.raises(DoodleError, match="ftp"):
        dl.resolve_base_url("ftp://x")
    with pytest.raises(DoodleError, match="existing folder"):
        dl.resolve_base_url(str(tmp_path / "missing"))


def test_unknown_word_or_format_fails_before_any_request(server, tmp_path):
    with pytest.raises(DoodleError) as err:
        dl.download(["cat", "aple", "cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    msg = str(err.value)
    assert "'aple'" in msg and "apple" in msg and "\n" not in msg
    with pytest.raises(DoodleError, match="numpy_bitmap"):
        dl.download(["cat"], fmt="bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    with pytest.raises(DoodleError, match="max_drawings"):
        dl.download(["cat"], data_dir=tmp_path, base_url=server.url, max_drawings=0, **FAST)
    assert server.log == []
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- success

@pytest.mark.parametrize("fmt", list(dl.FORMATS))
def test_all_formats_byte_identical(server, tmp_path, quickdraw_dir, fmt):
    rec = Recorder()
    words = ["alarm clock", "cat", "alarm clock"]  # spaces, and a duplicate fetched once
    results = dl.download(words, fmt=fmt, data_dir=tmp_path, base_url=server.url, reporter=rec, **FAST)
    assert [r.word for r in results] == ["alarm clock", "cat"]
    assert sorted(e["path"] for e in server.log) == [f"/full/{fmt}/alarm clock.{dl.FORMATS[fmt]}",
                                                     f"/full/{fmt}/cat.{dl.FORMATS[fmt]}"]  # fetched in parallel
    assert all(e["range"] is None for e in server.log)
    for r in results:
        source = src(quickdraw_dir, fmt, r.word)
        assert r.status == "downloaded" and r.error is None
        assert r.path == tmp_path / fmt / source.name
        assert r.path.read_bytes() == source.read_bytes()
        assert r.bytes == source.stat().st_size
        if fmt == "numpy_bitmap":
            assert r.drawings == np.load(source).shape[0]
        else:
            assert r.drawings == len(source.read_bytes().splitlines())
    # Progress: one start with the size, chunk-sized advances adding up to it, one end.
    key = f"{fmt}/cat"
    mine = [e for e in rec.events if e[0] != "log" and e[1] == key]
    size = src(quickdraw_dir, fmt, "cat").stat().st_size
    assert mine[0] == ("start", key, size, "bytes") and mine[-1] == ("end", key)
    advances = [e[2] for e in mine if e[0] == "update"]
    assert sum(advances) == size and max(advances) <= 64 * 1024
    assert leftovers(tmp_path / fmt) == sorted(
        [f"alarm clock.{dl.FORMATS[fmt]}", f"cat.{dl.FORMATS[fmt]}",
         f".alarm clock.{dl.FORMATS[fmt]}.json", f".cat.{dl.FORMATS[fmt]}.json"])


def test_file_base_and_env_var(tmp_path, quickdraw_dir, server, monkeypatch):
    base = quickdraw_dir.resolve().as_uri()
    res = dl.download(["alarm clock"], fmt="raw", data_dir=tmp_path / "a", base_url=base, **FAST)
    assert res[0].status == "downloaded"
    assert res[0].path.read_bytes() == src(quickdraw_dir, "raw", "alarm clock").read_bytes()
    # file:// has no Range: a limited .npy still reads only what it needs from the local file.
    res = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path / "a", base_url=base, max_drawings=9, **FAST)
    np.testing.assert_array_equal(np.load(res[0].path), np.load(src(quickdraw_dir, "numpy_bitmap", "cat"))[:9])
    monkeypatch.setenv("DOODLE_BASE_URL", server.url)
    res = dl.download(["cat"], data_dir=tmp_path / "b", **FAST)
    assert res[0].status == "downloaded" and [e["path"] for e in server.log] == ["/full/simplified/cat.ndjson"]


# ---------------------------------------------------------------------------------------- failures

def test_404_reports_and_leaves_nothing(server, tmp_path):
    results = dl.download(["ant", "cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    ant, cat = results
    assert ant.status == "failed" and cat.status == "downloaded"
    assert ant.error == (f"{server.url}/full/numpy_bitmap/ant.npy: not found (404); is 'ant' spelled right? "
                         f"closest: pants, van, peanut")
    assert len([e for e in server.log if e["path"].endswith("ant.npy")]) == 1  # 404 is not retried
    assert leftovers(tmp_path / "numpy_bitmap") == [".cat.npy.json", "cat.npy"]
    with pytest.raises(DoodleError, match="could not download 1 of 2 file.*ant.npy: not found"):
        dl.ensure_downloaded(["ant", "cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    paths = dl.ensure_downloaded(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    assert paths == [tmp_path / "numpy_bitmap" / "cat.npy"]


def test_500_then_success(server, tmp_path, quickdraw_dir):
    server.cfg.update(script=["fail"] * 2)
    rec = Recorder()
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, reporter=rec, **FAST)
    assert r.status == "downloaded"
    assert r.path.read_bytes() == src(quickdraw_dir, "simplified", "cat").read_bytes()
    assert [e["status"] for e in server.log] == [500, 500, 200]
    logs = [e[1] for e in rec.events if e[0] == "log"]
    assert len(logs) == 2 and all("retrying simplified/cat.ndjson after HTTP 500" in m for m in logs)


def test_retries_exhausted_and_4xx_not_retried(server, tmp_path):
    server.cfg.update(script=["fail"] * 10, only="cat")
    dog, cat = dl.download(["dog", "cat"], data_dir=tmp_path, base_url=server.url, retries=2, backoff=0.001)
    assert dog.status == "downloaded"  # one file's failure does not stop the others
    assert cat.status == "failed" and "HTTP 500" in cat.error and "gave up after 3 attempts" in cat.error
    assert len([e for e in server.log if "cat" in e["path"]]) == 3
    assert not (tmp_path / "simplified" / "cat.ndjson").exists()
    server.cfg.update(script=["fail"] * 10, fail_status=403)
    server.log.clear()
    [cat] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert cat.status == "failed" and "HTTP 403" in cat.error and len(server.log) == 1
    server.cfg.update(script=["fail"], fail_status=429)
    [cat] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert cat.status == "downloaded"


def test_timeout_is_retried(server, tmp_path, quickdraw_dir):
    server.cfg.update(script=["stall"], stall_seconds=2.0)
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, retries=2, backoff=0.001, timeout=0.5)
    assert r.status == "downloaded" and len(server.log) == 2
    assert r.path.read_bytes() == src(quickdraw_dir, "simplified", "cat").read_bytes()


def test_bad_npy_fails_cleanly(tmp_server, tmp_path):
    folder = tmp_server.httpd.root / "full" / "numpy_bitmap"
    folder.mkdir(parents=True)
    (folder / "cat.npy").write_bytes(b"<html>not an array</html>" * 10)
    arr = np.arange(20 * 784, dtype=np.uint8).reshape(20, 784)
    np.save(folder / "dog.npy", arr)
    (folder / "dog.npy").write_bytes((folder / "dog.npy").read_bytes()[:-784])  # header promises one row more
    out = tmp_path / "data"
    cat, dog = dl.download(["cat", "dog"], fmt="numpy_bitmap", data_dir=out, base_url=tmp_server.url, **FAST)
    assert cat.status == dog.status == "failed"
    assert "not a .npy file" in cat.error and "bad .npy" in dog.error
    cat, dog = dl.download(["cat", "dog"], fmt="numpy_bitmap", data_dir=out, base_url=tmp_server.url,
                           max_drawings=50, **FAST)
    assert cat.status == dog.status == "failed"
    assert "not a .npy file" in cat.error and "bad .npy" in dog.error
    assert leftovers(out) == []


# ---------------------------------------------------------------------------------------- resume

def test_drop_then_resume_with_range(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "numpy_bitmap", "cat").read_bytes()
    server.cfg.update(script=["drop"])
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "resumed" and r.drawings == np.load(src(quickdraw_dir, "numpy_bitmap", "cat")).shape[0]
    assert r.path.read_bytes() == source
    half = len(source) // 2
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [
        (None, 200, half), (f"bytes={half}-", 206, len(source) - half)]
    assert not (tmp_path / "numpy_bitmap" / "cat.npy.part").exists()


def test_failed_drop_keeps_part_and_next_run_resumes(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "raw", "cat").read_bytes()
    server.cfg.update(script=["drop"])
    [r] = dl.download(["cat"], fmt="raw", data_dir=tmp_path, base_url=server.url, retries=0, backoff=0.001)
    part = tmp_path / "raw" / "cat.ndjson.part"
    assert r.status == "failed" and "connection dropped" in r.error
    assert not r.path.exists() and part.read_bytes() == source[:len(source) // 2]
    server.log.clear()
    [r] = dl.download(["cat"], fmt="raw", data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "resumed" and r.path.read_bytes() == source and r.drawings == len(source.splitlines())
    assert [e["range"] for e in server.log] == [f"bytes={len(source) // 2}-"]


def test_attempts_that_make_progress_do_not_use_up_retries(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "numpy_bitmap", "dog").read_bytes()
    server.cfg.update(script=["drop"] * 4)
    [r] = dl.download(["dog"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, retries=1,
                      backoff=0.001)
    assert r.status == "resumed" and r.path.read_bytes() == source
    assert [e["status"] for e in server.log] == [200, 206, 206, 206, 206]
    server.cfg.update(script=["fail", "fail"])  # no progress: the second failure is the last
    [r] = dl.download(["dog"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, retries=1,
                      backoff=0.001, force=True)
    assert r.status == "failed" and "gave up after 2 attempts" in r.error


def test_server_ignoring_range_restarts_cleanly(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    part = tmp_path / "simplified" / "cat.ndjson.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not a prefix of the file\n")
    server.cfg.update(honour_range=False)
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=41-", 200)]
    assert r.status == "downloaded" and r.path.read_bytes() == source and not part.exists()


def test_partial_that_is_already_whole(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    part = tmp_path / "simplified" / "cat.ndjson.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(source)  # killed between the last byte and the rename
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert [e["status"] for e in server.log] == [416]
    assert r.status == "resumed" and r.path.read_bytes() == source and r.drawings == len(source.splitlines())


# ---------------------------------------------------------------------------------------- limits

def test_max_drawings_ndjson(server, tmp_path, quickdraw_dir):
    lines = src(quickdraw_dir, "raw", "apple").read_bytes().splitlines(keepends=True)
    assert len(lines) > 7
    [r] = dl.download(["apple"], fmt="raw", data_dir=tmp_path, base_url=server.url, max_drawings=7, **FAST)
    assert r.status == "downloaded" and r.drawings == 7
    assert r.path.read_bytes() == b"".join(lines[:7])
    meta = json.loads((tmp_path / "raw" / ".apple.ndjson.json").read_text())
    assert meta == {"url": f"{server.url}/full/raw/apple.ndjson", "bytes": r.bytes, "max_drawings": 7, "drawings": 7}
    # More than the file holds: the whole file, recorded as complete.
    [r] = dl.download(["apple"], fmt="raw", data_dir=tmp_path, base_url=server.url, max_drawings=1000, **FAST)
    assert r.drawings == len(lines) and r.path.read_bytes() == b"".join(lines)
    assert json.loads((tmp_path / "raw" / ".apple.ndjson.json").read_text())["max_drawings"] is None


@pytest.mark.parametrize("honour_range", [True, False])
def test_max_drawings_npy(server, tmp_path, quickdraw_dir, honour_range):
    server.cfg.update(honour_range=honour_range)
    source = src(quickdraw_dir, "numpy_bitmap", "cat")
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, max_drawings=10, **FAST)
    got = np.load(r.path, allow_pickle=False)
    assert r.status == "downloaded" and r.drawings == 10 and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.load(source)[:10])
    [req] = server.log
    assert req["range"] == "bytes=0-%d" % (128 + 10 * 784 - 1)
    if honour_range:  # only the header and ten rows crossed the wire
        assert req["sent"] == 128 + 10 * 784
    assert leftovers(tmp_path / "numpy_bitmap") == [".cat.npy.json", "cat.npy"]


def test_max_drawings_npy_wider_rows_need_a_second_range(tmp_server, tmp_path):
    folder = tmp_server.httpd.root / "full" / "numpy_bitmap"
    folder.mkdir(parents=True)
    arr = np.random.default_rng(0).random((40, 500)).astype(np.float32)  # 2000-byte rows, not 784
    np.save(folder / "cat.npy", arr)
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=6,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), arr[:6])
    assert [e["range"] for e in tmp_server.log] == ["bytes=0-%d" % (128 + 6 * 784 - 1),
                                                    "bytes=%d-%d" % (128 + 6 * 784, 128 + 6 * 2000 - 1)]
    tmp_server.cfg.update(script=["drop"])  # a drop mid-way: the attempt starts again and succeeds
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=20,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), arr[:20])


def test_npy_limit_beyond_rows_is_the_whole_file(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "numpy_bitmap", "eye")  # 20 rows
    [r] = dl.download(["eye"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, max_drawings=5000,
                      **FAST)
    assert r.drawings == 20 and r.path.read_bytes() == source.read_bytes()
    [r] = dl.download(["eye"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "skipped" and len(server.log) == 1


def test_skip_sidecar_limits_and_force(server, tmp_path, quickdraw_dir):
    lines = src(quickdraw_dir, "simplified", "cat").read_bytes().splitlines(keepends=True)

    def get(n=None, force=False):
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, max_drawings=n, force=force, **FAST)
        return r.status, r.drawings, len(server.log)

    assert get(5) == ("downloaded", 5, 1)
    assert get(3) == ("skipped", 5, 1)  # fewer than we have: nothing fetched
    assert get(5) == ("skipped", 5, 1)
    assert get(8) == ("downloaded", 8, 2)  # more than we have: fetched again
    assert (tmp_path / "simplified" / "cat.ndjson").read_bytes() == b"".join(lines[:8])
    n = len(lines)  # 12 in the fixture
    assert get() == ("downloaded", n, 3)  # the whole file
    assert get() == ("skipped", n, 3)
    assert get(3) == ("skipped", n, 3)
    assert get(force=True) == ("downloaded", n, 4)
    assert get(4, force=True) == ("downloaded", 4, 5)
    # A sidecar that does not match the file (replacement killed before its rename): fetch again.
    path = tmp_path / "simplified" / "cat.ndjson"
    path.write_bytes(b"".join(lines[:2]))
    assert get(2) == ("downloaded", 2, 6)
    # No sidecar at all: a whole file someone put there.
    (tmp_path / "simplified" / ".cat.ndjson.json").unlink()
    assert get(10) == ("skipped", None, 6)


def test_limit_served_from_a_bigger_partial(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    lines = source.splitlines(keepends=True)
    part = tmp_path / "simplified" / "cat.ndjson.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(source[:len(source) * 2 // 3])  # an interrupted full download
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, max_drawings=4, **FAST)
    assert r.drawings == 4 and r.path.read_bytes() == b"".join(lines[:4]) and server.log == []
    assert part.exists()  # kept for the full download
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "resumed" and r.path.read_bytes() == source
    assert server.log[0]["range"] == f"bytes={len(source) * 2 // 3}-"


def test_force_ignores_an_old_partial(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    part = tmp_path / "simplified" / "cat.ndjson.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b'{"not": "the same file"}\n')
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, force=True, **FAST)
    assert r.status == "downloaded" and r.path.read_bytes() == source
    assert [e["range"] for e in server.log] == [None]


def test_wrong_range_answer_restarts_from_zero(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    part = tmp_path / "simplified" / "cat.ndjson.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(source[:5000])
    server.cfg.update(script=["badrange"])
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=5000-", 206), (None, 200)]
    assert r.status == "downloaded" and r.path.read_bytes() == source


def test_max_drawings_npy_header_longer_than_guessed(tmp_server, tmp_path):
    folder = tmp_server.httpd.root / "full" / "numpy_bitmap"
    folder.mkdir(parents=True)
    dtype = np.dtype([(f"a_rather_long_field_name_{i:03d}", np.uint8) for i in range(100)])  # a ~4 KB header
    arr = np.arange(5 * 100, dtype=np.uint8).view(dtype)
    np.save(folder / "cat.npy", arr)
    assert (folder / "cat.npy").stat().st_size - 5 * 100 > 128 + 784
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=1,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), arr[:1])


def test_unresolvable_host_says_so(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    rec = Recorder()
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url="http://quickdraw.invalid", retries=1, backoff=0.001,
                      reporter=rec)
    assert r.status == "failed"
    assert r.error == ("http://quickdraw.invalid/full/simplified/cat.ndjson: cannot resolve quickdraw.invalid: "
                       "Name or service not known; offline? set $DOODLE_BASE_URL to a mirror "
                       "(gave up after 2 attempts)")
    assert [e[0] for e in rec.events] == ["log"] and leftovers(tmp_path) == []
