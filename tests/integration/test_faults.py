#!/usr/bin/env python3
"""test_faults.py - the fault suite: the real p1d with its sinks on, abused while telegrams keep
coming. Each case asserts that no reading the daemon accepted is missing from the history
database afterwards (every raw reading is decoded from the database and compared with the
telegrams sent), that the database passes PRAGMA integrity_check, and that the daemon recovers
by itself. docs/reliability.md describes every case, its figures and the test-matrix rows.

Cases: serial unplugged again and again; TCP bridge reset in the middle of a telegram; broker
stopped and restarted every few seconds (every telegram reaches a subscriber); disk full (a
small tmpfs, root only) then space freed; database made read-only (chattr +i, root only;
chmod for other users) then writable again, while running and at start; 1000 HTTP connections
and slowloris clients while telegrams flow; malformed HTTP; malformed Home Assistant status
messages; oversized and garbage serial input from a fuzzer; SIGHUP storms; the meter's clock
jumping; the system clock jumping (faketime); the reader frozen (SIGSTOP) while the meter
keeps sending.

The short version (the default, run by ctest) takes about 3 minutes. P1_FAULTS_FULL=1 runs the
full version (about 2 hours: 100 unplugs with absences up to 10 s, 5 minutes of broker
restarts every 10 s, 10 minutes of disk full, an hour of serial fuzzing, 10 minutes of HTTP
abuse, 5,000 malformed requests, 20,000 SIGHUPs, a reader frozen for 30 s). One case:
P1D=build/p1d python3 tests/integration/test_faults.py -k disk_full

Needs P1D (the p1d binary; ctest sets it), socat, mosquitto and mosquitto-clients; exits 77
(skipped) without them. faketime is needed for the system clock case only. Python standard
library only.
"""
import errno
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "data")]
import p1dtest as t  # noqa: E402
from mkcrc import crc16  # noqa: E402  CRC-16/ARC, independent of libp1

FULL = os.environ.get("P1_FAULTS_FULL", "") not in ("", "0")
ROOT = os.geteuid() == 0
FAKETIME_LIB = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                                 "/usr/lib/faketime/libfaketime.so.1") if os.path.exists(p)),
                    None)
ZONE = ZoneInfo("Europe/Amsterdam")
START = 1767571200  # 2026-01-05T00:00:00Z: simulated meter clocks start here (in the past)
REOPEN_S = 2.0      # S1: reading again within 2 s of the node reappearing
SANITIZER = re.compile(r"AddressSanitizer|LeakSanitizer|runtime error:")


def meter_time(utc):
    """UTC seconds -> the meter's YYMMDDhhmmssX (local time, S summer / W winter)."""
    d = datetime.fromtimestamp(utc, ZONE)
    return d.strftime("%y%m%d%H%M%S") + ("S" if d.dst() else "W")


def retime(tel, stamp):
    """The telegram with its 0-0:1.0.0 timestamp replaced by stamp and the CRC made right."""
    body = re.sub(rb"0-0:1\.0\.0\(\d{12}[SW]\)", b"0-0:1.0.0(" + stamp.encode() + b")",
                  tel[:tel.rindex(b"!") + 1], count=1)
    return body + b"%04X\r\n" % crc16(body)


class FaultTest(t.LogChecks, unittest.TestCase):
    """Base: a temporary directory, every process killed at the end, and the common checks."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="p1d-fault-")
        self.procs = t.Procs()
        self.rng = random.Random(self.id())
        self.t0 = t.now()
        # cleanups run last registered first: processes, then what a test added (a mount),
        # then the directory
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.addCleanup(self.procs.kill_all)

    def tearDown(self):
        t.figure(f"{self.id().split('.')[-1]}: {t.now() - self.t0:.1f} s")

    def path(self, name):
        return os.path.join(self.dir, name)

    def telegrams(self, n, start=START, name="tel"):
        return t.telegrams(t.simulate(self.path(f"{name}.txt"), n, start))

    def start_p1d(self, conf_text, stdin=subprocess.DEVNULL, env=None):
        conf = self.path("p1d.conf")
        with open(conf, "w") as f:
            f.write(conf_text)
        p = t.start_p1d(self.procs, conf, ["-v"], stdin=stdin, env=env)
        self.expect_log(p, r"p1d .* started", 10, what="the start")
        self.asan = t.sanitized(p.pid)
        return p

    def assert_rss_growth(self, before, after, limit_kb, what):
        """RSS growth within limit_kb; not asserted under ASan (its quarantine keeps freed
        memory), where the figure is only reported."""
        if not self.asan:
            self.assertLessEqual(after - before, limit_kb, what)

    def pipe_p1d(self, conf_text, **kw):
        """p1d reading meter main from a pipe; returns (p1d, write end). p.end_input() closes
        the write end (once: the number may belong to another file afterwards)."""
        rfd, wfd = os.pipe()
        is_open = [True]

        def end_input():
            if is_open[0]:
                is_open[0] = False
                os.close(wfd)

        self.addCleanup(end_input)
        try:
            p = self.start_p1d(conf_text, stdin=rfd, **kw)
        finally:
            os.close(rfd)
        p.end_input = end_input
        return p, wfd

    def serial_p1d(self, commit):
        """A socat pty pair and p1d reading its node (store and HTTP on); returns (pty, p1d,
        database, HTTP port) once p1d has the port open."""
        pty = t.Pty(self.procs, self.dir)
        pty.plug()
        db, port = self.path("p1d.db"), t.free_port()
        p = self.start_p1d(t.config_text(f"serial = {pty.node}\npreset = 115200-8N1", db=db,
                                         http_port=port, commit=commit))
        self.expect_log(p, r"meter main: reading .*/p1\b", 3, what="serial open")
        return pty, p, db, port

    def feeder(self, wfd, tels, rate):
        """A running t.Feeder, stopped at the end of the test before its pipe is closed."""
        f = t.Feeder(wfd, tels, rate)
        f.start()
        self.addCleanup(f.stop)
        return f

    def wait_counted(self, port, n, timeout=5, what=""):
        """Waits until /api/v1/meters counts n telegrams."""
        got = t.wait_until(lambda: (t.meter_counts(port) or (None,))[0] == n, timeout, 0.02)
        if not got:
            self.fail(f"{what}: p1d counts {t.meter_counts(port)} telegrams, {n} were sent")

    def finish(self, p):
        """SIGTERM: exit 0 and no sanitizer report."""
        rc = t.stop(p, timeout=20)
        p.log.thread.join(5)
        self.assertEqual(rc, 0, f"p1d exit status {rc} after SIGTERM; log:\n{p.log.text()}")
        self.assertEqual(p.log.find_all(SANITIZER.pattern), [], "sanitizer report")

    def assert_stored(self, db, want, what, exact=True):
        """Every UTC in want is a raw reading in db (and, with exact, nothing else is); the
        database passes integrity_check."""
        self.assertEqual(t.integrity(db), "ok", f"{what}: integrity_check")
        got = t.stored_utcs(db)
        self.assertEqual(len(got), len(set(got)), f"{what}: a reading is stored twice")
        missing = sorted(set(want) - set(got))
        self.assertEqual(missing[:20], [], f"{what}: {len(missing)} of {len(want)} readings "
                                           "are missing from the database")
        if exact:
            extra = sorted(set(got) - set(want))
            self.assertEqual(extra[:20], [], f"{what}: {len(extra)} readings stored that were "
                                             "not sent intact")
        return got


# ---- S1: the serial port unplugged ---------------------------------------------------------

class Test01SerialUnplug(FaultTest):
    CYCLES = 100 if FULL else 30
    ABSENT = (0.1, 10.0) if FULL else (0.05, 0.4)

    def test_serial_unplug(self):
        tel = self.telegrams(3 + 3 * self.CYCLES)
        pty, p, db, port = self.serial_p1d("1s")
        pty.write(b"".join(tel[:3]))
        sent = 3
        self.wait_counted(port, sent, what="before the first unplug")
        fds = t.settled_fd_count(p.pid)
        reopen, cpu_absent = [], []
        for cycle in range(self.CYCLES):
            mark = p.log.mark()
            pty.unplug()
            self.expect_log(p, r"meter main: .*/p1 disappeared", 3, mark,
                            what=f"cycle {cycle}: the loss")
            absent = self.rng.uniform(*self.ABSENT)
            c0, a0 = t.cpu_seconds(p.pid), t.now()
            time.sleep(absent)
            if absent >= 2:
                cpu_absent.append((t.cpu_seconds(p.pid) - c0) / (t.now() - a0))
            self.expect_running(p, f"in cycle {cycle} while the pty was absent")
            t_back = pty.plug()
            r = self.expect_log(p, r"meter main: .*/p1 back after", REOPEN_S + 2, mark,
                                what=f"cycle {cycle}: the reopen")
            reopen.append(r[0] - t_back)
            k = 1 + cycle % 3
            pty.write(b"".join(tel[sent:sent + k]))
            sent += k
            self.wait_counted(port, sent, what=f"cycle {cycle}")
        fds_end = t.settled_fd_count(p.pid)
        pty.unplug()
        self.finish(p)
        cpu = f", CPU while absent at most {100 * max(cpu_absent):.2f} %" if cpu_absent else ""
        t.figure(f"{self.CYCLES} unplugs: reopened {min(reopen):.3f}..{max(reopen):.3f} s "
                 f"after the node reappeared; {sent} telegrams; fds {fds} -> {fds_end}{cpu}")
        self.assertLessEqual(max(reopen), REOPEN_S, f"reopen latencies {reopen}")
        self.assertEqual(fds_end, fds, "open fds changed over the unplugs")
        if cpu_absent:
            self.assertLess(max(cpu_absent), 0.01, "p1d spins while the port is absent")
        self.assert_stored(db, range(START, START + sent), "after the unplugs")


# ---- S7: the TCP bridge reset in the middle of a telegram --------------------------------

class Test02TcpReset(FaultTest):
    RESETS = 30 if FULL else 6

    def test_tcp_reset_mid_telegram(self):
        tel = self.telegrams(4 * self.RESETS + 3)
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(35)  # longer than the longest reconnect backoff
        self.addCleanup(srv.close)
        db, port = self.path("p1d.db"), t.free_port()
        p = self.start_p1d(t.config_text(f"tcp = 127.0.0.1:{srv.getsockname()[1]}", db=db,
                                         http_port=port, commit="1s"))
        whole, i, delays, rest = [], 0, [], b""
        t_reset = None
        for reset in range(self.RESETS + 1):
            conn, _ = srv.accept()
            if t_reset is not None:
                delays.append(t.now() - t_reset)
            # a bridge that keeps the stream going sends the rest of the cut telegram first
            if reset % 2 and rest:
                conn.sendall(rest)
            for _ in range(3):
                conn.sendall(tel[i])
                whole.append(START + i)
                i += 1
            self.wait_counted(port, len(whole), what=f"connection {reset}")
            if reset == self.RESETS:
                conn.close()
                break
            cut = self.rng.randrange(10, len(tel[i]) - 10)
            conn.sendall(tel[i][:cut])
            rest = tel[i][cut:]
            i += 1
            time.sleep(0.05)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            t_reset = t.now()
        counts = t.meter_counts(port)
        self.finish(p)
        t.figure(f"{self.RESETS} resets mid-telegram: reconnected after "
                 f"{min(delays):.2f}..{max(delays):.2f} s; {len(whole)} whole telegrams "
                 f"counted, {counts[1]} frames rejected")
        self.assertEqual(counts[0], len(whole))
        self.assert_stored(db, whole, "after the resets")


# ---- M1/M2: the broker stopped and restarted ---------------------------------------------

class Test03BrokerRestarts(FaultTest):
    UP_S = 10 if FULL else 4
    CYCLES = 30 if FULL else 4
    RATE = 10

    def test_broker_restarts(self):
        n = int(self.RATE * (self.CYCLES * (self.UP_S + 3) + 20))
        tel = self.telegrams(n)
        broker = t.Broker(self.procs, self.dir, extra=f"persistence true\npersistence_location "
                                                      f"{self.dir}/\nmax_queued_messages 0\n")
        broker.start()
        sub = t.Subscriber(self.procs, broker.port, ["p1d/main/state"], client_id="faults-sub")
        db, port = self.path("p1d.db"), t.free_port()
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, mqtt_port=broker.port,
                                             http_port=port, commit="2s"))
        self.expect_log(p, r"mqtt: connected to", 10, what="the first connection")
        feed = self.feeder(wfd, tel, self.RATE)
        reconnects = []
        for cycle in range(self.CYCLES):
            time.sleep(self.UP_S)
            mark = p.log.mark()
            broker.stop()  # SIGTERM: the broker saves its sessions, the subscriber's queue too
            time.sleep(self.rng.uniform(0.5, 3.0))
            broker.start()
            t_up = t.now()
            r = self.expect_log(p, r"mqtt: connected to", 35, mark,
                                what=f"cycle {cycle}: the reconnect")
            reconnects.append(r[0] - t_up)
            self.expect_running(p, f"in broker cycle {cycle}")
        time.sleep(2)
        sent = feed.stop()
        want = set(range(START, START + sent))
        ok = t.wait_until(lambda: want <= sub.unique_stamps(), 60, 0.2)
        missing = sorted(want - sub.unique_stamps())
        self.wait_counted(port, sent, what="after the broker restarts")
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, f"p1d at the end of input: {p.log.text()}")
        dups = sub.state_count() - len(sub.unique_stamps())
        t.figure(f"{self.CYCLES} broker restarts every {self.UP_S} s: reconnected "
                 f"{min(reconnects):.2f}..{max(reconnects):.2f} s after the broker listened "
                 f"(median {sorted(reconnects)[len(reconnects) // 2]:.2f} s); {sent} telegrams, "
                 f"{sent - len(missing)} delivered, {dups} duplicates")
        self.assertTrue(ok, f"{len(missing)} of {sent} telegrams never reached the subscriber "
                            f"(first {missing[:10]}); mqtt log:\n"
                            + "\n".join(p.log.find_all("mqtt:")[-20:]))
        self.assertLessEqual(max(reconnects), 30.0, "reconnect slower than the backoff cap")
        self.assert_stored(db, want, "after the broker restarts")


# ---- D4: disk full; database read-only ---------------------------------------------------

class StoreFault(FaultTest):
    """Telegrams from a pipe at RATE/s, live data checked on HTTP and MQTT while the store
    cannot write, then every reading in the database once it can again."""
    RATE = 20

    def live_and_stored(self, db, fault, heal, fault_s, first_log, extra_conf=""):
        broker = t.Broker(self.procs, self.dir, extra="max_queued_messages 0\n").start()
        sub = t.Subscriber(self.procs, broker.port, ["p1d/main/state"])
        port = t.free_port()
        n = int(self.RATE * (fault_s + 60))
        tel = self.telegrams(n)
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             mqtt_port=broker.port, commit="1s",
                                             extra=extra_conf))
        feed = self.feeder(wfd, tel, self.RATE)
        self.assertTrue(t.wait_until(lambda: os.path.exists(db) and t.stored_utcs(db), 10, 0.2),
                        f"nothing committed before the fault; log:\n{p.log.text()}")
        mark = p.log.mark()
        fault()
        self.expect_log(p, first_log, 10, mark, what="the store failure")
        t_fault = t.now()
        lag = []
        while t.now() - t_fault < fault_s:
            before = feed.written
            c = t.meter_counts(port)
            self.assertIsNotNone(c, f"HTTP does not answer during the fault:\n{p.log.text()}")
            lag.append(before - c[0])
            time.sleep(0.5)
        seen = len(sub.unique_stamps())
        self.assertGreaterEqual(seen, feed.written - 2 * self.RATE,
                                "MQTT live data stopped while the store could not write")
        fail_lines = len(p.log.find_all(r"store .*(failed|cannot)", mark))
        heal()
        t_heal = t.now()
        r = self.expect_log(p, r"store .*: writing again", 40, mark, what="the recovery")
        recovered = r[0] - t_heal
        time.sleep(1.5)
        sent = feed.stop()
        self.wait_counted(port, sent, what="after the fault")
        t.wait_until(lambda: len(sub.unique_stamps()) >= sent, 10)
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, f"p1d at the end of input:\n{p.log.text()}")
        self.assertEqual(p.log.find_all(SANITIZER.pattern), [], "sanitizer report")
        self.assertEqual(len(sub.unique_stamps()), sent, "MQTT state messages missing")
        minutes = fault_s / 60
        self.assertLessEqual(fail_lines, 2 + minutes, "the failure is logged too often:\n"
                             + "\n".join(p.log.find_all(r"store", mark)))
        self.assertLessEqual(max(lag), 2 * self.RATE, "telegrams not counted during the fault")
        self.assert_stored(db, range(START, START + sent), "after the fault")
        t.figure(f"store fault {fault_s:.0f} s at {self.RATE} telegrams/s: {fail_lines} log "
                 f"lines, live count behind by at most {max(lag)}, writing again "
                 f"{recovered:.1f} s after the fault ended, {sent} of {sent} readings stored")
        return p


def chattr(flag, *paths):
    return subprocess.run(["chattr", flag] + [x for x in paths if os.path.exists(x)],
                          capture_output=True).returncode == 0


class Test04DiskFull(StoreFault):
    FAULT_S = 600 if FULL else 6
    RATE = 5 if FULL else 20  # the backlog (3600 readings) outlasts the fault

    @unittest.skipUnless(ROOT, "mounting a tmpfs needs root")
    def test_disk_full(self):
        mnt = self.path("small")
        os.mkdir(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        filler = os.path.join(mnt, "filler")

        def fill():
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError as e:
                    self.assertEqual(e.errno, errno.ENOSPC)
            try:  # the last few bytes
                with open(filler + "2", "wb") as f:
                    while True:
                        f.write(b"\0" * 512)
                        f.flush()
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)

        def free():
            for x in (filler, filler + "2"):
                if os.path.exists(x):
                    os.remove(x)

        self.live_and_stored(os.path.join(mnt, "p1d.db"), fill, free, self.FAULT_S,
                             r"store .*(full|No space)")


class Test05ReadOnly(StoreFault):
    FAULT_S = 120 if FULL else 5

    def setUp(self):
        super().setUp()
        probe = self.path("probe")
        open(probe, "w").close()
        self.chattr = ROOT and chattr("+i", probe)
        if self.chattr:
            chattr("-i", probe)

    def test_read_only_while_running(self):
        """chattr +i on the database and its WAL while p1d writes (root: chmod does not stop
        root, nor a file already open)."""
        if not self.chattr:
            self.skipTest("needs root and a file system with chattr +i")
        db = self.path("p1d.db")
        files = (db, db + "-wal")
        self.addCleanup(chattr, "-i", *files)
        self.live_and_stored(db, lambda: self.assertTrue(chattr("+i", *files)),
                             lambda: self.assertTrue(chattr("-i", *files)), self.FAULT_S,
                             r"store .*(failed|readonly|read-only|not permitted)")

    def test_read_only_at_start(self):
        """The database is read-only when p1d starts (chattr +i as root, else chmod 0444),
        then made writable: p1d notices by itself and writes everything it kept."""
        db = self.path("p1d.db")
        first = self.telegrams(10, START - 100, "first")
        r = subprocess.run([t.P1D, "import", "--db", db, self.path("first.txt")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        if self.chattr:
            self.addCleanup(chattr, "-i", db)
            fault, heal = (lambda: self.assertTrue(chattr("+i", db)),
                           lambda: self.assertTrue(chattr("-i", db)))
        elif not ROOT:
            fault, heal = lambda: os.chmod(db, 0o444), lambda: os.chmod(db, 0o644)
        else:
            self.skipTest("root without chattr +i: chmod does not stop root")
        fault()
        port = t.free_port()
        tel = self.telegrams(20 * (self.FAULT_S + 40))
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             commit="1s"))
        feed = self.feeder(wfd, tel, 20)
        self.expect_log(p, r"store .*(cannot open|failed|readonly|read-only)", 10,
                        what="the store failure")
        time.sleep(self.FAULT_S)
        self.expect_running(p, "with a read-only database")
        mark = p.log.mark()
        heal()
        t_heal = t.now()
        r = p.log.wait(r"store .*: writing again", 40, mark)
        sent = feed.stop()
        self.wait_counted(port, sent, what="after the database became writable")
        p.end_input()
        p.wait(20)
        self.assertIsNotNone(r, "p1d did not resume writing within 40 s of the database "
                                "becoming writable; store log:\n"
                                + "\n".join(p.log.find_all("store")[-10:]))
        t.figure(f"read-only at start: writing again {r[0] - t_heal:.1f} s after the database "
                 "was made writable")
        self.assertEqual(p.returncode, 0, p.log.text())
        self.assert_stored(db, [START - 100 + i for i in range(len(first))]
                           + list(range(START, START + sent)), "after read-only at start")


# ---- H1/H2/H4: HTTP abuse while telegrams flow -------------------------------------------

class Test06HttpAbuse(FaultTest):
    DURATION = 600 if FULL else 14
    RATE = 10
    CONNS = 1000

    def test_http_flood_and_slowloris(self):
        tel = self.telegrams(int(self.RATE * (self.DURATION + 40)))
        db, port = self.path("p1d.db"), t.free_port()
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             commit="2s", http_extra="max_connections = 1024\n"
                                                                     "timeout = 10s\n"))
        feed = self.feeder(wfd, tel, self.RATE)
        self.assertTrue(t.wait_until(lambda: (t.meter_counts(port) or (0,))[0] > 0, 10))
        rss0, fds0 = t.proc_status(p.pid, "VmRSS"), t.settled_fd_count(p.pid)

        polls = []  # (latency, lag in telegrams)
        stop = threading.Event()

        def checker():
            while not stop.is_set():
                before = feed.written
                t1 = t.now()
                c = t.meter_counts(port, source="127.0.0.250", timeout=5)
                polls.append((t.now() - t1, None if c is None else before - c[0]))
                stop.wait(0.2)

        def slowloris(conns):
            """Sends a request header one byte a second on each connection."""
            data = b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10000
            pos = 0
            while not stop.is_set() and pos < len(data):
                for s in conns:
                    try:
                        s.send(data[pos:pos + 1])
                    except OSError:
                        pass
                pos += 1
                stop.wait(1.0)

        threads = [threading.Thread(target=checker, daemon=True)]
        threads[0].start()
        socks, refused = [], 0
        for i in range(self.CONNS):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.bind((f"127.0.0.{2 + i // 8}", 0))  # 8 per address: the per-address limit
                s.connect(("127.0.0.1", port))
                if i % 2:
                    s.sendall(b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\n")  # never finished
            except OSError:
                refused += 1
            socks.append(s)
        slow = []
        for _ in range(12):  # 12 from one address: 4 beyond the per-address limit
            s = socket.socket()
            s.settimeout(2)
            s.bind(("127.0.0.200", 0))
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                pass
            slow.append(s)
        threads.append(threading.Thread(target=slowloris, args=(slow,), daemon=True))
        threads[1].start()
        time.sleep(self.DURATION)
        self.expect_running(p, "under HTTP abuse")
        rss1 = t.proc_status(p.pid, "VmRSS")
        # idle and half-sent connections are closed by p1d after [http] timeout (10 s)
        closed = 0
        for s in socks:
            s.settimeout(0.2)
            try:
                data = s.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 4")
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except OSError:
                pass
        stop.set()
        for th in threads:
            th.join(5)
        for s in socks + slow:
            s.close()
        fds_back = t.wait_until(lambda: t.fd_count(p.pid) <= fds0, 15, 0.2)
        sent = feed.stop()
        self.wait_counted(port, sent, what="after the HTTP abuse")
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, p.log.text())
        lat = sorted(x[0] for x in polls)
        answered = [x for x in polls if x[1] is not None]
        p99 = lat[int(0.99 * (len(lat) - 1))]
        max_lag = max((x[1] for x in answered), default=None)
        t.figure(f"HTTP abuse {self.DURATION} s: {self.CONNS} connections ({refused} refused "
                 f"at connect, {closed} closed by p1d by the end), 12 slowloris; /api/v1/meters "
                 f"from another address: {len(answered)} of {len(polls)} answered, p99 "
                 f"{1000 * p99:.0f} ms, count behind by at most {max_lag}; RSS "
                 f"{rss0} -> {rss1} kB; {sent} telegrams, all counted")
        self.assertGreaterEqual(len(answered), 0.9 * len(polls), "the checker was refused")
        self.assertLessEqual(p99, 0.5, "/api/v1/meters slow under abuse")
        self.assertLessEqual(max_lag, 3, "telegram counting fell behind under HTTP abuse")
        self.assertGreaterEqual(closed, 0.9 * (self.CONNS - refused),
                                "idle connections were not closed by the timeout")
        self.assert_rss_growth(rss0, rss1, 10 * 1024, "RSS grew more than 10 MiB")
        self.assertTrue(fds_back, "connections left open after the clients went away")
        self.assert_stored(db, range(START, START + sent), "after the HTTP abuse")


def raw_request(port, data, timeout=1.0, source="127.0.0.1"):
    """Sends data on a new connection (then half-closes it); the status of the answer, or None
    when p1d did not answer within timeout (it closes such connections after [http] timeout)
    or refused the connection (more than 8 from one address)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while b"\r\n\r\n" not in out and len(out) < 1 << 20:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except OSError:
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", out)
    if out and not m:
        raise AssertionError(f"not an HTTP answer to {data[:60]!r}: {out[:80]!r}")
    return int(m.group(1)) if m else None


class Test07MalformedHttp(FaultTest):
    COUNT = 5000 if FULL else 300
    VALID = [b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET /api/v1/meters/main/history?resolution=hour&from=2026-01-05&to=2026-01-06 "
             b"HTTP/1.1\r\nHost: x\r\nAccept: text/csv\r\n\r\n",
             b"HEAD /metrics HTTP/1.0\r\n\r\n",
             b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             b"GET /api/v1/telegram?mask=1 HTTP/1.1\r\nHost: x\r\n\r\n"]
    FIXED = [b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
             b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
             b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"ffffffffffffffff\r\n",
             b"POST /api/v1/now HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
             b"GET /%%%%%%%%%% HTTP/1.1\r\n\r\n", b"GET /api/v1/meters/%00%ff/now HTTP/1.1\r\n\r\n",
             b"\r\n" * 1000, b"GET / HTTP/1.1\n\n", b"G\0ET / HTTP/1.1\r\n\r\n",
             b"GET /api/v1/now?" + b"&" * 30000 + b" HTTP/1.1\r\n\r\n",
             b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\n\r\n" * 200,  # pipelined
             b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + random.Random(0).randbytes(200),
             b"GET /api/v1/meters/main/history?resolution=minute&from=1970-01-01&to=9999-12-31 "
             b"HTTP/1.1\r\n\r\n"]

    def mutate(self, data):
        rng = self.rng
        data = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(6)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[pos % len(data)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randint(1, 64))
            elif op == 2:
                del data[pos:pos + rng.randint(1, 32)]
            elif op == 3:
                data[pos:pos] = rng.choice([b"%", b"%0", b"\r\n", b"\n", b" ", b"\0", b"/..",
                                            b"?", b"&=", b"\xc0\xaf", b":", b"\r\n\r\n"])
            elif op == 4:
                data[pos:pos] = data[pos:pos + rng.randint(1, 200)] * rng.randint(2, 50)
            else:
                data[pos:pos] = (b"X-" + rng.randbytes(4).hex().encode() + b": "
                                 + b"v" * rng.randint(0, 40000) + b"\r\n")
        return bytes(data)

    def test_malformed_http(self):
        tel = self.telegrams(10 * (120 + self.COUNT // 4))
        db, port = self.path("p1d.db"), t.free_port()
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             commit="2s"))
        feed = self.feeder(wfd, tel, 10)
        statuses = {}
        cases = self.FIXED + [self.mutate(self.rng.choice(self.VALID)) for _ in range(self.COUNT)]
        for i, data in enumerate(cases):
            try:  # from many addresses: unanswered ones count against the limit per address
                st = raw_request(port, data, source=f"127.0.{i // 250}.{2 + i % 250}")
            except ConnectionRefusedError:
                self.fail(f"p1d refuses connections after {data[:60]!r}; log:\n{p.log.text()}")
            statuses[st] = statuses.get(st, 0) + 1
            self.assertNotIn(st, (500,), f"500 for {data[:80]!r}")
            if i % 50 == 0:
                self.expect_running(p, f"after malformed request {i}: {data[:60]!r}")
        st, _ = t.http_get(port, "/api/v1/now", source="127.1.0.1")
        self.assertEqual(st, 200, "a valid request after the malformed ones")
        sent = feed.stop()
        self.wait_counted(port, sent, what="after the malformed requests")
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, p.log.text())
        self.assertEqual(p.log.find_all(SANITIZER.pattern), [], "sanitizer report")
        t.figure(f"{len(cases)} malformed requests: statuses "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)))
        self.assert_stored(db, range(START, START + sent), "after the malformed requests")


# ---- M1: malformed Home Assistant status messages ----------------------------------------

class Test08HaStatus(FaultTest):
    def test_malformed_ha_status(self):
        broker = t.Broker(self.procs, self.dir, extra="max_queued_messages 0\n").start()
        sub = t.Subscriber(self.procs, broker.port,
                           ["p1d/main/state", "homeassistant/sensor/+/power_delivered/config"])
        tel = self.telegrams(10 * 300)
        db, port = self.path("p1d.db"), t.free_port()
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             mqtt_port=broker.port, commit="2s"))
        feed = self.feeder(wfd, tel, 10)
        cfg = "homeassistant/sensor/p1d_main/power_delivered/config"
        self.assertTrue(t.wait_until(lambda: sub.messages(cfg), 10), "no discovery at first")
        time.sleep(1)
        configs = len(sub.messages(cfg))
        rss0 = t.proc_status(p.pid, "VmRSS")
        garbage = [b"", b"offline", b"ONLINE", b"online\0", b"online ", b" online", b"onl",
                   b"online" * 1000, b"\xff\xfe" * 50, self.rng.randbytes(1024),
                   self.rng.randbytes(1 << 20), b"o" * (8 << 20), b'{"state":"online"}',
                   "onlíne".encode()]
        for payload in garbage:
            t.publish(broker.port, "homeassistant/status", payload)
        t.publish(broker.port, "homeassistant/status", self.rng.randbytes(4096), retain=True)
        for _ in range(100):
            t.publish(broker.port, "homeassistant/status", b"offline", qos=0)
        time.sleep(2)
        self.expect_running(p, "after malformed homeassistant/status messages")
        rss1 = t.proc_status(p.pid, "VmRSS")
        self.assertEqual(len(sub.messages(cfg)), configs,
                         "discovery was sent again for a message that is not 'online'")
        t_on = t.now()
        t.publish(broker.port, "homeassistant/status", b"online")
        self.assertTrue(t.wait_until(lambda: len(sub.messages(cfg)) > configs, 5),
                        "no discovery after homeassistant/status online")
        again = t.now() - t_on
        for _ in range(200):  # a storm of births
            t.publish(broker.port, "homeassistant/status", b"online", qos=0)
        time.sleep(2)
        sent = feed.stop()
        ok = t.wait_until(lambda: len(sub.unique_stamps()) >= sent, 30)
        self.wait_counted(port, sent, what="after the status messages")
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, p.log.text())
        t.figure(f"{len(garbage) + 101} malformed homeassistant/status messages (up to 8 MiB): "
                 f"no discovery; RSS {rss0} -> {rss1} kB; 'online' -> discovery in "
                 f"{again:.2f} s; 200 births in a row: {len(sub.unique_stamps())} of {sent} "
                 "state messages delivered")
        self.assertTrue(ok, f"{sent - len(sub.unique_stamps())} state messages missing")
        self.assert_rss_growth(rss0, rss1, 4096, "RSS kept a large payload")
        self.assert_stored(db, range(START, START + sent), "after the status messages")


# ---- P4-P7: a fuzzer on the serial port --------------------------------------------------

class Test09SerialFuzz(FaultTest):
    DURATION = 3600 if FULL else 20
    BYTES_PER_S = 200_000  # about 17 times a 115200-baud line

    def damaged(self, tel):
        """A copy of a telegram damaged between its '/' and its '!' (what the CRC covers). A
        copy whose damage the CRC-16 cannot see (a shift that collides, 1 in 65536) is made
        again: no damaged copy is a valid telegram."""
        while True:
            data, kind = self._damage(tel)
            end = data.rfind(b"!")
            m = re.match(rb"!([0-9A-F]{4})\r?\n", data[end:]) if end > 0 else None
            if kind == 4 or not m or int(m.group(1), 16) != crc16(data[:end + 1]):
                return data

    def _damage(self, tel):
        rng = self.rng
        end = tel.rindex(b"!")
        kind = rng.randrange(5)
        data = bytearray(tel)
        if kind == 0:  # bit errors (bit 7 is left alone: parity, which the framer masks)
            for pos in rng.sample(range(1, end), rng.randint(1, 3)):
                data[pos] ^= 1 << rng.randrange(7)
        elif kind == 1:  # cut
            data = data[:rng.randrange(1, end)]
        elif kind == 2:  # bytes lost in the middle
            a = rng.randrange(1, end - 8)
            del data[a:a + rng.randint(1, 8)]
        elif kind == 3:  # LF only, and a bit error
            data = bytearray(tel[:end].replace(b"\r\n", b"\n"))
            data[rng.randrange(1, len(data))] ^= 1 << rng.randrange(7)
            data += tel[end:].replace(b"\r\n", b"\n")
        else:  # a line repeated until the telegram is longer than max_telegram, CRC right
            body = tel[:end + 1]
            i = body.index(b"1-0:32.7.0")
            line = body[i:body.index(b"\n", i) + 1]
            body = body[:i] + line * 800 + body[i:]
            data = bytearray(body + b"%04X\r\n" % crc16(body))
        return bytes(data), kind

    def noise(self):
        rng = self.rng
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.randint(1, 3000))
        if kind == 1:  # an oversized frame: '/' and 20-100 KB without '!'
            return b"/XXX5" + bytes(rng.choice(b"0123456789ABC()*.:-\r\n") for _ in
                                    range(rng.randint(20000, 100000)))
        if kind == 2:
            return b"\0" * rng.randint(1, 5000)
        if kind == 3:
            return b"\xff" * rng.randint(1, 5000)
        if kind == 4:
            return b"/ISK5\\2M550T-1012\r\n" * rng.randint(1, 50)
        return b"!" + b"%04X" % rng.randrange(65536) + b"\r\n" + b"1-0:1.8.1(" * 100

    def test_serial_fuzz(self):
        n_intact = int(self.DURATION * 12) + 100
        intact = self.telegrams(n_intact)
        spare = self.telegrams(2000, START + 10_000_000, "spare")  # damaged ones: other times
        pty, p, db, port = self.serial_p1d("2s")
        mark = p.log.mark()
        sent, after_oversize, written = [], set(), 0
        rss0 = t.proc_status(p.pid, "VmRSS")
        t_start = t.now()
        i = 0
        oversize = False
        while t.now() - t_start < self.DURATION and i < n_intact:
            r = self.rng.random()
            if r < 0.3:
                chunk = intact[i]
                if oversize:
                    after_oversize.add(START + i)
                sent.append(START + i)
                i += 1
                oversize = False
            elif r < 0.6:
                chunk = self.damaged(self.rng.choice(spare))
                oversize = oversize or len(chunk) > 16384
            else:
                chunk = self.noise()
                oversize = oversize or (chunk.startswith(b"/XXX5") and len(chunk) > 16384)
            pty.write(chunk)
            written += len(chunk)
            delay = t_start + written / self.BYTES_PER_S - t.now()
            if delay > 0:
                time.sleep(delay)
        pty.write(b"\r\n" + intact[i])  # one more after the noise
        sent.append(START + i)
        took = t.now() - t_start
        self.assertTrue(t.wait_until(lambda: t.rchar(p.pid) >= written, 20, 0.1),
                        "p1d did not read everything")
        time.sleep(1)
        self.expect_running(p, "after the fuzzed input")
        rss1 = t.proc_status(p.pid, "VmRSS")
        counts = t.meter_counts(port)
        warnings = p.log.find_all(r"warning: meter main", mark)
        pty.unplug()
        self.finish(p)
        self.assertEqual(t.integrity(db), "ok")
        got = t.stored_utcs(db)
        foreign = sorted(set(got) - set(sent))
        lost = sorted(set(sent) - set(got))
        t.figure(f"serial fuzz {took:.0f} s, {written / 1e6:.1f} MB: {len(sent)} intact "
                 f"telegrams sent, {len(sent) - len(lost)} accepted and stored, "
                 f"{len(foreign)} accepted that were not sent intact; {counts[1]} frames "
                 f"rejected; {len(warnings)} warning lines; RSS {rss0} -> {rss1} kB")
        self.assertEqual(foreign, [], "a damaged telegram was accepted")
        self.assertEqual(counts[0], len(got), "telegrams counted but not stored")
        self.assertEqual([x for x in lost if x not in after_oversize], [],
                         "intact telegrams lost that did not follow an oversized frame")
        self.assertLessEqual(len(lost), len(after_oversize))
        self.assertLessEqual(len(warnings), 10 * (took / 60 + 1), "the log is flooded:\n"
                             + "\n".join(warnings[:20]))
        self.assert_rss_growth(rss0, rss1, 1024, "RSS grew by more than 1 MiB")


# ---- reload: SIGHUP storms ---------------------------------------------------------------

class Test10SighupStorm(FaultTest):
    SIGNALS = 20000 if FULL else 600
    RATE = 50

    def test_sighup_storm(self):
        broker = t.Broker(self.procs, self.dir, extra="max_queued_messages 0\n").start()
        sub = t.Subscriber(self.procs, broker.port, ["p1d/main/state"])
        db, port = self.path("p1d.db"), t.free_port()
        conf = lambda level, bad="": t.config_text(  # noqa: E731
            "file = -\npace = fast", db=db, http_port=port, mqtt_port=broker.port,
            commit="1s", extra=f"[p1d]\nlog_level = {level}\n{bad}")
        tel = self.telegrams(self.RATE * (self.SIGNALS // 100 + 60))
        p, wfd = self.pipe_p1d(conf("info"))
        self.expect_log(p, r"mqtt: connected to", 10, what="MQTT")
        feed = self.feeder(wfd, tel, self.RATE)
        t.wait_until(lambda: t.meter_counts(port), 5)
        fds0, rss0 = t.settled_fd_count(p.pid), t.proc_status(p.pid, "VmRSS")
        path = self.path("p1d.conf")
        for burst in range(self.SIGNALS // 50):
            text = conf(("notice", "info")[burst % 2], "bogus_key = 1\n" if burst % 5 == 4 else "")
            with open(path + ".new", "w") as f:
                f.write(text)
            os.replace(path + ".new", path)
            for _ in range(50):
                p.send_signal(signal.SIGHUP)
                time.sleep(0.001)
            time.sleep(0.05)
            self.expect_running(p, f"in SIGHUP burst {burst}")
        with open(path + ".new", "w") as f:
            f.write(conf("info"))
        os.replace(path + ".new", path)
        mark = p.log.mark()
        p.send_signal(signal.SIGHUP)
        self.expect_log(p, r"configuration reloaded", 5, mark, what="the last reload")
        time.sleep(1)
        fds1, rss1 = t.settled_fd_count(p.pid), t.proc_status(p.pid, "VmRSS")
        reloads = len(p.log.find_all(r"configuration reloaded"))
        refused = len(p.log.find_all(r"reload failed"))
        sent = feed.stop()
        self.wait_counted(port, sent, what="after the SIGHUP storm")
        ok = t.wait_until(lambda: len(sub.unique_stamps()) >= sent, 20)
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, p.log.text())
        self.assertEqual(p.log.find_all(SANITIZER.pattern), [], "sanitizer report")
        t.figure(f"{self.SIGNALS} SIGHUPs at {self.RATE} telegrams/s: {reloads} reloads, "
                 f"{refused} broken files refused; fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} "
                 f"kB; {len(sub.unique_stamps())} of {sent} state messages")
        self.assertGreater(reloads, 0)
        self.assertGreater(refused, 0)
        self.assertEqual(fds1, fds0, "fds leaked by reloads")
        self.assert_rss_growth(rss0, rss1, 1024, "RSS grew by more than 1 MiB over the reloads")
        self.assertTrue(ok, "MQTT state messages missing after the SIGHUP storm")
        self.assert_stored(db, range(START, START + sent), "after the SIGHUP storm")


# ---- L2/T3: clocks -----------------------------------------------------------------------

class Test11MeterClockJumps(FaultTest):
    def test_meter_clock_jumps(self):
        """The meter's own clock jumps back an hour, forward a year and to the year 2000.
        Documented behaviour (docs/store.md): a reading not newer than the last stored one
        is ignored; a clock before 2010 or more than a day ahead of the system clock is
        bogus and the received time is used. Asserted: nothing stored before a jump is
        lost or purged (raw_days = 7), readings after it are stored, the energy of the
        hourly buckets equals the register difference, no new history segment."""
        wall = int(time.time())
        base = wall - 1200  # meter time: 20 minutes ago, one second per telegram
        src = self.telegrams(560, base, "src")
        db, port = self.path("p1d.db"), t.free_port()
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             commit="1s", raw_days=7))
        want, sent = [], 0

        def feed(tels, pace=0.0):
            nonlocal sent
            for x in tels:
                os.write(wfd, x)
                sent += 1
                if pace:
                    time.sleep(pace)
            self.wait_counted(port, sent, what="clock jumps")

        feed(src[:300])                                             # A: normal
        want += [base + i for i in range(300)]
        feed([retime(src[300 + i], meter_time(base + 300 + i - 3600)) for i in range(60)])  # B
        feed(src[360:420])                                          # C: back to normal
        want += [base + i for i in range(360, 420)]
        t_d = int(time.time())
        feed([retime(src[420 + i], meter_time(base + 420 + i + 365 * 86400)) for i in range(4)],
             1.05)                                                  # D: +1 year
        feed([retime(src[424 + i], "000101000000W") for i in range(3)], 1.05)  # E: year 2000
        t_e = int(time.time())
        ahead = wall + 120 - (base + 430)  # F: normal again, newer than D and E's receive times
        feed([retime(src[430 + i], meter_time(base + 430 + i + ahead)) for i in range(130)])
        want += [base + 430 + i + ahead for i in range(130)]
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, p.log.text())
        got = self.assert_stored(db, want, "meter clock jumps", exact=False)
        odd = sorted(set(got) - set(want))
        self.assertTrue(all(t_d <= u <= t_e + 1 for u in odd),
                        f"readings stored at unexpected times: {odd} (bogus clocks between "
                        f"{t_d} and {t_e})")
        self.assertEqual(len(odd), 7, "the bogus-clock telegrams are stored at their "
                                      "received time")
        con = sqlite3.connect(db)
        hours = con.execute("SELECT sum(energy_delivered_tariff1) + sum(energy_delivered_tariff2)"
                            " FROM agg WHERE res = 1").fetchone()[0]
        segs = con.execute("SELECT count(*) FROM segments").fetchone()[0]
        con.close()
        self.assertEqual(hours, t.delivered_wh(src[559]) - t.delivered_wh(src[0]),
                         "energy lost or counted twice across the jumps")
        self.assertEqual(segs, 1, "a clock jump started a new history segment")
        t.figure(f"meter clock jumps -1 h, +1 year, year 2000: {len(got)} of {sent} telegrams "
                 f"stored (60 of the hour back ignored as not newer), 7 bogus ones at their "
                 "received time; energy exact; one segment")


class Test12SystemClockJumps(FaultTest):
    """The daemon's wall clock (libfaketime) jumps -1 h, +1 h, +1 year and -1 year while a
    meter with a right clock sends telegrams (test matrix L2, T3): every reading keeps the
    meter's time, none is purged or ignored, the timers (monotonic) keep going."""

    @unittest.skipUnless(FAKETIME_LIB, "libfaketime (Debian package faketime) missing")
    def test_system_clock_jumps(self):
        wall = int(time.time())
        src = self.telegrams(200, wall, "src")
        clock = self.path("faketime")
        with open(clock, "w") as f:
            f.write("+0\n")
        env = t.clean_env(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=clock,
                          FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        # an ASan build wants its runtime first; libfaketime only wraps the clock functions
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
        db, port = self.path("p1d.db"), t.free_port()
        p, wfd = self.pipe_p1d(t.config_text("file = -\npace = fast", db=db, http_port=port,
                                             commit="1s", raw_days=7), env=env)
        sent, i = [], 0
        for offset in ("+0", "-3600", "+0", "+3600", "+0", "+31536000", "+0", "-31536000",
                       "+0"):
            with open(clock + ".new", "w") as f:
                f.write(offset + "\n")
            os.replace(clock + ".new", clock)
            for _ in range(8):  # the meter's clock is right: at most a minute ahead
                os.write(wfd, src[i])
                sent.append(wall + i)
                i += 1
            self.wait_counted(port, len(sent), what=f"system clock {offset}")
            self.expect_running(p, f"with the system clock at {offset}")
        p.end_input()
        p.wait(20)
        self.assertEqual(p.returncode, 0, p.log.text())
        got = t.stored_utcs(db)
        self.assertEqual(t.integrity(db), "ok")
        missing = sorted(set(sent) - set(got))
        t.figure(f"system clock jumps -1 h, +1 h, +1 year, -1 year: {len(sent) - len(missing)}"
                 f" of {len(sent)} readings stored with the meter's time")
        self.assertEqual(missing, [], f"{len(missing)} readings not stored with the meter's "
                                      f"time (stored instead: {sorted(set(got) - set(sent))[:8]});"
                                      " store log:\n" + "\n".join(p.log.find_all("store|clock")))


# ---- S6: the reader frozen while the meter keeps sending ---------------------------------

class Test13ReaderFrozen(FaultTest):
    """p1d stopped (SIGSTOP) while `p1d simulate --pty` keeps writing 20 telegrams a second
    without waiting (a full pty drops bytes, like a UART overrun): after SIGCONT the backlog
    and the cut telegram are sorted out, reading goes on, nothing is stored twice or out of
    order."""
    FROZEN_S = 30 if FULL else 5

    def test_reader_frozen(self):
        link = self.path("p1")
        err = open(self.path("sim.err"), "w+")
        self.addCleanup(err.close)
        sim = self.procs.start([t.P1D, "simulate", "--pty", link, "--interval", "0.05",
                                "--step", "1", "--start", str(START)], stderr=err)
        self.assertTrue(t.wait_until(lambda: os.path.exists(link), 5), "no pty from simulate")
        db, port = self.path("p1d.db"), t.free_port()
        p = self.start_p1d(t.config_text(f"serial = {link}\npreset = 115200-8N1", db=db,
                                         http_port=port, commit="1s"))
        self.assertTrue(t.wait_until(lambda: (t.meter_counts(port) or (0,))[0] >= 20, 10),
                        f"no telegrams from the simulator; log:\n{p.log.text()}")
        p.send_signal(signal.SIGSTOP)
        time.sleep(self.FROZEN_S)
        p.send_signal(signal.SIGCONT)
        t_cont = t.now()
        n0 = t.wait_until(lambda: t.meter_counts(port), 5)[0]
        self.assertTrue(t.wait_until(lambda: t.meter_counts(port)[0] >= n0 + 20, 5),
                        "reading did not go on after SIGCONT")
        resumed = t.now() - t_cont
        t.stop(sim)
        err.seek(0)
        m = re.search(r"generated=(\d+) written=(\d+) dropped=(\d+)", err.read())
        self.assertIsNotNone(m, "no summary from p1d simulate")
        counts = t.meter_counts(port)
        self.finish(p)
        got = t.stored_utcs(db)
        self.assertEqual(t.integrity(db), "ok")
        self.assertEqual(got, sorted(set(got)), "readings stored twice or out of order")
        self.assertEqual(len(got), counts[0], "telegrams counted but not stored")
        self.assertTrue(all(START <= u < START + int(m.group(1)) for u in got),
                        "a reading that was never sent")
        t.figure(f"reader frozen {self.FROZEN_S} s: simulator {m.group(0)}; p1d "
                 f"{counts[0]} telegrams, {counts[1]} frames rejected; 20 more within "
                 f"{resumed:.2f} s of SIGCONT; stored in order, none twice")


def main():
    if not t.P1D or not os.access(t.P1D, os.X_OK):
        print("P1D must point at the p1d binary", file=sys.stderr)
        return 1
    missing = [n for n, x in (("socat", t.SOCAT), ("mosquitto", t.MOSQUITTO),
                              ("mosquitto_sub", t.MOSQUITTO_SUB),
                              ("mosquitto_pub", t.MOSQUITTO_PUB)) if not x]
    if missing:
        print(f"SKIP: {', '.join(missing)} not found")
        return 77
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(128 + signo))
    prog = unittest.main(exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
