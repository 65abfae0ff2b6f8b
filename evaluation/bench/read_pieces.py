"""The driver's memory for reading a records file a stretch at a time, at several sizes of one county.

`briefing link --engine spark --model M` holds nothing on its driver that grows with the records but the
reading of the file (`matching.record_pieces`). This measures that reading alone, as the driver does it
(check every stretch, then read each again and turn it into Arrow for Spark), in a fresh process per file
so each peak RSS is its own: the county's records file, and the same file repeated `times` over (record
ids prefixed, so they stay unique) to go past the sizes a Spark run on this machine reaches.

    python -m evaluation.bench.read_pieces RECORDS.csv --times 1 3 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import matching.spark_link  # noqa: F401 - what the Spark driver has imported when it reads the file
from matching.record_pieces import read_records_in_pieces


def measure(path: str) -> dict:
    """Read `path` in pieces as the Spark driver does; the peak RSS after the imports, the check and the hand-on."""
    def peak() -> float:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)

    imported, started = peak(), time.perf_counter()
    checked = read_records_in_pieces(path)
    after_check = peak()
    records = 0
    for frame in checked.frames():
        pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        records += len(frame)
    return {"file": path, "bytes": Path(path).stat().st_size, "records": records, "stretches": len(checked.stretches),
            "read_whole": checked.whole is not None, "peak_rss_gb_after_imports": imported,
            "peak_rss_gb_after_check": after_check, "peak_rss_gb": peak(),
            "seconds": round(time.perf_counter() - started, 1)}


def repeated(path: Path, times: int, directory: Path) -> Path:
    """`path` with its records `times` over, each copy's record ids prefixed `X<k>-` (one record per line)."""
    if times == 1:
        return path
    out = directory / f"records-x{times}.csv"
    with open(out, "wb") as target:
        for k in range(times):   # streamed: the measuring child inherits this process's peak RSS (Linux keeps it over exec)
            with open(path, "rb") as source:
                header = source.readline()
                if k == 0:
                    target.write(header)
                target.writelines(f"X{k}-".encode() + line for line in source if line.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench.read_pieces")
    parser.add_argument("records", help="a records.csv with one record per line (the synthetic county's)")
    parser.add_argument("--times", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--out", help="write the figures as JSON here too")
    parser.add_argument("--measure", help=argparse.SUPPRESS)     # the child process: measure one file
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in args.times:
            path = repeated(Path(args.records), times, Path(tmp))
            child = subprocess.run([sys.executable, "-m", "evaluation.bench.read_pieces", args.records, "--measure", str(path)],
                                   capture_output=True, text=True, check=True)
            results.append({"times": times, **json.loads(child.stdout.strip().splitlines()[-1])})
            print(json.dumps(results[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
