"""Read a records CSV a stretch at a time, so a file of any size is checked and handed on in bounded memory.

`read_records_in_pieces(path)` accepts and rejects exactly the files `matching.record.read_records`
accepts and rejects, with the same frame (in pieces), warnings and problems; only memory differs. It reads
the file twice:

1. **Check.** The file is cut into stretches of about `PIECE_BYTES` at line ends outside quoted values
   (an even number of `"` before the cut). Each stretch, behind the file's header, is read and checked by
   `matching.record.read_piece` with its lines shifted to the file's, and then dropped; a 64-bit hash of
   every record id is kept to find duplicates across stretches (8 bytes a record).
2. **Hand on.** `RecordsInPieces.frames()` reads the same stretches again and yields their frames one at a time.

Anything wrong (a problem in a stretch, or a record id whose hash repeats) is reported by reading the whole
file with `read_records`, so a rejected file gets the very same messages (and a hash collision between two
different ids is not an error). So is a file where a cut may not fall between records: a stretch with quotes
is read by Python's csv module (strict), and one that ends inside a quoted value (a stray `"` in an unquoted
value, `O"NEIL`, upsets the count of quotes) sends the file to `read_records` whole, as does a later stretch
that starts with a byte-order mark. A file whose lines end in a lone carriage return has no cut points and
is one stretch.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pandas as pd

from matching.record import (CANONICAL_COLUMNS, EXAMPLE_LOCATIONS, Problem, RecordsFileError, file_warnings, read_piece,
                             read_records)
from matching.record_parse import UTF8_BOM, split_header

#: Bytes of the file per stretch: about 220,000 county records, 0.3 GB of the reader's memory at its peak.
PIECE_BYTES = 32 << 20

__all__ = ["PIECE_BYTES", "RecordsInPieces", "read_records_in_pieces"]


@dataclass
class RecordsInPieces:
    """A checked records file, read again a stretch at a time by `frames()`.

    `records`, `warnings`, `impossible_dates` and `present_columns` are those of `read_records` on the
    whole file. `stretches` are (first byte, end byte, line shift) of each stretch; `stamp` is the file's
    size and modification time when it was checked; `whole` holds the frame when the file had to be read whole.
    """

    path: str
    records: int
    warnings: list[str]
    impossible_dates: int
    present_columns: list[str]
    header: bytes = b""
    stretches: list[tuple[int, int, int]] = field(default_factory=list)
    stamp: tuple[int, int] = (0, 0)
    whole: pd.DataFrame | None = None

    def frames(self) -> Iterator[pd.DataFrame]:
        """The canonical frames of the file's records, in file order, one stretch at a time."""
        if self.whole is not None:
            yield self.whole
            return
        with open(self.path, "rb") as f:
            for start, end, shift in self.stretches:
                f.seek(start)
                data = f.read(end - start)
                frame = read_piece(self.path, data if start == 0 else self.header + data, shift).frame
                if _stamp(f) != self.stamp or frame is None:
                    raise RecordsFileError([Problem(self.path, 0, None, None, "the file changed while it was being "
                                                    "read; nothing was written: run again on a file nothing writes to")])
                yield frame


def read_records_in_pieces(path: str | Path, piece_bytes: int = PIECE_BYTES) -> RecordsInPieces:
    """Check the records file at `path` a stretch of about `piece_bytes` at a time.

    Raises `RecordsFileError` exactly as `read_records` does; the records themselves come from `frames()`.
    """
    path_str = str(path)
    try:
        f = open(path_str, "rb")
    except OSError:
        read_records(path_str)  # the same message for a missing file, a directory, ...
        raise
    with f:
        stamp = _stamp(f)
        checked = _check(path_str, f, piece_bytes)
        if checked is not None:
            checked.stamp = stamp
    if checked is None:
        whole = read_records(path_str)  # raises the file's problems; or the cut was not a record boundary
        return RecordsInPieces(path_str, len(whole.frame), whole.warnings, whole.impossible_dates,
                               whole.present_columns, whole=whole.frame)
    return checked


def _check(path: str, f: BinaryIO, piece_bytes: int) -> RecordsInPieces | None:
    """The checked file, or None when something must be reported (or checked) on the whole file."""
    header = b""
    stretches: list[tuple[int, int, int]] = []
    hashes: list[np.ndarray] = []
    header_warnings: list[str] = []
    impossible, examples, present = 0, [], set()
    line_ends = 0  # in the file before the current stretch
    for start, data in _stretches(f, piece_bytes):
        # A later stretch is read behind the header: shift its lines by the lines between the two.
        shift = line_ends - _line_ends(header) if start else 0
        if start and not data.strip(b"\r\n"):
            line_ends += _line_ends(data)
            continue  # empty lines: no records
        if not _cut_between_records(data, start):
            return None
        try:
            piece = read_piece(path, header + data if start else data, shift)
        except RecordsFileError:
            return None
        if piece.total_problems:
            return None
        if not start:
            header, header_warnings = _header_bytes(data), piece.header_warnings
        line_ends += _line_ends(data)
        stretches.append((start, start + len(data), shift))
        hashes.append(pd.util.hash_array(piece.frame["record_id"].to_numpy(dtype=object)))
        impossible += piece.impossible_dates
        examples += piece.impossible_examples[:max(0, EXAMPLE_LOCATIONS - len(examples))]
        present.update(piece.present_columns)
    ids = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    ids.sort()
    if bool((ids[1:] == ids[:-1]).any()):
        return None
    warnings = file_warnings(path, header_warnings, ids.size, impossible, examples)
    return RecordsInPieces(path, int(ids.size), warnings, impossible,
                           [c for c in CANONICAL_COLUMNS if c in present], header, stretches)


def _stretches(f: BinaryIO, piece_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(first byte, bytes) of consecutive stretches of `f`, each the longest run of whole lines within one read
    of `piece_bytes` (and what was left of the read before) that ends with an even number of quotes; a read
    with no such line end is added to the next."""
    start, carry = 0, b""
    while chunk := f.read(piece_bytes):
        data = carry + chunk
        cut = _last_cut(data)
        if cut:
            yield start, data[:cut]
            start, carry = start + cut, data[cut:]
        else:
            carry = data
    if carry:
        yield start, carry


def _last_cut(data: bytes) -> int:
    """The end of the last line of `data` (just past its `\n`) before which `data` has an even number of
    quotes, or 0. Every stretch starts outside quotes, so such a line end is outside quoted values."""
    quotes_before = data.count(b'"')
    end = len(data)
    while (newline := data.rfind(b"\n", 0, end)) >= 0:
        quotes_before -= data.count(b'"', newline, end)
        if quotes_before % 2 == 0:
            return newline + 1
        end = newline
    return 0


def _cut_between_records(data: bytes, start: int) -> bool:
    """Whether the stretch `data` (from byte `start`) ends between records as Python's csv module reads them (the
    reader `read_records` takes its line numbers from). An even number of quotes says so unless a quote in it is
    a literal one inside an unquoted value (`O"NEIL`); the csv module settles it for any stretch with quotes: a
    cut inside a quoted value leaves it at the end of the data inside quotes. A byte-order mark past the file's
    first bytes also sends the file to be read whole: a CSV parser drops one that starts the data it is given,
    which a cut can make it do where reading the whole file would not."""
    if data.find(UTF8_BOM, 0 if start else len(UTF8_BOM)) >= 0:
        return False
    if b'"' not in data:
        return True
    try:
        for _ in csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""), strict=True):
            pass
    except csv.Error:
        return False
    return True


def _stamp(f: BinaryIO) -> tuple[int, int]:
    """The open file's size and modification time, in nanoseconds."""
    status = os.fstat(f.fileno())
    return status.st_size, status.st_mtime_ns


def _header_bytes(first: bytes) -> bytes:
    """The bytes of the file up to its first record: byte-order mark, blank lines and the header row."""
    bom = UTF8_BOM if first.startswith(UTF8_BOM) else b""
    text = first[len(bom):].decode("utf-8")
    _, _, _, consumed = split_header(text)
    return bom + text[:consumed].encode("utf-8")


def _line_ends(data: bytes) -> int:
    """Line ends in `data` (`\n`, `\r\n` or a lone `\r`), as `matching.record_parse` counts them."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
