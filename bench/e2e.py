#!/usr/bin/env python3
"""e2e.py - the end-to-end benchmark and the soak run of p1d (docs/performance.md, section
"End to end"; docs/reliability.md, section "Soak").

Benchmark: a simulated week of 1-second DSMR 5 telegrams (`p1d simulate`) is written as fast
as p1d takes it into `p1d --file - --pace fast` (a pipe) with every sink on: the history store
(SQLite in a temporary directory, default settings), MQTT to a real mosquitto on a free
loopback port (a mosquitto_sub counts the state messages), HTTP with one client polling
/api/v1/now and one on the event stream (curl -N). Reports telegrams per second (ingested, and
end to end: until the store has committed and the subscriber has received everything), CPU
seconds per telegram, RSS over the run (VmRSS each simulated day, VmHWM), bytes written
(write_bytes of /proc/PID/io), database size, MQTT messages delivered and telegrams lost
(what was fed against the store's reading count, the history's energy sum and the state
messages received).

Soak (--soak MINUTES): the same at one telegram per second (--rate), optionally under valgrind
memcheck (--valgrind; leaks and errors fail the run); point --p1d at an AddressSanitizer build
for the ASan soak.

Usage:
  bench/e2e.py [--p1d BUILD/p1d] [--days N | --quick]
  bench/e2e.py --p1d BUILD/p1d --soak 30 --valgrind
  bench/e2e.py --p1d BUILD-ASAN/p1d --soak 30
  bench/e2e.py --p1d BUILD/p1d --quick --wrap "valgrind --tool=callgrind --callgrind-out-file=CG"
Exit status: 0 when nothing was lost and no check failed (the speed and memory goals are
reported, not enforced), 1 otherwise, 77 when mosquitto or curl is missing.
"""
import argparse
import http.client
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import p1dtest as t  # noqa: E402

START_UTC = 1767571200  # 2026-01-05T00:00:00Z: a week without a DST change, in the past
GOAL_RATE = 20000
GOAL_RSS_KB = 8 * 1024


def parse_args():
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--p1d", default=os.environ.get("P1D", "build/p1d"))
    a.add_argument("--days", type=float, default=7, help="simulated days (default 7)")
    a.add_argument("--quick", action="store_true", help="6 simulated hours (for CI)")
    a.add_argument("--soak", type=float, metavar="MINUTES", help="paced soak run")
    a.add_argument("--rate", type=float, default=1.0, help="telegrams/s in a soak (default 1)")
    a.add_argument("--valgrind", action="store_true", help="run p1d under valgrind memcheck")
    a.add_argument("--wrap", default="", metavar="COMMAND",
                   help="run p1d under this command, e.g. \"valgrind --tool=callgrind\"")
    a.add_argument("--poll", type=float, default=0.05,
                   help="seconds between the HTTP client's /api/v1/now requests (default 0.05)")
    a.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return a.parse_args()


class Poller(threading.Thread):
    """The HTTP client polling /api/v1/now on one keep-alive connection."""

    def __init__(self, port, interval):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.ok = self.failed = 0
        self.stopping = threading.Event()

    def run(self):
        c = None
        while not self.stopping.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/api/v1/now")
                r = c.getresponse()
                r.read()
                if r.status in (200, 503):
                    self.ok += 1
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                if c:
                    c.close()
                c = None
            self.stopping.wait(self.interval)
        if c:
            c.close()


def register_delta(path):
    """energy_delivered_tariff1 + tariff2 of the last telegram minus the first, in Wh."""
    with open(path, "rb") as f:
        head = f.read(4096)
        f.seek(max(0, os.path.getsize(path) - 4096))
        tail = f.read()
    first = t.TELEGRAM_RE.findall(head)[0]
    last = t.TELEGRAM_RE.findall(tail)[-1]
    return t.delivered_wh(last) - t.delivered_wh(first)


def history_wh(db, days):
    """energy_delivered_tariff1 + tariff2 over every day `p1d history` prints, in Wh."""
    first = time.strftime("%Y-%m-%d", time.gmtime(START_UTC - 86400))
    last = time.strftime("%Y-%m-%d", time.gmtime(START_UTC + (days + 2) * 86400))
    r = subprocess.run([t.P1D, "history", "--db", db, "--resolution", "day", "--from", first,
                        "--to", last], capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    if r.returncode or not lines:
        return None
    cols = lines[0].split(",")
    i1, i2 = cols.index("energy_delivered_tariff1"), cols.index("energy_delivered_tariff2")
    total = 0
    for line in lines[1:]:
        v = line.split(",")
        total += sum(int(x.replace(".", "")) for x in (v[i1], v[i2]) if x)
    return total


class Run:
    def __init__(self, args):
        self.args = args
        self.procs = t.Procs()
        self.failures = []
        self.dir = tempfile.mkdtemp(prefix="p1d-e2e-")
        self.soak = args.soak is not None

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
            print(f"e2e: FAIL: {what}", flush=True)
        return cond

    def path(self, name):
        return os.path.join(self.dir, name)

    def main(self):
        a = self.args
        if self.soak:
            n = int(a.soak * 60 * a.rate)
        else:
            n = int((0.25 if a.quick else a.days) * 86400)
        days = max(1, -(-n // 86400))
        print(f"e2e: {t.P1D}, {n} telegrams ({n / 86400:.2f} simulated days)"
              f"{f', {a.rate} telegrams/s' if self.soak else ', as fast as p1d takes them'}"
              f"{', under valgrind' if a.valgrind else ''}; load average before: "
              f"{open('/proc/loadavg').read().split()[0]}", flush=True)
        g0 = t.now()
        tel = t.simulate(self.path("week.txt"), n, START_UTC)
        print(f"e2e: generated {os.path.getsize(tel) / 1e6:.0f} MB in {t.now() - g0:.1f} s",
              flush=True)

        broker = t.Broker(self.procs, self.dir, extra="persistence false\n"
                                                      "max_queued_messages 0\n").start()
        sub = t.Subscriber(self.procs, broker.port, ["p1d/main/state"], keep=False)
        http_port = t.free_port()
        db = self.path("p1d.db")
        conf = self.path("p1d.conf")
        with open(conf, "w") as f:
            f.write("[meter main]\nfile = -\npace = fast\n"
                    f"[store]\ndatabase = {db}\n"
                    f"[mqtt]\nhost = 127.0.0.1\nport = {broker.port}\n"
                    f"[http]\nlisten = 127.0.0.1:{http_port}\n")
        prefix = shlex.split(a.wrap)
        vglog = self.path("valgrind.log")
        if a.valgrind:
            prefix = ["valgrind", "--tool=memcheck", "--leak-check=full",
                      "--show-leak-kinds=definite,indirect",
                      "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                      f"--log-file={vglog}"]
        rfd, wfd = os.pipe()
        env = t.clean_env(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
                          UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        p = t.start_p1d(self.procs, conf, stdin=rfd, prefix=prefix, env=env)
        os.close(rfd)
        if not self.check(t.wait_until(lambda: t.listening(http_port), 30, 0.05),
                          f"p1d does not serve HTTP:\n{p.log.text()}"):
            return self.finish(p)
        t.wait_until(lambda: p.log.find_all(r"mqtt: connected"), 10)

        sse_out = open(self.path("sse.count"), "w+")
        sse = self.procs.start(["sh", "-c", f"curl -sN http://127.0.0.1:{http_port}/api/v1/events"
                                            " | grep -c '^id: '"], stdout=sse_out)
        poller = Poller(http_port, a.poll)
        poller.start()
        # the event stream client is connected before the first telegram
        t.wait_until(lambda: b'"sse_clients":1' in t.http_get(http_port, "/api/v1/status")[1],
                     10)

        feeder = (t.Feeder(wfd, t.telegrams(tel), a.rate) if self.soak
                  else t.Feeder(wfd, path=tel))
        samples = []  # (telegrams, VmRSS kB, RssAnon kB)
        hwm_seen = []  # (telegrams, VmHWM kB, seconds)
        t0 = t.now()
        feeder.start()
        t_ingest = None
        last_progress, last_count = t.now(), -1
        stall_s = 60 if a.valgrind or a.wrap else 15
        while True:
            counts = t.meter_counts(http_port, timeout=10)
            rss = t.proc_status(p.pid, "VmRSS")
            anon = t.proc_status(p.pid, "RssAnon")
            hwm_now = t.proc_status(p.pid, "VmHWM")
            if counts and rss:
                samples.append((counts[0], rss, anon))
                hwm_seen.append((counts[0], hwm_now, t.now() - t0))
            if p.poll() is not None:
                self.check(False, f"p1d exited ({p.returncode}) during the run:\n{p.log.text()}")
                break
            done = counts and counts[0] + counts[1] >= n
            if done and t_ingest is None:
                t_ingest = t.now()
            if done and len(sub.unique_stamps()) >= n:
                break
            got = (counts[0] if counts else 0) + len(sub.unique_stamps())
            if got != last_count:
                last_progress, last_count = t.now(), got
            elif t.now() - last_progress > stall_s:
                print(f"e2e: no progress for {stall_s} s, stopping", flush=True)
                break
            time.sleep(0.2)
        t_sinks = t.now()
        hwm_seen.append((n, t.proc_status(p.pid, "VmHWM") or 0, t_sinks - t0))
        rollup = t.proc_rollup(p.pid)
        status = t.http_get(http_port, "/api/v1/status")[1].decode()
        poller.stopping.set()
        poller.join(10)
        os.close(wfd)  # the end of input: p1d commits, says offline and exits
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        t_exit = t.now()
        io = t.proc_io(p.pid)
        cpu = t.cpu_seconds(p.pid)
        # VmHWM as sampled: the rusage of the child would also count the Python process it
        # was forked from (ru_maxrss survives exec)
        hwm = max(h for _, h, _ in hwm_seen) if hwm_seen else 0
        rc = p.wait()
        p.log.thread.join(5)
        feeder.stop()
        t.stop(sse)
        sse_out.seek(0)
        sse_events = int(sse_out.read().strip() or 0)
        sub.stop()
        broker.stop()
        self.report(n, days, p, rc, db, tel, samples, t0, t_ingest, t_sinks, t_exit, io, cpu,
                    hwm, sub, poller, sse_events, status, feeder, vglog, rollup)
        if hwm_seen:
            first = next(h for h in hwm_seen if h[1] >= hwm)
            print(f"e2e: VmHWM {hwm_seen[0][1] / 1024:.2f} MiB at the first sample, reached "
                  f"{first[1] / 1024:.2f} MiB {first[2]:.1f} s into the run ({first[0]} "
                  "telegrams read)")
        return self.finish(p)

    def report(self, n, days, p, rc, db, tel, samples, t0, t_ingest, t_sinks, t_exit, io, cpu,
               hwm, sub, poller, sse_events, status, feeder, vglog, rollup):
        a = self.args
        log = p.log.text(last=10000)
        self.check(rc == 0, f"p1d exit status {rc}")
        self.check(feeder.error is None, f"writing to p1d failed: {feeder.error}")
        end = re.search(r"end of input: (\d+) telegrams, (\d+) rejected", log)
        counted = int(end.group(1)) if end else None
        self.check(counted == n and end.group(2) == "0",
                   f"p1d counted {end.group(0) if end else 'nothing'}, fed {n}")
        con = sqlite3.connect(db)
        agg = con.execute("SELECT sum(n) FROM agg WHERE res = 3").fetchone()[0] or 0
        raw = con.execute("SELECT sum(n), min(first_utc), max(last_utc) FROM chunks").fetchone()
        con.close()
        hist, want_wh = history_wh(db, days), register_delta(tel)
        stamps = sub.unique_stamps()
        want = set(range(START_UTC, START_UTC + n))
        mqtt_missing = len(want - stamps)
        self.check(agg == n, f"store: {agg} readings in the monthly aggregates, fed {n}")
        self.check(hist == want_wh, f"store: p1d history sums {hist} Wh, the registers grew "
                                    f"{want_wh} Wh")
        self.check(mqtt_missing == 0, f"mqtt: {mqtt_missing} of {n} telegrams never arrived on "
                                      "the state topic")
        self.check(not re.search(r"AddressSanitizer|LeakSanitizer|runtime error", log),
                   "sanitizer report in the log")
        for line in p.log.find_all(r"error:|warning:|mqtt:.*(dropped|queued|still)"):
            print(f"e2e: p1d: {line}")

        took_in = (t_ingest or t_sinks) - t0
        took_all = t_exit - t0
        print("e2e: --- results ---")
        print(f"e2e: telegrams fed {n}; counted by p1d {counted}; rejected "
              f"{end.group(2) if end else '?'}")
        print(f"e2e: ingest: {n / took_in:,.0f} telegrams/s ({took_in:.1f} s until p1d had "
              "decoded every telegram and handed it to the sinks)")
        print(f"e2e: end to end: {n / took_all:,.0f} telegrams/s ({t_sinks - t0:.1f} s until "
              f"the subscriber had every state message, {took_all:.1f} s until p1d had "
              "committed and exited)")
        print(f"e2e: CPU: {cpu:.2f} s, {cpu / n * 1e6:.1f} us per telegram (utime + stime)")
        print(f"e2e: write_bytes {io['write_bytes'] / 1e6:.1f} MB "
              f"({io['write_bytes'] / n:.0f} B per telegram); rchar {io['rchar'] / 1e6:.0f} MB")
        size = os.path.getsize(db)
        print(f"e2e: database {size / 1e6:.2f} MB; {agg} readings in the aggregates; raw "
              f"readings {raw[0]} from {raw[1]} to {raw[2]}; history {hist} Wh, registers "
              f"{want_wh} Wh")
        dups = sub.state_count() - len(stamps)
        print(f"e2e: MQTT: {len(stamps)} of {n} telegrams delivered on the state topic "
              f"({mqtt_missing} missing, {dups} duplicates)")
        st = json.loads(status)
        for section in ("mqtt", "store", "http"):
            if isinstance(st.get(section), dict):
                print(f"e2e: /api/v1/status {section}: " + ", ".join(
                    f"{k} {v}" for k, v in st[section].items() if not isinstance(v, (dict, list))))
        print(f"e2e: HTTP: {poller.ok} /api/v1/now answers ({poller.failed} failed); event "
              f"stream: {sse_events} events")
        rows = []
        marks = ([3600] + [min(d * 86400, n) for d in range(1, days + 1)] if not self.soak
                 else [n // 10, n // 2, n])
        for at in marks:
            s = next((s for s in samples if s[0] >= at), samples[-1] if samples else None)
            if s and (not rows or rows[-1][0] != s[0]):
                rows.append(s)
        print("e2e: VmRSS (RssAnon) by telegrams read: " + ", ".join(
            f"{c} ({c / 3600:.1f} h) {r / 1024:.2f} ({a / 1024:.2f}) MiB" for c, r, a in rows))
        peak = max((r for _, r, _ in samples), default=0)
        peak_anon = max((a for _, _, a in samples), default=0)
        print(f"e2e: VmRSS peak sampled {peak / 1024:.2f} MiB (RssAnon {peak_anon / 1024:.2f} "
              f"MiB, the rest is mostly shared libraries); VmHWM {hwm / 1024:.2f} MiB (sampled "
              "every 0.2 s until the input was closed)")
        if rollup:
            private = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
            print(f"e2e: at the end: Rss {rollup.get('Rss', 0) / 1024:.2f} MiB, Pss "
                  f"{rollup.get('Pss', 0) / 1024:.2f} MiB (shared pages divided among the "
                  f"processes mapping them), private {private / 1024:.2f} MiB")
        print(f"e2e: load average after: {open('/proc/loadavg').read().split()[0]}")
        if not self.soak:
            pss = rollup.get("Pss", 0)
            print(f"e2e: goal >= {GOAL_RATE} telegrams/s end to end: "
                  f"{'met' if n / took_all >= GOAL_RATE else 'NOT met'}; RSS <= 8 MiB: "
                  f"{'met' if hwm <= GOAL_RSS_KB else 'NOT met'} as VmHWM, "
                  f"{'met' if pss and pss <= GOAL_RSS_KB else 'NOT met'} as Pss; lost 0: "
                  f"{'met' if not self.failures else 'NOT met'}")
        if a.valgrind:
            with open(vglog) as f:
                vg = f.read()
            summary = re.search(r"ERROR SUMMARY: (\d+) errors", vg)
            lost = re.findall(r"(definitely|indirectly|possibly) lost: ([\d,]+) bytes", vg)
            leaks = ("; ".join(f"{k} lost {v} bytes" for k, v in lost) if lost else
                     "all heap blocks freed" if "no leaks are possible" in vg
                     else "no leak summary")
            print(f"e2e: valgrind: {summary.group(0) if summary else 'no summary'}; {leaks}")
            self.check(summary and summary.group(1) == "0", "valgrind found errors:\n" + vg[-3000:])

    def finish(self, p):
        self.procs.kill_all()
        if self.failures:
            print(f"e2e: {len(self.failures)} check(s) failed; p1d log:\n{p.log.text()}")
        if self.args.keep:
            print(f"e2e: kept {self.dir}")
        else:
            subprocess.run(["rm", "-rf", self.dir])
        return 1 if self.failures else 0


def main():
    args = parse_args()
    t.P1D = os.path.abspath(args.p1d)
    if not os.access(t.P1D, os.X_OK):
        print(f"e2e: {t.P1D} is not an executable p1d (--p1d)", file=sys.stderr)
        return 2
    missing = [x for x, ok in (("mosquitto", t.MOSQUITTO), ("mosquitto_sub", t.MOSQUITTO_SUB),
                               ("curl", subprocess.run(["sh", "-c", "command -v curl"],
                                                       capture_output=True).returncode == 0),
                               ("valgrind", not args.valgrind or subprocess.run(
                                   ["sh", "-c", "command -v valgrind"],
                                   capture_output=True).returncode == 0)) if not ok]
    if missing:
        print(f"e2e: {', '.join(missing)} missing: skipped")
        return 77
    run = Run(args)
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(128 + signo))
    try:
        return run.main()
    finally:
        run.procs.kill_all()


if __name__ == "__main__":
    sys.exit(main())
