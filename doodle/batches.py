"""The training set out of core: rows of the per-category cache files read through memory maps, labels
computed from the rows per class, and an epoch order that reads the disk in blocks.

Nothing here copies a whole category, let alone the dataset: a batch gathers its rows from the maps,
and the pages it touched are handed back to the kernel (they stay in the page cache, but leave this
process's resident set), so memory stays flat whether the data is 1 or 40 GB.

Shuffling (`data.shuffle`):
  full    every epoch is a uniform permutation of the training rows: each batch reads 256 rows from
          anywhere. Best mixing; fast while the files sit in the page cache or on an SSD.
  blocks  the training rows are cut into blocks of `data.block_rows` consecutive rows (one category
          each, as files are per category), the blocks are shuffled, and `data.shuffle_window` rows'
          worth of blocks at a time are mixed row by row (a shuffle buffer, drained window by window).
          The disk is read a block at a time (~50 KB), each block once per epoch.
"""

from __future__ import annotations

import mmap

import numpy as np

RELEASE_BYTES = 256 << 20  # hand mapped pages back to the kernel once this much of files is resident
CHECK_BYTES = 32 << 20  # look at the resident file pages after this much may have been newly mapped
FAULT_SPAN = 64 << 10  # a page fault maps at least the 64 KB around it (fault-around), not just the row


class RowStore:
    """Several uint8 (n_i, S, S) arrays (usually memory-mapped cache files) addressed as one (N, S, S) array."""

    def __init__(self, parts: list[np.ndarray]):
        if not parts:
            raise ValueError("RowStore needs at least one part")
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) != 1 or any(p.dtype != np.uint8 for p in parts):
            raise ValueError(f"parts must be uint8 arrays of one image shape, got {shapes}")
        self._maps = [getattr(p, "_mmap", None) for p in parts]  # the mmap objects, to release pages
        self.parts = [np.asarray(p) for p in parts]  # plain views: indexing skips np.memmap's overhead
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        self.ends = np.cumsum(counts)
        self.starts = self.ends - counts
        self.shape = (int(self.ends[-1]), *shapes.pop())
        self.dtype = np.dtype(np.uint8)
        self._row_bytes = int(np.prod(self.shape[1:]))
        spans = -(-counts * self._row_bytes // FAULT_SPAN) + 1  # +1: the header shifts rows across a span
        self._span0 = np.cumsum(spans) - spans  # (parts,) first span id of each part
        self._touched = np.zeros(int(spans.sum()), dtype=bool)  # spans mapped since the last release
        self._mapped = 0  # bytes mapped since the last release, at most

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """x[rows] as a new in-memory array; sorted rows read each file front to back."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise IndexError(f"rows must be one-dimensional, got shape {rows.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        ordered = len(rows) < 2 or bool(np.all(rows[1:] >= rows[:-1]))
        order = None if ordered else np.argsort(rows, kind="stable")
        sorted_rows = rows if ordered else rows[order]
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        lo = np.searchsorted(sorted_rows, self.starts)
        hi = np.searchsorted(sorted_rows, self.ends)
        for p in np.flatnonzero(hi > lo):
            a, b = lo[p], hi[p]
            # mode="clip": the rows were checked above
            np.take(self.parts[p], sorted_rows[a:b] - self.starts[p], axis=0, out=out[a:b], mode="clip")
        self._count_mapped(sorted_rows, hi - lo)
        if order is not None:
            unsorted = np.empty_like(out)
            unsorted[order] = out
            out = unsorted
        return out

    def _count_mapped(self, sorted_rows: np.ndarray, per_part: np.ndarray) -> None:
        """Note the fault-around spans these rows touched for the first time since the last release, and
        release the maps once RELEASE_BYTES may be mapped.

        Counting rows would not do: 512 random rows (400 KB) can map 32 MB of the files. Counting every
        touch would not either: block shuffling comes back to the same spans all through a window, and
        releasing them each time costs page faults and TLB flushes (half the speed, measured).
        """
        if not len(sorted_rows):
            return
        part = np.repeat(np.arange(len(per_part)), per_part)
        span = self._span0[part] + (sorted_rows - self.starts[part]) * self._row_bytes // FAULT_SPAN  # sorted
        span = span[np.r_[True, span[1:] != span[:-1]]]
        fresh = span[~self._touched[span]]
        self._touched[fresh] = True
        self._mapped += len(fresh) * FAULT_SPAN
        if self._mapped >= CHECK_BYTES:  # the kernel may map more (large page-cache folios): ask it
            self._mapped = 0
            resident = _resident_file_bytes()
            if resident is None or resident >= RELEASE_BYTES:
                self.release()

    def release(self) -> None:
        """Drop the mapped pages from this process (the page cache keeps them): resident memory stays flat."""
        self._mapped = 0
        self._touched[:] = False
        for m in self._maps:
            if m is not None and hasattr(m, "madvise") and not m.closed:
                m.madvise(mmap.MADV_DONTNEED)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([_index(key, len(self))]))[0]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        return self.take(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        whole = self.take(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)


class Labels:
    """The class of every row when rows of class c are contiguous and come in class order: y without storing it."""

    def __init__(self, counts: list[int]):
        self.ends = np.cumsum(np.asarray(counts, dtype=np.int64))
        self.dtype = np.dtype(np.int32)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return np.int32(np.searchsorted(self.ends, _index(key, len(self)), side="right"))
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return np.searchsorted(self.ends, rows, side="right").astype(np.int32)

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def _resident_file_bytes() -> int | None:
    """This process's resident file-backed memory (Linux /proc/self/statm), None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[2]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return None


def _index(i: int, n: int) -> int:
    if not -n <= i < n:
        raise IndexError(f"row {i} out of range for {n} rows")
    return int(i) % n


class RowView:
    """x[rows] without gathering it: slicing the view gathers only that slice (to score a split in chunks)."""

    def __init__(self, x, rows: np.ndarray):
        self.x, self.rows = x, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.x[self.rows[key]]


def epoch_order(train: np.ndarray, data: dict, rng: np.random.Generator) -> np.ndarray:
    """The order in which one epoch visits the training rows (see the module docstring)."""
    if data["shuffle"] == "full":
        return rng.permutation(train)
    return block_order(train, data["block_rows"], data["shuffle_window"], rng)


def block_order(train: np.ndarray, block_rows: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled blocks of `block_rows` consecutive entries of `train`, mixed row by row within windows of
    about `window` rows (a whole number of blocks). block_rows=1 is a uniform permutation."""
    n = len(train)
    n_blocks = -(-n // block_rows)
    blocks = rng.permutation(n_blocks)
    per_window = max(1, window // block_rows)
    order = np.empty(n, dtype=train.dtype)
    at = 0
    for w in range(0, n_blocks, per_window):
        first = blocks[w:w + per_window, None] * block_rows  # (blocks, 1) positions in train
        pos = (first + np.arange(block_rows)).ravel()
        rows = train[pos[pos < n]]
        order[at:at + len(rows)] = rng.permutation(rows)
        at += len(rows)
    return order
