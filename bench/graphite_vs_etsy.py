#!/usr/bin/env python3
"""tallyd's Graphite output beside etsy statsd's graphite backend, on the same traffic.

Starts a Graphite plaintext sink on loopback, then, in turn, etsy statsd (from an npm
install you point at with --etsy, e.g. `npm install statsd@0.9.0` in a temp dir) and the
tallyd release binary, each flushing every 10 s to the sink. Each agent gets N counter
series once (25 lines per datagram, paced), then runs a few more flushes (idle counters are
re-sent as 0 by both). For every flush the sink reports the lines and bytes it read and the
time from the flush's first byte to its last; each agent's own figures give its encode
time (etsy: `graphiteStats.calculationtime`, `processing_time`, `flush_time`; tallyd:
`tallyd.flush_duration_ms`, the record's build; the encoder's own time is
`cargo bench --bench graphite`).

    python3 bench/graphite_vs_etsy.py --etsy /tmp/etsy/node_modules/statsd --series 100000

All traffic goes to 127.0.0.1; every process started here is stopped by its pid.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                     "release", "tallyd")


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sink:
    """Counts lines in bursts (bytes separated by more than a second of silence)."""

    def __init__(self):
        self.port = free_port(socket.SOCK_STREAM)
        self.bursts = []
        self.own = []
        self.lock = threading.Lock()
        self.first = self.last = None
        self.lines = self.bytes = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(16)
        threading.Thread(target=self.accept, daemon=True).start()
        threading.Thread(target=self.cut, daemon=True).start()

    def accept(self):
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        tail = b""
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            now = time.time()
            with self.lock:
                if self.first is None:
                    self.first = now
                self.last = now
                self.lines += data.count(b"\n")
                self.bytes += len(data)
            *lines, tail = (tail + data).split(b"\n")
            for line in lines:
                if b"statsd." in line or b"tallyd." in line:
                    self.own.append(line.decode())

    def cut(self):
        while True:
            time.sleep(0.1)
            with self.lock:
                if self.first is not None and time.time() - self.last > 1.0:
                    self.bursts.append((self.lines, self.bytes, self.last - self.first))
                    self.first = self.last = None
                    self.lines = self.bytes = 0


def flood(port, series, rate):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start, sent, batch = time.time(), 0, []
    for i in range(series):
        batch.append(f"bench.counter.{i}:1|c")
        if len(batch) == 25 or i == series - 1:
            s.sendto("\n".join(batch).encode(), ("127.0.0.1", port))
            sent += len(batch)
            batch = []
            ahead = sent / rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)


def run(name, command, port, sink, args, cwd=None):
    before = len(sink.bursts)
    own_before = len(sink.own)
    log = open(os.path.join(args.dir, f"{name}.log"), "w")
    proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2)
        flood(port, args.series, args.rate)
        deadline = time.time() + 10 * (args.flushes + 1) + 5
        while len(sink.bursts) - before < args.flushes and time.time() < deadline:
            time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"== {name}: {args.series} counter series, flushes every 10 s")
    for lines, size, seconds in sink.bursts[before:before + args.flushes]:
        print(f"  flush: {lines} lines, {size} bytes, first to last byte {seconds * 1000:.0f} ms")
    keys = ("calculationtime", "processing_time", "flush_time ", "flush_duration_ms",
            "lines_received", "metrics_received", "numStats")
    for line in sink.own[own_before:]:
        if any(k in line for k in keys):
            print("  " + line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--etsy", help="etsy statsd's folder (node_modules/statsd)")
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50_000, help="lines/s offered")
    parser.add_argument("--flushes", type=int, default=3)
    args = parser.parse_args()
    args.dir = tempfile.mkdtemp(prefix="graphite-vs-etsy-")
    sink = Sink()
    if args.etsy:
        port = free_port(socket.SOCK_DGRAM)
        config = os.path.join(args.dir, "etsy.js")
        with open(config, "w") as f:
            f.write(f'{{ port: {port}, address: "127.0.0.1", graphitePort: {sink.port}, '
                    f'graphiteHost: "127.0.0.1", flushInterval: 10000, '
                    f'backends: ["./backends/graphite"] }}\n')
        run("etsy statsd", ["node", "stats.js", config], port, sink, args, cwd=args.etsy)
    if not os.path.exists(AGENT):
        sys.exit(f"{AGENT} missing: cargo build --release")
    port = free_port(socket.SOCK_DGRAM)
    config = os.path.join(args.dir, "tallyd.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nudp = ["127.0.0.1:{port}"]\n[aggregation]\nflush_interval_ms = 10000\n'
                f'[api]\nlisten = ""\n[[backends]]\nkind = "graphite"\n'
                f'address = "127.0.0.1:{sink.port}"\n')
    run("tallyd", [AGENT, "--config", config], port, sink, args)


if __name__ == "__main__":
    main()
