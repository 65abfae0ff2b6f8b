"""Append-only strings with dense integer codes, held in flat buffers that forked workers share.

The resolver's index lives in the gunicorn master and is shared copy-on-write with the workers it
forks. Held as Python objects (a list of `str`, a dict from `str` to `int`), a million records'
strings stay shared only until a query touches them: fetching a string or looking up a code
increments a reference count in the shared heap, and the kernel copies the page holding it into
the worker. Over a minute of load that copied about 1 GB into each worker at 1M records.

Here the strings present at `freeze()` are one `bytes` buffer with offsets, and finding a string's
code bisects a sorted array of their hashes; neither writes anything shared. Strings added after
the freeze (records ingested in real time) go to an ordinary list and dict beside it. Hashes are
Python's own `hash`, stable within a process and the processes forked from it, which is the only
place a table lives: it is never written to disk.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

_HASH_MASK = (1 << 64) - 1
#: Numbers SQL takes of a string (`length(x)`, `ascii(x)`, `ascii(reverse(x))`), kept per frozen code.
FEATURES: dict[str, Callable[[str], int]] = {
    "length": len,
    "first": lambda text: ord(text[0]) if text else 0,     # DuckDB and Spark: ascii('') = 0
    "last": lambda text: ord(text[-1]) if text else 0,
}
_ENCODING = ("utf-8", "surrogatepass")      # text read with surrogateescape round-trips too


class StringTable:
    """Distinct strings <-> codes 0, 1, 2, … in order of first addition."""

    def __init__(self) -> None:
        self._buffer = b""                                 # frozen strings' UTF-8, back to back
        self._offsets = np.zeros(1, dtype=np.int64)        # string i is _buffer[_offsets[i]:_offsets[i + 1]]
        self._hashes = np.empty(0, dtype=np.uint64)        # frozen strings' hashes, sorted
        self._by_hash = np.empty(0, dtype=np.int64)        # their codes, in that order
        self._added: list[str] = []                        # codes len(frozen) … : not yet frozen
        self._added_code: dict[str, int] = {}
        self._features = {name: np.empty(0, dtype=np.int32) for name in FEATURES}   # per frozen code
        # Code points (UTF-32) for the compiled scorer (matching.kernel): frozen strings, then the added ones.
        self._points = np.empty(0, dtype=np.uint32)
        self._point_offsets = np.zeros(1, dtype=np.int64)
        self._added_points = CodePoints()

    def __len__(self) -> int:
        return self.frozen + len(self._added)

    @property
    def frozen(self) -> int:
        """How many strings are held in the flat buffers."""
        return len(self._offsets) - 1

    def code(self, value: str) -> int:
        """The code of `value`, adding it if it is new."""
        found = self.get(value)
        if found is None:
            found = self._added_code[value] = len(self)
            self._added.append(value)
        return found

    def get(self, value: str) -> int | None:
        """The code of `value`, or None if the table does not hold it."""
        found = self._added_code.get(value)
        if found is not None or not self.frozen:
            return found
        h = np.uint64(_hash(value))
        hashes = self._hashes
        i = int(np.searchsorted(hashes, h))
        while i < len(hashes) and hashes[i] == h:          # equal hashes: compare the text
            code = int(self._by_hash[i])
            if self.text(code) == value:
                return code
            i += 1
        return None

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.get(value) is not None

    def text(self, code: int) -> str:
        """The string of one code."""
        if code >= self.frozen:
            return self._added[code - self.frozen]
        return self._buffer[int(self._offsets[code]): int(self._offsets[code + 1])].decode(*_ENCODING)

    def take(self, codes: np.ndarray) -> list[str]:
        """The strings of many codes, as new objects (nothing shared is touched)."""
        codes = np.asarray(codes, dtype=np.int64)
        frozen = self.frozen
        if len(codes) and int(codes.max()) >= frozen:
            return [self.text(int(c)) for c in codes]
        starts, ends = self._offsets[codes].tolist(), self._offsets[codes + 1].tolist()
        buffer = self._buffer
        return [buffer[s:e].decode(*_ENCODING) for s, e in zip(starts, ends)]

    def feature(self, name: str, codes: np.ndarray) -> np.ndarray:
        """`FEATURES[name]` of many codes' strings, as float64; frozen codes without decoding them."""
        codes = np.asarray(codes, dtype=np.int64)
        frozen = codes < self.frozen
        out = np.empty(len(codes), dtype=np.float64)
        out[frozen] = self._features[name][codes[frozen]]
        if not frozen.all():
            fn = FEATURES[name]
            out[~frozen] = [fn(self.text(int(c))) for c in codes[~frozen]]
        return out

    def code_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(points, offsets) of the frozen strings and of the added ones: string i's code points are
        points[offsets[i]:offsets[i + 1]], counting the added ones from 0."""
        added = self._added_points
        if added.count < len(self._added):
            added.extend(self._added[added.count:])
        return self._points, self._point_offsets, *added.arrays()

    def extend(self, values: Iterable[str]) -> np.ndarray:
        """Codes of many strings, adding the new ones."""
        return np.fromiter((self.code(v) for v in values), dtype=np.int64)

    def freeze(self) -> None:
        """Move the strings added since the last freeze into the flat buffers (O(n log n); done after a build)."""
        if not self._added:
            return
        encoded = [s.encode(*_ENCODING) for s in self._added]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(lengths)])
        self._buffer = self._buffer + b"".join(encoded)
        start = len(self._by_hash)
        hashes = np.concatenate([self._hashes, np.fromiter((_hash(s) for s in self._added),
                                                           dtype=np.uint64, count=len(self._added))])
        codes = np.concatenate([self._by_hash, np.arange(start, start + len(self._added), dtype=np.int64)])
        order = np.argsort(hashes, kind="stable")
        self._hashes, self._by_hash = hashes[order], codes[order]
        for name, fn in FEATURES.items():
            self._features[name] = np.concatenate([self._features[name], np.fromiter(
                (fn(s) for s in self._added), dtype=np.int32, count=len(self._added))])
        points = np.frombuffer("".join(self._added).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        self._points = np.concatenate([self._points, points])
        lengths = np.fromiter((len(s) for s in self._added), dtype=np.int64, count=len(self._added))
        self._point_offsets = np.concatenate([self._point_offsets, self._point_offsets[-1] + np.cumsum(lengths)])
        self._added, self._added_code, self._added_points = [], {}, CodePoints()


class CodePoints:
    """Strings' code points back to back, appended to in amortised constant time per character."""

    def __init__(self) -> None:
        self.count = 0
        self._points = np.empty(16, dtype=np.uint32)
        self._offsets = np.zeros(16, dtype=np.int64)

    def extend(self, values: list[str]) -> None:
        points = np.frombuffer("".join(values).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        used = int(self._offsets[self.count])
        if used + len(points) > len(self._points):
            self._points = _grown(self._points, 2 * (used + len(points)))
        if self.count + len(values) + 1 > len(self._offsets):
            self._offsets = _grown(self._offsets, 2 * (self.count + len(values) + 1))
        self._points[used: used + len(points)] = points
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        self._offsets[self.count + 1: self.count + 1 + len(values)] = used + np.cumsum(lengths)
        self.count += len(values)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._points, self._offsets[: self.count + 1]


def code_points(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(points, offsets) of a few strings (a query's own values)."""
    table = CodePoints()
    table.extend(values)
    return table.arrays()


def _grown(a: np.ndarray, capacity: int) -> np.ndarray:
    out = np.empty(capacity, dtype=a.dtype)
    out[: len(a)] = a
    return out


def _hash(value: str) -> int:
    """A string's 64-bit lookup hash (Python's own; see the module docstring)."""
    return hash(value) & _HASH_MASK
