"""A load run's latency as a picture: per-second p50 / p99 / max over the run, and the distribution.

    python -m evaluation.bench.plot_load TRACE.csv [TRACE.csv ...] --labels A B --out docs/load.png

Each TRACE is what `evaluation.bench.loadgen --trace` writes (scheduled_s, latency_ms, status). The
left panel shows whether latency drifts or stalls during the run; the right one its tail.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def plot(traces: list[Path], labels: list[str], out: Path, target_ms: float | None = 25.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (over_time, tail) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for trace, label in zip(traces, labels):
        frame = pd.read_csv(trace)
        per_second = frame.groupby(frame["scheduled_s"].astype(int))["latency_ms"]
        line = over_time.plot(per_second.quantile(0.99).index, per_second.quantile(0.99).values, label=f"{label} p99")[0]
        over_time.plot(per_second.median().index, per_second.median().values, color=line.get_color(), alpha=0.5,
                       linestyle="--", label=f"{label} p50")
        values = np.sort(frame["latency_ms"].to_numpy())
        tail.plot(values, 1 - np.arange(len(values)) / len(values), color=line.get_color(), label=label)
    if target_ms:
        for axis in (over_time,):
            axis.axhline(target_ms, color="grey", linewidth=0.8, linestyle=":")
        tail.axvline(target_ms, color="grey", linewidth=0.8, linestyle=":")
    over_time.set(xlabel="second of the run", ylabel="latency, ms (log)", yscale="log",
                  title="per-second latency, from the scheduled send time")
    tail.set(xlabel="latency, ms (log)", ylabel="share of requests slower", xscale="log", yscale="log",
             title="tail")
    over_time.legend(fontsize=8)
    tail.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench.plot_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    labels = args.labels or [t.stem for t in args.traces]
    if len(labels) != len(args.traces):
        parser.error("give one label per trace")
    plot(args.traces, labels, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
