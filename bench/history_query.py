#!/usr/bin/env python3
"""history_query.py - test matrix H3: a year of 1-minute history read through the API while a
meter keeps sending. What it costs p1d's memory and the live telegrams' latency.

1. A year of one-minute DSMR 5 telegrams (525,600, `p1d simulate --step 60`, ending an hour
   ago) goes into a fresh history database through `p1d --file` at full speed.
2. p1d then reads a live meter from a socat pty pair (a telegram every 0.1 s, stamped from now
   on) with the same database and HTTP on. A client on the event stream (/api/v1/events)
   notes when each telegram arrives; the latency is from the write into the pty to the
   event, which is the same loop iteration that hands the reading to the store.
3. Baseline for --phase seconds; then the same time with a client reading the whole year of
   minutes, /api/v1/meters/main/history?resolution=minute in one request (--buckets: in
   requests of at most that many), back to back, JSON. VmRSS and VmHWM are sampled every
   0.1 s.

Reports the latency (p50, p99, max) in both phases, memory before and at most during the
queries, each request's time and size, and whether every telegram arrived (events, and the
readings in the database after a clean stop). Exit status 1 when a telegram was lost.

Usage: bench/history_query.py --p1d build/p1d [--phase SECONDS] [--rate N] [--buckets N]
                              [--limit-rate 10M] [--keep DIR]
"""
import argparse
import http.client
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import p1dtest as t  # noqa: E402

YEAR = 525600


def iso(utc):
    return datetime.fromtimestamp(utc, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Events(threading.Thread):
    """Reads /api/v1/events; arrival time of each event by its telegram's timestamp."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.seen, self.error = port, {}, None

    def run(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            c.request("GET", "/api/v1/events")
            r = c.getresponse()
            while True:
                line = r.fp.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    when = t.now()
                    d = json.loads(line[6:])
                    stamp = d.get("timestamp") or d.get("telegram", {}).get("timestamp")
                    if stamp:
                        self.seen.setdefault(stamp, when)
        except (OSError, ValueError) as e:
            self.error = e


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p1d", required=True)
    ap.add_argument("--phase", type=float, default=30, help="seconds per phase (default 30)")
    ap.add_argument("--rate", type=float, default=10, help="live telegrams/s (default 10)")
    ap.add_argument("--buckets", type=int, default=YEAR,
                    help="buckets per request (default: the whole year in one)")
    ap.add_argument("--limit-rate", default="",
                    help="curl's --limit-rate for the history client (10M: a 100 Mbit/s LAN "
                         "client; default: as fast as it reads)")
    ap.add_argument("--keep", help="keep the work files in this directory")
    a = ap.parse_args()
    t.P1D = os.path.abspath(a.p1d)
    if not t.SOCAT:
        print("history_query: socat not found")
        return 77
    work = a.keep or tempfile.mkdtemp(prefix="p1d-h3-")
    os.makedirs(work, exist_ok=True)
    procs = t.Procs()
    try:
        return run(a, work, procs)
    finally:
        procs.kill_all()
        if not a.keep:
            shutil.rmtree(work, True)


def run(a, work, procs):
    path = lambda name: os.path.join(work, name)  # noqa: E731
    db = path("p1d.db")
    now = int(time.time())
    end = now - 3600 - now % 60
    start = end - YEAR * 60

    # 1. the year
    t0 = t.now()
    year = t.simulate(path("year.txt"), YEAR, start, step=60)
    with open(path("ingest.conf"), "w") as f:
        f.write(f"[meter main]\nfile = {year}\npace = fast\n[store]\ndatabase = {db}\nraw_days = 3650\n"
                "[http]\nlisten =\n")
    p = t.start_p1d(procs, path("ingest.conf"))
    rc = p.wait(timeout=900)
    if rc != 0:
        print(f"history_query: ingest failed ({rc}):\n{p.log.text()}")
        return 1
    os.unlink(year)
    print(f"history_query: a year of minutes ({YEAR} telegrams) stored in {t.now() - t0:.1f} s;"
          f" database {os.path.getsize(db) / 1e6:.1f} MB", flush=True)

    # 2. the live meter
    pty = t.Pty(procs, work)
    pty.plug()
    port = t.free_port()
    with open(path("live.conf"), "w") as f:
        f.write(f"[meter main]\nserial = {pty.node}\npreset = 115200-8N1\n"
                f"[store]\ndatabase = {db}\nraw_days = 3650\n[http]\nlisten = 127.0.0.1:{port}\n")
    p = t.start_p1d(procs, path("live.conf"))
    if not t.wait_until(lambda: t.listening(port), 20, 0.05):
        print(f"history_query: p1d does not serve HTTP:\n{p.log.text()}")
        return 1
    n_live = int(2 * a.phase * a.rate) + int(5 * a.rate)
    live = t.telegrams(t.simulate(path("live.txt"), n_live, now, step=1))
    stamps = []
    for tel in live:
        m = __import__("re").search(rb"0-0:1\.0\.0\((\d{12})([SW])\)", tel)
        d = datetime.strptime(m.group(1).decode(), "%y%m%d%H%M%S")
        stamps.append(d.strftime("%Y-%m-%dT%H:%M:%S") + ("+02:00" if m.group(2) == b"S"
                                                         else "+01:00"))
    ev = Events(port)
    ev.start()
    t.wait_until(lambda: b'"sse_clients":1' in t.http_get(port, "/api/v1/status")[1], 10)

    written = {}  # stamp -> time written
    samples = []  # (time, VmRSS, VmHWM)
    phase_b = [None]
    stop = threading.Event()

    def feed():
        t_start = t.now()
        for i, tel in enumerate(live):
            d = t_start + i / a.rate - t.now()
            if d > 0 and stop.wait(d):
                return
            pty.write(tel)
            written[stamps[i]] = t.now()

    def sample():
        while not stop.is_set():
            samples.append((t.now(), t.proc_status(p.pid, "VmRSS"),
                            t.proc_status(p.pid, "VmHWM")))
            time.sleep(0.1)

    requests = []  # (seconds, bytes, buckets)

    def query():
        # curl, niced: on a small machine the client's own CPU must not be what is measured
        while not stop.is_set():
            frm = start
            while frm < end and not stop.is_set():
                to = min(end, frm + a.buckets * 60)
                url = (f"http://127.0.0.1:{port}/api/v1/meters/main/history?resolution=minute"
                       f"&from={iso(frm)}&to={iso(to)}&format=json")
                limit = ["--limit-rate", a.limit_rate] if a.limit_rate else []
                r = subprocess.run(["nice", "-n", "10", "curl", "-sS", "-o", "/dev/null", "-w",
                                    "%{http_code} %{time_total} %{size_download}"] + limit
                                   + [url],
                                   capture_output=True, text=True, timeout=300)
                code, secs, size = r.stdout.split()
                if code != "200":
                    print(f"history_query: HTTP {code} for {url}: {r.stderr}")
                    stop.set()
                    return
                requests.append((float(secs), int(size), (to - frm) // 60))
                frm = to

    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=sample, daemon=True)]
    for th in threads:
        th.start()
    time.sleep(a.phase)
    phase_b[0] = t.now()
    rss_before = max(s[1] for s in samples[-20:])
    hwm_before = samples[-1][2]
    qt = threading.Thread(target=query, daemon=True)
    qt.start()
    time.sleep(a.phase)
    stop.set()
    qt.join(120)
    time.sleep(1)
    for th in threads:
        th.join(10)

    lat_a, lat_b, lost = [], [], []
    for s, w in written.items():
        got = ev.seen.get(s)
        if got is None:
            lost.append(s)
            continue
        (lat_a if w < phase_b[0] else lat_b).append((got - w) * 1000)
    during = [s for s in samples if s[0] >= phase_b[0]]
    rc_stop = t.stop(p, timeout=60)
    con = sqlite3.connect(db)
    readings = len(t.stored_utcs(db))
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    con.close()

    for name, lat in (("baseline", lat_a), ("during the queries", lat_b)):
        print(f"history_query: telegram latency {name}: p50 {pct(lat, 0.5):.2f} ms, p99 "
              f"{pct(lat, 0.99):.2f} ms, max {max(lat) if lat else float('nan'):.2f} ms "
              f"({len(lat)} telegrams)")
    if requests:
        secs = [r[0] for r in requests]
        print(f"history_query: {len(requests)} requests of up to {a.buckets} minute buckets "
              f"({len(requests) * 1.0 / max(1, -(-YEAR // a.buckets)):.1f} years): "
              f"{statistics.mean(secs) * 1000:.0f} ms on average, {max(secs) * 1000:.0f} ms at "
              f"most, {statistics.mean(r[1] for r in requests) / 1e6:.1f} MB each")
    print(f"history_query: VmRSS {rss_before / 1024:.2f} MiB before, at most "
          f"{max(s[1] for s in during) / 1024:.2f} MiB during the queries (+"
          f"{(max(s[1] for s in during) - rss_before) / 1024:.2f} MiB); VmHWM "
          f"{hwm_before / 1024:.2f} -> {during[-1][2] / 1024:.2f} MiB")
    print(f"history_query: {len(written)} telegrams written, {len(written) - len(lost)} "
          f"events, {len(lost)} lost; database: {readings} readings "
          f"({YEAR} + {len(written)} sent), integrity {integrity}; p1d exit {rc_stop}")
    ok = not lost and readings == YEAR + len(written) and integrity == "ok" and rc_stop == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
