#!/usr/bin/env python3
"""Prometheus TSDB bytes for the series `cargo bench --bench history` writes, for the README's
side-by-side figure: COUNTERS counters and TIMERS timers (as `tallyd`'s /metrics exports
them by default: a summary with quantiles 0.5, 0.9, 0.99, `_sum` and `_count`), one sample
per series every 10 s for HOURS hours, backfilled with `promtool tsdb create-blocks-from
openmetrics` (the same block format a scraping Prometheus compacts into), then the blocks'
bytes on disk.

usage: python3 bench/prometheus_tsdb.py [--counters 500] [--timers 500] [--hours 2]
"""

import argparse
import math
import os
import random
import subprocess
import tempfile
import time


def write_openmetrics(path, counters, timers, hours, start):
    rng = random.Random(7)
    steps = hours * 360
    with open(path, "w") as out:
        out.write("# TYPE bench_counter counter\n")
        for i in range(counters):
            total = 0
            for s in range(steps):
                total += rng.randrange(100)
                out.write(f'bench_counter_total{{i="{i}"}} {total} {start + 10 * s}\n')
        out.write("# TYPE bench_timer summary\n")
        for i in range(timers):
            count = 0
            total = 0.0
            for s in range(steps):
                values = sorted(
                    math.exp(math.log(50) + 0.5 * rng.gauss(0, 1)) / 1000 for _ in range(10)
                )
                count += 10
                total += sum(values)
                t = start + 10 * s
                for q, v in ((0.5, values[4]), (0.9, values[8]), (0.99, values[9])):
                    out.write(f'bench_timer{{i="{i}",quantile="{q}"}} {v:.6g} {t}\n')
                out.write(f'bench_timer_sum{{i="{i}"}} {total:.6g} {t}\n')
                out.write(f'bench_timer_count{{i="{i}"}} {count} {t}\n')
        out.write("# EOF\n")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--counters", type=int, default=500)
    parser.add_argument("--timers", type=int, default=500)
    parser.add_argument("--hours", type=int, default=2)
    args = parser.parse_args()
    # Two-hour aligned, in the past: one full block.
    start = (int(time.time()) // 7200 - 2) * 7200
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for kind, counters, timers in (
            ("counter", args.counters, 0),
            ("timer", 0, args.timers),
        ):
            source = os.path.join(tmp, f"{kind}.om")
            blocks = os.path.join(tmp, f"{kind}-blocks")
            write_openmetrics(source, counters, timers, args.hours, start)
            subprocess.run(
                ["promtool", "tsdb", "create-blocks-from", "openmetrics", source, blocks],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            results[kind] = (dir_bytes(blocks), counters or timers)
        minutes = args.hours * 60
        for kind, (size, series) in results.items():
            print(
                f"prometheus tsdb, {series} {kind}s, {args.hours} h at 10 s: {size} bytes, "
                f"{size / (series * minutes):.1f} bytes per series-minute"
            )


if __name__ == "__main__":
    main()
