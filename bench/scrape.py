#!/usr/bin/env python3
"""Scrape benchmark for tallyd's /metrics at a million series (issue: Prometheus and the API).

Runs the release agent (pinned to CPU 0 with --pin) with a 10 s flush, feeds it N counter
(or timer) series from tallyd-loadgen (pinned to CPU 1) at a paced rate, and scrapes
/metrics every second while the load runs. Reports, per run: how long each full scrape took
(first byte to last), its size and series count, the agent's peak RSS (VmHWM) against a run
of the same load that nobody scrapes, and whether ingest lost anything: the cumulative
counters (or timer `_count`s) of one last scrape, summed, against the lines sent. No other
backend runs, so the agent's work is ingest, flushes and scrapes.

    python3 bench/scrape.py --pin                        # 1 000 000 counters at 1 M lines/s
    python3 bench/scrape.py --pin --series 100000 --kind timer

Every run is bounded in time; all traffic goes to 127.0.0.1.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import peak_rss_bytes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target", "release", "tallyd")
LOADGEN = os.path.join(ROOT, "target", "release", "tallyd-loadgen")


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url):
    """One full scrape: (seconds, bytes, sample lines)."""
    started = time.monotonic()
    size = lines = 0
    with urllib.request.urlopen(url, timeout=30) as answer:
        while True:
            chunk = answer.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            lines += chunk.count(b"\n")
    return time.monotonic() - started, size, lines


def count_lines(url, kind):
    """The lines the agent counted since start: its counters' totals (or timers' counts)."""
    suffix = b"_total" if kind == "counter" else b"_count"
    counted = 0.0
    with urllib.request.urlopen(url, timeout=60) as answer:
        for line in answer:
            if line.startswith(b"#") or line.startswith(b"tallyd_"):
                continue
            name, _, value = line.rpartition(b" ")
            if name.split(b"{")[0].endswith(suffix):
                counted += float(value)
    return counted


def run(args, scrapes, workdir):
    udp = free_port(socket.SOCK_DGRAM)
    api = free_port(socket.SOCK_STREAM)
    config = os.path.join(workdir, "tallyd.toml")
    with open(config, "w") as f:
        f.write(f"""backends = []
[server]
udp = ["127.0.0.1:{udp}"]
[api]
listen = "127.0.0.1:{api}"
[aggregation]
flush_interval_ms = 10000
""")
    agent_cmd = [AGENT, "--config", config, "--log-level", "warn"]
    load_cmd = [LOADGEN, "--target", f"127.0.0.1:{udp}", "--rate", str(args.rate),
                "--duration", str(args.duration), "--kind", args.kind,
                "--series", str(args.series), "--lines-per-datagram", "40"]
    if args.pin:
        agent_cmd = ["taskset", "-c", "0"] + agent_cmd
        load_cmd = ["taskset", "-c", "1"] + load_cmd
    agent = subprocess.Popen(agent_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    if agent.poll() is not None:
        sys.exit(f"agent exited: {agent.stderr.read().decode()}")
    load = subprocess.Popen(load_cmd, stdout=subprocess.PIPE, text=True)
    timings = []
    stop = threading.Event()

    def scraper():
        url = f"http://127.0.0.1:{api}/metrics"
        deadline = time.monotonic() + args.duration + 15
        while not stop.is_set() and time.monotonic() < deadline:
            tick = time.monotonic()
            seconds, size, lines = scrape(url)
            timings.append({"seconds": seconds, "bytes": size, "lines": lines})
            stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))

    thread = threading.Thread(target=scraper)
    if scrapes:
        thread.start()
    sent = json.loads(load.communicate(timeout=args.duration + 60)[0])
    # Two more flushes: the last datagrams land in a record, and the full view is scraped.
    time.sleep(21)
    stop.set()
    if scrapes:
        thread.join(timeout=60)
    rss = peak_rss_bytes(agent.pid)
    counted = count_lines(f"http://127.0.0.1:{api}/metrics", args.kind)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=120)
    # Scrapes of the full view (every series present): the ones with the most lines.
    full = [t for t in timings if t["lines"] >= max((t["lines"] for t in timings), default=0)]
    return {
        "scraped": scrapes,
        "series": args.series,
        "kind": args.kind,
        "lines_sent": sent["lines_sent"],
        "lines_counted": int(counted),
        "delivery": counted / sent["lines_sent"] if sent["lines_sent"] else 0.0,
        "sent_lines_per_s": round(sent["lines_per_s"]),
        "peak_rss_mb": round(rss / 2**20, 1),
        "scrapes": len(timings),
        "full_scrapes": len(full),
        "full_scrape_s_median": round(statistics.median(t["seconds"] for t in full), 3) if full else None,
        "full_scrape_s_max": round(max(t["seconds"] for t in full), 3) if full else None,
        "full_scrape_mb": round(full[0]["bytes"] / 2**20, 1) if full else None,
        "full_scrape_lines": full[0]["lines"] if full else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=["counter", "timer"], default="counter")
    parser.add_argument("--rate", type=int, default=1_000_000, help="offered lines/s")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of load")
    parser.add_argument("--pin", action="store_true", help="agent on CPU 0, load on CPU 1")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="alternated pairs (scraped, not)")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    print(json.dumps({"machine": os.uname().machine, "cpus": os.cpu_count(),
                      "kernel": os.uname().release, "pinned": args.pin}))
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.runs):
            for scrapes in (True, False):
                print(json.dumps(run(args, scrapes, workdir)), flush=True)


if __name__ == "__main__":
    main()
