"""How close `simplify_raw` is to Google's own simplified drawings, which details matter, and loading speed.

    python bench/simplify.py [--ablations] [--copies 4]

Closeness: every shared raw drawing whose key_id also appears in full/simplified (5,528 pairs). Printed:
identical output, same point counts, mean |coordinate difference| where counts match, a symmetric mean
point-to-polyline distance (0..255 units), and the mean 28x28 pixel error between rasterising ours and
Google's (when doodle.raster exists). --ablations reruns the recipe with one detail changed at a time.
Speed: iter_drawings over the shared files concatenated --copies times (one big file, as downloaded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import quickdraw_root
from doodle.simplify import rdp, simplify_raw, simplify_raw_batch
from doodle.strokes import iter_drawings


def load_pairs(root: Path):
    """[(word, key_id, raw strokes, Google's simplified strokes)] for every shared key_id."""
    pairs = []
    for raw_path in sorted((root / "full" / "raw").glob("*.ndjson")):
        google = {}
        with open(root / "full" / "simplified" / raw_path.name) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    google[rec["key_id"]] = rec["drawing"]
        with open(raw_path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    if rec["key_id"] in google:
                        pairs.append((raw_path.stem, rec["key_id"], rec["drawing"], google[rec["key_id"]]))
    return pairs


def to_polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(n,) distance from each of points (n, 2) to the polyline line (m, 2)."""
    if len(line) == 1:
        return np.hypot(*(points - line[0]).T)
    a, b = line[:-1][None], line[1:][None]  # (1, m-1, 2)
    d = b - a
    q = points[:, None]  # (n, 1, 2)
    length2 = (d ** 2).sum(-1)
    t = np.clip(((q - a) * d).sum(-1) / np.where(length2 > 0, length2, 1), 0, 1)
    return np.sqrt(((q - (a + t[..., None] * d)) ** 2).sum(-1)).min(axis=1)


def closeness(mine: list, google: list) -> dict:
    """Per-drawing comparison figures."""
    same_counts = len(mine) == len(google) and all(len(a[0]) == len(b[0]) for a, b in zip(mine, google))
    out = {"identical": mine == google, "same_counts": same_counts}
    if same_counts:
        diffs = [np.abs(np.array(a) - np.array(b)).ravel() for a, b in zip(mine, google)]
        out["mad"] = float(np.concatenate(diffs).mean())
    dists = []
    for a, b in zip(mine, google):
        pa, pb = np.array(a, float).T, np.array(b, float).T  # (n, 2)
        dists += [to_polyline_distance(pa, pb), to_polyline_distance(pb, pa)]
    out["polyline"] = float(np.concatenate(dists).mean())
    return out


def report(name: str, pairs, outputs, raster=None) -> None:
    rows = [closeness(m, g) for m, (_, _, _, g) in zip(outputs, pairs)]
    n = len(rows)
    identical = sum(r["identical"] for r in rows)
    counts = sum(r["same_counts"] for r in rows)
    mad = np.mean([r["mad"] for r in rows if "mad" in r])
    poly = np.mean([r["polyline"] for r in rows])
    line = (f"{name:<44} identical {identical}/{n} ({identical / n:.2%})  same counts {counts / n:.2%}  "
            f"|dxy| {mad:.5f}  polyline {poly:.5f}")
    if raster is not None:
        ours = raster([m for m in outputs]).astype(np.int16)
        theirs = raster([g for _, _, _, g in pairs]).astype(np.int16)
        err = np.abs(ours - theirs).reshape(n, -1).mean(axis=1)
        line += f"  28x28 |err| mean {err.mean():.4f}/255 max {err.max():.2f}/255"
    print(line)


# ---------------------------------------------------------------------------------------------
# Ablations: the recipe one stroke at a time, with one detail switched off


def variant(raw, *, resample=True, blend=True, exact_end=True, half_even=True, scale_order=True):
    """A plain per-stroke version of the recipe with switches for the details that matter."""
    xs = [np.asarray(s[0], float) for s in raw if len(s[0])]
    ys = [np.asarray(s[1], float) for s in raw if len(s[0])]
    x0, y0 = min(x.min() for x in xs), min(y.min() for y in ys)
    extent = max(max(x.max() - x0 for x in xs), max(y.max() - y0 for y in ys)) or np.inf
    scale = (lambda v: v * 255.0 / extent) if scale_order else (lambda v: v * (255.0 / extent))
    out = []
    for x, y in zip(xs, ys):
        p = np.stack([scale(x - x0), scale(y - y0)], axis=1)
        if len(p) == 1:
            p = p[[0, 0]]
        elif resample:
            seg = np.sqrt(((p[1:] - p[:-1]) ** 2).sum(axis=1))
            cum = np.concatenate([[0.0], np.cumsum(seg)])
            if cum[-1] == 0:
                p = p[[0, -1]]
            else:
                t = np.append(np.arange(0.0, cum[-1], 1.0), cum[-1])
                j = np.minimum(np.searchsorted(cum, t, side="right") - 1, len(p) - 2)
                u = ((t - cum[j]) / np.where(seg[j] > 0, seg[j], 1.0))[:, None]
                q = (1 - u) * p[j] + u * p[j + 1] if blend else p[j] + u * (p[j + 1] - p[j])
                if exact_end:
                    q[-1] = p[-1]
                p = q
        kept = rdp(p, 2.0)
        r = np.rint(kept) if half_even else np.floor(kept + 0.5)
        out.append(r.astype(int).T.tolist())
    return out


ABLATIONS = {
    "no resampling (RDP on raw points)": dict(resample=False),
    "blend a + u*(b-a) instead of (1-u)*a + u*b": dict(blend=False),
    "last sample from the blend, not exact": dict(exact_end=False),
    "round half up instead of half to even": dict(half_even=False),
    "scale by v * (255/extent)": dict(scale_order=False),
}


# ---------------------------------------------------------------------------------------------
# Speed


def _best_of(repeats: int, fn) -> float:
    """The fastest of `repeats` timings of fn() (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _decode_all(loads, lines: list[bytes]) -> None:
    for line in lines:  # nothing kept, as in iter_drawings (a list of them all would time the garbage collector)
        loads(line)


def loading_speed(root: Path, copies: int, repeats: int = 3) -> None:
    """Drawings/s of iter_drawings on one big file of each format (orjson decoding, and the json module's
    decoding it replaced), beside plain json.loads and orjson.loads of the same lines."""
    import orjson

    from doodle import strokes

    def json_decode(text: bytes):  # what iter_drawings decoded with before orjson
        try:
            return strokes._decode(text.decode("utf-8"))
        except ValueError as err:
            raise strokes.BadInput(f"malformed JSON ({strokes._json_reason(err)})") from None

    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("simplified", "raw"):
            big = Path(tmp) / f"{fmt}.ndjson"
            with open(big, "wb") as out:
                for _ in range(copies):
                    for path in sorted((root / "full" / fmt).glob("*.ndjson")):
                        out.write(path.read_bytes().rstrip(b"\n") + b"\n")
            size_mb = big.stat().st_size / 1e6
            lines = [line for line in big.read_bytes().splitlines() if line.strip()]
            n = len(lines)
            t_json = _best_of(repeats, lambda: _decode_all(json.loads, lines))
            t_orjson = _best_of(repeats, lambda: _decode_all(orjson.loads, lines))
            assert sum(1 for _ in iter_drawings(big)) == n
            dt = _best_of(repeats, lambda: sum(1 for _ in iter_drawings(big)))
            fast = strokes.decode_line
            strokes.decode_line = json_decode
            try:
                dt_json = _best_of(repeats, lambda: sum(1 for _ in iter_drawings(big)))
            finally:
                strokes.decode_line = fast
            print(f"{fmt:<10} {n} drawings, {size_mb:.0f} MB: {n / dt:,.0f} drawings/s ({size_mb / dt:.1f} MB/s), "
                  f"{dt_json / dt:.2f}x the json-module loader ({n / dt_json:,.0f}/s); orjson.loads alone "
                  f"{n / t_orjson:,.0f}/s, json.loads {n / t_json:,.0f}/s ({t_json / t_orjson:.1f}x); "
                  f"decoding is {t_orjson / dt:.0%} of the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablations", action="store_true", help="also run the recipe with one detail changed")
    parser.add_argument("--copies", type=int, default=4, help="copies of the shared files in the speed test")
    args = parser.parse_args()
    root = quickdraw_root()
    pairs = load_pairs(root)
    print(f"{len(pairs)} raw drawings with a Google simplified twin (same key_id)")
    try:
        from doodle.rasterpool import rasterize_batch
    except ImportError:
        raster = None
        print("(doodle.raster not available: no pixel comparison)")
    else:
        def raster(drawings):
            return rasterize_batch(drawings)

    raws = [raw for _, _, raw, _ in pairs]
    t = time.perf_counter()
    one_by_one = [simplify_raw(raw) for raw in raws]
    t_single = time.perf_counter() - t
    t = time.perf_counter()
    batched = [d for i in range(0, len(raws), 64) for d in simplify_raw_batch(raws[i:i + 64])]
    t_batch = time.perf_counter() - t
    assert batched == one_by_one
    report("simplify_raw", pairs, one_by_one, raster)
    misses = [(w, k) for (w, k, _, g), m in zip(pairs, one_by_one) if m != g]
    if misses:
        print("  not identical:", ", ".join(f"{w} {k}" for w, k in misses[:10]))
    print(f"simplify_raw: {len(raws) / t_single:,.0f} drawings/s one by one, "
          f"{len(raws) / t_batch:,.0f}/s in batches of 64 (what iter_drawings uses)")
    if args.ablations:
        report("plain per-stroke reference", pairs, [variant(r) for r in raws])
        for name, switches in ABLATIONS.items():
            report(name, pairs, [variant(r, **switches) for r in raws])
    loading_speed(root, args.copies)


if __name__ == "__main__":
    main()
