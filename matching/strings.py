"""Append-only strings with dense integer codes, held in flat buffers that forked workers share.

The resolver's index lives in the gunicorn master and is shared copy-on-write with the workers it
forks. Held as Python objects (a list of `str`, a dict from `str` to `int`), a million records'
strings stay shared only until a query touches them: fetching a string or looking up a code
increments a reference count in the shared heap, and the kernel copies the page holding it into
the worker. Over a minute of load that copied about 1 GB into each worker at 1M records.

Here the strings present at `freeze()` are one `bytes` buffer with offsets, and finding a string's
code bisects a sorted array of their hashes; neither writes to the pages holding them. Strings added after
the freeze (records ingested in real time) go to an ordinary list and dict beside it. Hashes are
Python's own `hash`, stable within a process and the processes forked from it, which is the only
place a table lives: it is never written to disk.
"""

from __future__ import annotations

import itertools
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
        self._points = np.empty(0, dtype=np.uint32)         # frozen strings' code points, for matching.kernel
        self._point_offsets = np.zeros(1, dtype=np.int64)

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
        return self.get_many([value])[0]

    def get_many(self, values: list[str]) -> list[int | None]:
        """`get` of many strings, the frozen ones found by one bisection."""
        out = [self._added_code.get(v) for v in values]
        pending = [i for i, found in enumerate(out) if found is None]
        if not pending or not self.frozen:
            return out
        hashes = self._hashes
        wanted = np.fromiter((_hash(values[i]) for i in pending), dtype=np.uint64, count=len(pending))
        for i, at, h in zip(pending, np.searchsorted(hashes, wanted).tolist(), wanted.tolist()):
            while at < len(hashes) and int(hashes[at]) == h:          # equal hashes: compare the text
                code = int(self._by_hash[at])
                if self.text(code) == values[i]:
                    out[i] = code
                    break
                at += 1
        return out

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

    def code_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(points, offsets) of the frozen strings: string i's code points (UTF-32) are
        points[offsets[i]:offsets[i + 1]]."""
        return self._points, self._point_offsets

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
        points, offsets = code_points(self._added)
        self._points = np.concatenate([self._points, points])
        self._point_offsets = np.concatenate([self._point_offsets, self._point_offsets[-1] + offsets[1:]])
        self._added, self._added_code = [], {}


def code_points(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(points, offsets) of a few strings, as `StringTable.code_points` gives them."""
    # a writable array: numba compiles a read-only one as another type (and would compile again per process)
    points = np.frombuffer(bytearray("".join(values).encode("utf-32-le", "surrogatepass")), dtype=np.uint32)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    offsets[1:] = list(itertools.accumulate(len(v) for v in values))
    return points, offsets


def _hash(value: str) -> int:
    """A string's 64-bit lookup hash (Python's own; see the module docstring)."""
    return hash(value) & _HASH_MASK
