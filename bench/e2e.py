#!/usr/bin/env python3
"""End-to-end load benchmark for tallyd over loopback.

Builds the release binaries, runs the agent (pinned to CPU 0 with --pin) against
tallyd-loadgen (pinned to CPU 1), reads the agent's JSON Lines records, and reports, per
scenario and offered rate: offered and counted lines/s, delivery, the agent's CPU-seconds per
million lines (flush and idle included) and its peak RSS.

    python3 bench/e2e.py --pin                       # every scenario, stepping the rate
    python3 bench/e2e.py --pin --scenario packed --rates 1000000,4000000

Every run is bounded in time; all traffic goes to 127.0.0.1.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target", "release", "tallyd")
LOADGEN = os.path.join(ROOT, "target", "release", "tallyd-loadgen")
TICK = os.sysconf("SC_CLK_TCK")

# name: (loadgen arguments, offered rates to step through; 0 = flat out)
# The million-series scenario flushes every 10 s (the default, as peers run by default) and
# runs 12 s, so one regular flush of all the series falls inside the run and its record is
# in the peak RSS; the other scenarios flush every second.
FLUSH_MS = {"million": 10_000}
MIN_DURATION = {"million": 12.0}
SCENARIOS = {
    "packed": (["--kind", "counter", "--series", "10000", "--lines-per-datagram", "40"],
               [1_000_000, 2_000_000, 4_000_000, 8_000_000, 11_000_000, 0]),
    "single": (["--kind", "counter", "--series", "10000", "--lines-per-datagram", "1"],
               [50_000, 100_000, 200_000, 430_000, 0]),
    "timers": (["--kind", "timer", "--series", "1000", "--lines-per-datagram", "40"],
               [500_000, 1_000_000, 2_000_000, 3_000_000, 0]),
    "light": (["--kind", "counter", "--series", "10000", "--lines-per-datagram", "40"],
              [100_000]),
    "million": (["--kind", "counter", "--series", "1000000", "--lines-per-datagram", "40"],
                [1_000_000]),
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def udp_receive_buffer_errors():
    """The kernel's count of UDP datagrams dropped for a full receive buffer (system-wide)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def run_once(scenario, rate, duration, pin, workdir, server_extra=(), api=False):
    port = free_port()
    api_listen = f"127.0.0.1:{free_port()}" if api else ""
    out = os.path.join(workdir, f"{scenario}-{rate}.jsonl")
    if os.path.exists(out):
        os.remove(out)  # the same step run again must not count the last run's records
    config = os.path.join(workdir, "tallyd.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
udp = ["127.0.0.1:{port}"]
{chr(10).join(server_extra)}
[api]
listen = "{api_listen}"
[aggregation]
flush_interval_ms = {FLUSH_MS.get(scenario, 1000)}
[[backends]]
kind = "json_file"
path = "{out}"
max_bytes = 10737418240
""")
    agent_cmd = [AGENT, "--config", config, "--log-level", "warn"]
    duration = max(duration, MIN_DURATION.get(scenario, 0.0))
    load_cmd = [LOADGEN, "--target", f"127.0.0.1:{port}", "--rate", str(rate),
                "--duration", str(duration)] + SCENARIOS[scenario][0]
    if pin:
        agent_cmd = ["taskset", "-c", "0"] + agent_cmd
        load_cmd = ["taskset", "-c", "1"] + load_cmd
    agent = subprocess.Popen(agent_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    if agent.poll() is not None:
        sys.exit(f"agent exited: {agent.stderr.read().decode()}")
    cpu_before = cpu_seconds(agent.pid)
    kernel_drops_before = udp_receive_buffer_errors()
    sent = json.loads(subprocess.run(load_cmd, check=True, capture_output=True,
                                     text=True, timeout=duration + 60).stdout)
    time.sleep(1.5)  # one more flush after the last datagram
    cpu_after = cpu_seconds(agent.pid)
    kernel_drops = udp_receive_buffer_errors() - kernel_drops_before
    rss = peak_rss_bytes(agent.pid)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=60)
    received = dropped = bad = counted = series = 0
    flush_ms = 0.0
    with open(out) as f:
        for line in f:
            record = json.loads(line)
            internal = record["internal"]
            received += internal["lines_received"]
            dropped += internal["dropped_lines"]
            bad += sum(internal["bad_lines"].values())
            series = max(series, internal["series"])
            flush_ms = max(flush_ms, internal["flush_duration_ms"])
            for m in record["metrics"]:
                if m["type"] in ("counter", "timer", "histogram"):
                    counted += m["count"]
    if SCENARIOS[scenario][0][1] in ("gauge", "set"):
        counted = received - dropped - bad
    lines = sent["lines_sent"]
    return {
        "scenario": scenario,
        "offered_rate": rate,
        "sent_lines_per_s": round(sent["lines_per_s"]),
        "counted_lines_per_s": round(counted / sent["elapsed_s"]),
        "delivery": counted / lines if lines else 0.0,
        "agent_cpu_s_per_million": (cpu_after - cpu_before) / (counted / 1e6) if counted else None,
        "peak_rss_mb": round(rss / 2**20, 1),
        "bytes_per_series": round(rss / series) if series else None,
        "series": series,
        "longest_flush_ms": round(flush_ms, 1),
        "lines_sent": lines,
        "lines_counted": int(counted),
        "dropped_lines": dropped,
        # Times a paced load generator thread fell 2 ms behind and skipped the backlog.
        "loadgen_stalls": sent.get("stalls", 0),
        # Datagrams the kernel dropped for a full receive buffer, machine-wide.
        "kernel_dropped_datagrams": kernel_drops,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--rates", help="comma-separated offered rates (lines/s); 0 = flat out")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load per run")
    parser.add_argument("--pin", action="store_true", help="agent on CPU 0, load on CPU 1")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--api", action="store_true",
                        help="turn the HTTP API on (nobody scrapes it); off by default here")
    parser.add_argument("--server", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra [server] setting for the agent, e.g. udp_batch=256")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    print(json.dumps({"machine": os.uname().machine, "cpus": os.cpu_count(),
                      "kernel": os.uname().release, "rmem_max": rmem_max, "pinned": args.pin,
                      "api": args.api}))
    with tempfile.TemporaryDirectory() as workdir:
        for scenario in args.scenario or list(SCENARIOS):
            rates = SCENARIOS[scenario][1]
            if args.rates:
                rates = [int(r) for r in args.rates.split(",")]
            best = None
            for rate in rates:
                result = run_once(scenario, rate, args.duration, args.pin, workdir, args.server,
                                  args.api)
                print(json.dumps(result), flush=True)
                if result["delivery"] >= 0.999:
                    best = max(best or 0, result["counted_lines_per_s"])
            print(json.dumps({"scenario": scenario, "highest_clean_lines_per_s": best}), flush=True)


if __name__ == "__main__":
    main()
