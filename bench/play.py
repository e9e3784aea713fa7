"""`doodle play` under load: server time per guess, keep-alive latency, and memory under a hostile burst.

Three sections (--sections, default all):
  server   Quick, Draw! raw drawings posted to the app in process (Starlette's TestClient, no network): a typical
           one (the shared raw drawing nearest 200 points), the longest shared one, a 2,000-point drawing (the
           typical one resampled along its strokes), and the drawing nearest 200 points of 4 strokes (the
           median). The server's own time (its Server-Timing header), the
           in-process round trip, and the steps alone; then the same guess with its "why?" (explain=1: the top
           guess's saliency and each stroke's contribution, doodle.explain.why), requests alternating with the
           plain ones. Target: < 20 ms median for the typical drawing, with its explanation too.
  latency  What a client sees per guess on one kept-alive connection (what a browser uses), from a server in
           another process: a persistent httpx2 client, http.client on one connection, and real Chromium
           (Playwright, a page calling fetch() in a loop). Each against two servers in the same run: one whose
           listening socket does not name TCP (so asyncio leaves Nagle on: the old play.bind) and play.bind.
  memory   The server's peak memory (VmHWM) while --clients clients post at once: the audit's worst case (one
           stroke of 20,000 points zig-zagging corner to corner between 0 and 1e9: ~430 KB, 7.2 million units of
           ink); a zig-zag of equal peaks inside the ink budget that sends Ramer-Douglas-Peucker ~3,900 levels
           deep; and the longest real drawing of the shared sample (what must stay fast). `doodle play` runs
           as a process of its own under an address-space cap (--mem-cap-gb); with --before DIR the same burst
           hits the doodle of an older checkout too (e.g. `git archive <commit> | tar -x -C DIR`).
Without --model it first trains a small offline model with the offline config's layer sizes (784-256-128-8).
Usage: python bench/play.py [--model RUN] [--runs 200] [--sections server,latency,memory] [--before DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from _common import REPO, quickdraw_root

CHROMIUM = "/usr/bin/chromium"
WARM_UP = 5


TYPICAL_STROKES = 4  # the median stroke count of the shared raw drawings (7,198 of them; the mean is 5.0)


def nearest(target: int, strokes: int | None = None) -> tuple[str, dict, int]:
    """The shared raw drawing whose point count is nearest `target` (of those with `strokes` strokes, if given):
    (file name, record, points)."""
    best = None
    for path in sorted((quickdraw_root() / "full" / "raw").glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if strokes is not None and len(rec["drawing"]) != strokes:
                continue
            n = sum(len(s[0]) for s in rec["drawing"])
            if best is None or abs(n - target) < abs(best[2] - target):
                best = (path.name, rec, n)
    return best


def densify(rec: dict, total: int) -> dict:
    """The drawing resampled to `total` points, spread over its strokes by length (times interpolated too)."""
    strokes = [np.array(s, dtype=np.float64) for s in rec["drawing"]]  # each (3, n)
    arcs = [np.concatenate([[0], np.cumsum(np.hypot(*np.diff(s[:2], axis=1)))]) for s in strokes]
    lengths = np.array([a[-1] for a in arcs]) + 1e-9
    counts = np.maximum(2, np.round(total * lengths / lengths.sum())).astype(int)
    counts[np.argmax(counts)] += total - counts.sum()
    out = []
    for s, a, n in zip(strokes, arcs, counts):
        at = np.linspace(0, a[-1], n)
        out.append([np.round(np.interp(at, a, row), 2).tolist() for row in s])
    return dict(rec, drawing=out)


def figures(ms: list[float]) -> str:
    return f"median {statistics.median(ms):6.2f} ms, p90 {np.percentile(ms, 90):6.2f} ms"


# ---------------------------------------------------------------------------------------------
# server: time per guess in process


def server_section(model_dir: Path, runs: int, tmp: Path) -> None:
    from starlette.testclient import TestClient

    from doodle.checkpoint import load_model
    from doodle.inputs import Drawing, to_bitmap
    from doodle.play import check_drawing, make_app
    from doodle.predict import probabilities
    from doodle.strokes import finish_strokes

    typical = nearest(200)
    drawings = [typical, nearest(10 ** 6), (f"{typical[0]} resampled", densify(typical[1], 2000), 2000),
                nearest(200, TYPICAL_STROKES)]  # the stroke attribution re-renders the drawing once per stroke
    client = TestClient(make_app(model_dir, tmp / "mine"))
    model, meta = load_model(model_dir)
    raster = meta["raster"]
    print(f"\n== server: time per guess, in process (model {' -> '.join(map(str, meta['layer_sizes']))}, "
          f"{runs} requests per drawing)")
    for name, rec, points in drawings:
        body = json.dumps({"drawing": rec["drawing"]})
        server, trip = [], []
        for i in range(runs + WARM_UP):
            t0 = time.perf_counter()
            res = client.post("/api/predict", content=body, headers={"Content-Type": "application/json"})
            elapsed = (time.perf_counter() - t0) * 1000
            assert res.status_code == 200, res.text
            if i >= WARM_UP:
                trip.append(elapsed)
                server.append(float(res.headers["server-timing"].split("dur=")[1]))
        steps = {"check": [], "simplify": [], "rasterize": [], "forward": []}
        for _ in range(runs):
            t0 = time.perf_counter()
            strokes, simplified = check_drawing(json.loads(body)["drawing"])
            t1 = time.perf_counter()
            drawing = Drawing(finish_strokes(strokes, simplified))
            t2 = time.perf_counter()
            bitmap = to_bitmap(drawing, raster)
            t3 = time.perf_counter()
            probabilities(model, bitmap[None], model_dir)
            t4 = time.perf_counter()
            for key, a, b in (("check", t0, t1), ("simplify", t1, t2), ("rasterize", t2, t3), ("forward", t3, t4)):
                steps[key].append((b - a) * 1000)
        print(f"\n{name} key_id {rec['key_id']}: {points:,} points in {len(rec['drawing'])} strokes, "
              f"{len(body):,} bytes of JSON")
        print(f"  server time per prediction  {figures(server)}   (target < 20 ms median)")
        print(f"  in-process round trip       {figures(trip)}")
        print("  steps (median): " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in steps.items()))
        explained_section(client, model, raster, model_dir, body, drawing, bitmap, runs)


def explained_section(client, model, raster: dict, model_dir: Path, body: str, drawing, bitmap, runs: int) -> None:
    """The same guess with its "why?", requests alternating with plain ones (same load), and its steps alone."""
    from doodle.explain import input_gradients, log_probability, without_each_stroke
    from doodle.pixels import to_float
    from doodle.predict import probabilities

    plain, explained = [], []
    for i in range(runs + WARM_UP):
        for path, out in (("/api/predict", plain), ("/api/predict?explain=1", explained)):
            res = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert res.status_code == 200, res.text
            if i >= WARM_UP:
                out.append(float(res.headers["server-timing"].split("dur=")[1]))
    steps = {"saliency": [], "re-render without each stroke": [], "their forward passes": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        input_gradients(model, to_float(bitmap[None]), log_probability(0))
        t1 = time.perf_counter()
        without = without_each_stroke(drawing.strokes, raster)
        t2 = time.perf_counter()
        probabilities(model, without, model_dir)
        t3 = time.perf_counter()
        for key, a, b in zip(steps, (t0, t1, t2), (t1, t2, t3)):
            steps[key].append((b - a) * 1000)
    print(f"  with its explanation        {figures(explained)}   (target < 20 ms median; plain guesses "
          f"alternating with these: {figures(plain)}, ratio of medians "
          f"{statistics.median(explained) / statistics.median(plain):.1f})")
    print(f"  explanation steps (median, {len(drawing.strokes)} strokes): "
          + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in steps.items()))


# ---------------------------------------------------------------------------------------------
# latency: one kept-alive connection, from another process


def serve_forever(model_dir: Path, save_dir: Path, nagle: bool) -> None:
    """(--serve) Serve the app on a free loopback port and print its URL; with `nagle`, on a socket made as
    play.bind made it before it named TCP (asyncio then never sets TCP_NODELAY on accepted connections)."""
    import socket

    from doodle import play

    app = play.make_app(model_dir, save_dir)
    if nagle:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    else:
        sock = play.bind("127.0.0.1", 0)
    print(play.url_of(sock), flush=True)
    play._server(app).run(sockets=[sock])


@contextlib.contextmanager
def server_process(cmd: list[str], env: dict, cwd: Path, mem_cap: int | None = None):
    """A server subprocess that prints its URL on stdout: yields (url, pid). It starts in `cwd`, away from
    this checkout, so its PYTHONPATH decides which doodle it runs."""
    def cap():
        if mem_cap:
            resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=cwd,
                            preexec_fn=cap)
    try:
        url = None
        for line in proc.stdout:
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            if found:
                url = found.group(0)
                break
        if url is None:
            raise SystemExit(f"server did not start: {' '.join(cmd)}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def httpx_client(url: str, body: str, runs: int) -> list[float]:
    import httpx2

    with httpx2.Client(base_url=url, timeout=30) as client:  # one pooled connection, kept alive
        return timed_requests(lambda: client.post("/api/predict", content=body,
                                                  headers={"Content-Type": "application/json"}).status_code, runs)


def plain_client(url: str, body: str, runs: int) -> list[float]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def one():
        conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/json"})
        res = conn.getresponse()
        res.read()
        return res.status

    try:
        return timed_requests(one, runs)
    finally:
        conn.close()


def timed_requests(request, runs: int) -> list[float]:
    ms = []
    for i in range(runs + WARM_UP):
        t0 = time.perf_counter()
        status = request()
        elapsed = (time.perf_counter() - t0) * 1000
        assert status == 200, status
        if i >= WARM_UP:
            ms.append(elapsed)
    return ms


def chromium_client(url: str, body: str, runs: int) -> list[float] | None:
    """fetch() in a loop from a page of the server's own origin, timed by the page itself."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).is_file():
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(url + "/api/model")  # same origin: no CORS, and the connection it opened stays alive
            return page.evaluate("""async ([body, runs, warm]) => {
                const ms = [];
                for (let i = 0; i < runs + warm; i++) {
                    const t0 = performance.now();
                    const res = await fetch('/api/predict', {method: 'POST', body,
                                                             headers: {'Content-Type': 'application/json'}});
                    await res.json();
                    if (!res.ok) throw new Error('status ' + res.status);
                    if (i >= warm) ms.push(performance.now() - t0);
                }
                return ms; }""", [body, runs, WARM_UP])
        finally:
            browser.close()


def latency_section(model_dir: Path, runs: int, tmp: Path) -> None:
    typical = nearest(200)
    body = json.dumps({"drawing": typical[1]["drawing"]})
    print(f"\n== latency: one kept-alive connection, {runs} guesses of the typical drawing ({typical[2]} points), "
          "server in its own process")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    results = {}
    for label, nagle in (("before (socket without TCP: Nagle on)", True), ("after (play.bind: TCP_NODELAY)", False)):
        cmd = [sys.executable, __file__, "--serve", str(model_dir), str(tmp / "mine")] + (["--nagle"] if nagle else [])
        with server_process(cmd, env, tmp) as (url, _):
            for client, fn in (("httpx2 keep-alive", httpx_client), ("http.client, one connection", plain_client),
                               ("Chromium fetch()", chromium_client)):
                ms = fn(url, body, runs)
                results[(client, label)] = ms
                shown = figures(ms) if ms else "skipped (no Playwright or no Chromium)"
                print(f"  {label:<40} {client:<28} {shown}")
    for client in ("httpx2 keep-alive", "http.client, one connection", "Chromium fetch()"):
        before, after = (results.get((client, label)) for label in ("before (socket without TCP: Nagle on)",
                                                                     "after (play.bind: TCP_NODELAY)"))
        if before and after:
            print(f"  {client:<28} median before/after: {statistics.median(before) / statistics.median(after):.1f}x")


# ---------------------------------------------------------------------------------------------
# memory: a burst of the heaviest bodies


def worst_body() -> str:
    """The audit's attack: one stroke, 20,000 points from corner to corner and back, 0..1e9 (7.2M units of ink)."""
    corners = [0 if i % 2 == 0 else 10 ** 9 for i in range(20_000)]
    return json.dumps({"drawing": [[corners, corners, list(range(20_000))]]})


def equal_peaks_body() -> str:
    """20,000 points whose ink stays inside the budget: a zig-zag 4.8 units high across the 255-unit box
    (~96,000 units). Every peak ties for the farthest, so Ramer-Douglas-Peucker splits at the first one each
    time and goes ~3,900 levels deep (~200 million point visits) unless its work is bounded too."""
    from doodle.simplify import MAX_INK, ink

    n = 20_000
    xs = [round(i * 255 / (n - 1), 4) for i in range(n)]
    ys = [0.0 if i % 2 == 0 else 4.8 for i in range(n)]
    stroke = [xs, ys, list(range(n))]
    assert 0.9 * MAX_INK < ink([[stroke]])[0] < MAX_INK
    return json.dumps({"drawing": [stroke]})


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    return tuple(int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM"))


@contextlib.contextmanager
def watching(pid: int):
    """Samples the process's peak (VmHWM) every 50 ms, so a server that dies mid-burst still has a figure."""
    seen, done = [0], threading.Event()

    def watch():
        while not done.wait(0.05):
            seen[0] = max(seen[0], memory_kb(pid)[1])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        seen[0] = max(seen[0], memory_kb(pid)[1])


def burst(url: str, body: str, clients: int) -> tuple[Counter, float, str]:
    """`clients` connections post `body` at once: (status counts, seconds, a sample of the bodies of errors)."""
    import httpx2

    statuses, samples = Counter(), {}
    start = threading.Barrier(clients)

    def one():
        with httpx2.Client(base_url=url, timeout=900) as client:
            start.wait()
            try:
                res = client.post("/api/predict", content=body, headers={"Content-Type": "application/json"})
            except httpx2.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                return
            statuses[res.status_code] += 1
            if res.status_code != 200:
                kind = "json" if res.headers.get("content-type", "").startswith("application/json") else "text"
                samples.setdefault(res.status_code, f"{kind}: {res.text[:90]!r}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, time.perf_counter() - t0, "; ".join(f"{k} {v}" for k, v in samples.items())


def memory_section(model_dir: Path, tmp: Path, clients: int, before: Path | None, cap_gb: float) -> None:
    longest = nearest(10 ** 6)
    bodies = {"worst case (7.2M ink)": worst_body(), "equal peaks (96k ink)": equal_peaks_body(),
              f"longest real ({longest[2]:,} points)": json.dumps({"drawing": longest[1]["drawing"]})}
    print(f"\n== memory: {clients} clients at once, `doodle play` in its own process under a {cap_gb:g} GB "
          f"address-space cap; body sizes {', '.join(f'{k} {len(v) / 1e3:.0f} KB' for k, v in bodies.items())}")
    trees = ([("before", before)] if before else []) + [("after", REPO)]
    for label, tree in trees:
        for name, body in bodies.items():
            env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
            cmd = [sys.executable, "-m", "doodle", "play", "--model", str(model_dir), "--port", "0", "--no-open",
                   "--save-dir", str(tmp / "mine")]
            with server_process(cmd, env, tmp, mem_cap=int(cap_gb * 2 ** 30)) as (url, pid):
                import httpx2

                with httpx2.Client(base_url=url) as c:  # warm: the first guess loads what guessing needs
                    c.post("/api/predict", json={"drawing": [[[0, 10, 20], [0, 20, 5]]]})
                rss0, _ = memory_kb(pid)
                with watching(pid) as peak:
                    statuses, seconds, samples = burst(url, body, clients)
                rss1, _ = memory_kb(pid)
                hwm = peak[0]
            counts = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items(), key=str))
            print(f"  {label:<6} {name:<28} peak {hwm / 1e3:7.0f} MB (idle {rss0 / 1e3:4.0f} MB, after "
                  f"{rss1 / 1e3:5.0f} MB{'' if rss1 else ': server gone'})  {seconds:6.1f} s  {counts}"
                  + (f"  [{samples}]" if samples else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--sections", default="server,latency,memory")
    ap.add_argument("--clients", type=int, default=16, help="clients at once in the memory section")
    ap.add_argument("--before", type=Path, help="an older checkout of the repo to hit with the same burst")
    ap.add_argument("--mem-cap-gb", type=float, default=6.0, help="address-space cap of the server in the burst")
    ap.add_argument("--serve", nargs=2, metavar=("MODEL", "SAVE_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--nagle", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_forever(Path(args.serve[0]), Path(args.serve[1]), args.nagle)
        return
    from doodle.train import train

    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model or Path(train(REPO / "configs" / "offline.yaml", ["data.per_category=200",
                                                                                "train.epochs=1"],
                                             data_dir=tmp / "data", out=tmp / "run", workers=1).run)
        print(f"load: {os.getloadavg()[0]:.1f} (1-minute average) on {os.cpu_count()} cores")
        if "server" in sections:
            server_section(model_dir, args.runs, tmp)
        if "latency" in sections:
            latency_section(model_dir, args.runs, tmp)
        if "memory" in sections:
            memory_section(model_dir, tmp, args.clients, args.before, args.mem_cap_gb)


if __name__ == "__main__":
    main()
