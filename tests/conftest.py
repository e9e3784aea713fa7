"""Shared fixtures: the committed Quick, Draw! fixture, the whole shared sample, and a loopback static file server.

Two kinds of data tests:
- behaviour tests use `quickdraw_dir`, the small real sample committed under tests/fixtures/quickdraw/ (always
  present, so a bare clone tests every behaviour);
- sweeps over the whole shared sample are marked `@pytest.mark.shared` and use `shared_quickdraw_dir`
  ($DOODLE_QUICKDRAW, else ../shared/quickdraw beside the repo). Without the sample they are skipped with a
  one-line reason; with DOODLE_REQUIRE_SHARED=1 (CI) that skip, and any other skip, is a failure instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "quickdraw"
REQUIRE_SHARED = os.environ.get("DOODLE_REQUIRE_SHARED", "") not in ("", "0")


def quickdraw_root() -> Path:
    """The shared Quick, Draw! sample: $DOODLE_QUICKDRAW, else ../shared/quickdraw beside the repo."""
    return Path(os.environ.get("DOODLE_QUICKDRAW", REPO.parent / "shared" / "quickdraw"))


def pytest_collection_modifyitems(config, items):
    """Without the shared sample, each `shared` sweep is skipped, saying where the sample was looked for."""
    root = quickdraw_root()
    if (root / "full").is_dir():
        return
    reason = f"whole-sample sweep: no shared Quick, Draw! sample at {root} (set DOODLE_QUICKDRAW)"
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("shared") is not None:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With DOODLE_REQUIRE_SHARED=1 nothing may be skipped silently: a skip becomes a failure naming its reason."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SHARED and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr
        if isinstance(reason, tuple):  # (path, line, "Skipped: <reason>")
            reason = reason[2].removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped, but DOODLE_REQUIRE_SHARED=1 forbids skips: {reason}"


@pytest.fixture(scope="session")
def quickdraw_dir() -> Path:
    """The committed fixture, in Google's bucket layout (full/<format>/<word>.<ext>, pairs.json, sketches/)."""
    return FIXTURE


@pytest.fixture
def shared_quickdraw_dir(request) -> Path:
    """The whole shared sample, for tests marked `shared` (which are skipped when it is absent)."""
    if request.node.get_closest_marker("shared") is None:
        pytest.fail(f"{request.node.nodeid} uses shared_quickdraw_dir: mark it @pytest.mark.shared", pytrace=False)
    return quickdraw_root()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="session")
def static_server(quickdraw_dir):
    """Serve the fixture on 127.0.0.1 like `python -m http.server` (which ignores Range).

    Yields the base URL; `<base>/full/<format>/<word>.<ext>` is Google's bucket layout.
    """
    handler = functools.partial(_QuietHandler, directory=str(quickdraw_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- doodle play


@pytest.fixture(scope="session")
def play_model(tmp_path_factory) -> Path:
    """A small model of the built-in offline shapes (a few seconds), good enough to call a drawn circle a circle."""
    from doodle.train import train

    root = tmp_path_factory.mktemp("play-model")
    result = train(REPO / "configs" / "offline.yaml", ["data.per_category=300", "train.epochs=4", "model.hidden=[64]"],
                   data_dir=root / "data", out=root / "run", workers=1)
    return Path(result.run)


# ---------------------------------------------------------------- a tiny run (tests/helpers.py: TINY)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The built-in synthetic shapes of the tiny run, written once for the session."""
    from doodle.synthetic import write_synthetic
    from helpers import WORDS

    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, words=WORDS, n=60, seed=0)
    return root


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, data_dir) -> Path:
    """The tiny run, trained once for the session: damage a copy (helpers.copy_run), never this folder."""
    from doodle.train import train
    from helpers import TINY

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(None, TINY, data_dir=data_dir, out=run)
    return run


def pytest_terminal_summary(terminalreporter):
    """List the files tests kept for people to look at (screenshots), so CI logs show where they are."""
    paths = [value for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, "user_properties", ()) if name == "artifact"]
    if paths:
        terminalreporter.section("artifacts")
        for path in dict.fromkeys(paths):
            terminalreporter.write_line(str(path))

