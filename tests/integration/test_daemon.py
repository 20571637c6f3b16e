#!/usr/bin/env python3
"""test_daemon.py - integration tests that start the real p1d daemon.

Covers rows S1, S3, S4, S7 and Y2 of the test matrix: configuration errors, a serial meter on
a pty pair made by socat (sd_notify READY/STATUS/WATCHDOG/STOPPING through a Unix datagram
socket bound here), unplug/replug of the pty, absence at start, a TCP bridge, file replay,
SIGHUP reloads, SIGTERM and the data watchdog (stale_after).

Needs P1D (the p1d binary; ctest sets it) and socat; exits 77 (skipped) when socat is missing.
Python standard library only. Run: P1D=build/p1d python3 tests/integration/test_daemon.py
"""
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p1dtest import (TELEGRAM_RE, LogChecks, Lines, clean_env, cpu_seconds,  # noqa: E402
                     figure, free_port, kill_all, now, rchar, stop, wait_until)

P1D = os.environ.get("P1D", "")
SOCAT = shutil.which("socat")

# How long p1d may take for things the matrix gives a figure for.
READY_S = 2.0         # Y2: READY=1 after exec
REOPEN_S = 2.0        # S1/S3: reading again after the node reappears
STOP_S = 2.0          # Y2: exit after SIGTERM
WATCHDOG_USEC = 2000000
WATCHDOG_GAP_S = 1.5  # pings every WATCHDOG_USEC/2; allow some scheduling slack
STATUS_S = 5.0        # STATUS= period of main.c
STATUS_WAIT_S = STATUS_S + 2.0

# Every process started, so that main() can kill what a test could not (an interrupt).
ALL_PROCS = []

STATUS_RE = re.compile(r"main: (\d+) telegrams, last \d+ s ago, (\d+) CRC errors")


def simulate(args, out_path):
    """Runs `p1d simulate ARGS` writing to out_path; returns its stderr summary."""
    with open(out_path, "wb") as out:
        r = subprocess.run([P1D, "simulate"] + args, stdout=out, stderr=subprocess.PIPE,
                           timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"p1d simulate {' '.join(args)} failed ({r.returncode}): "
                             f"{r.stderr.decode(errors='replace')}")
    return r.stderr.decode(errors="replace")


def make_telegrams(tmp, n, name="tel", extra=()):
    """n simulated DSMR 5 telegrams (CRC'd), each as bytes."""
    path = os.path.join(tmp, f"{name}.txt")
    simulate(["--count", str(n), "--interval", "0", "--step", "1"] + list(extra), path)
    with open(path, "rb") as f:
        data = f.read()
    tel = TELEGRAM_RE.findall(data)
    if len(tel) != n or b"".join(tel) != data:
        raise AssertionError(f"p1d simulate --count {n} gave {len(tel)} telegrams")
    return tel


def bad_crc(tel):
    """The telegram with a wrong (but well-formed) CRC: a CRC error, nothing else."""
    crc = tel[-6:-2]
    wrong = b"%04X" % (int(crc, 16) ^ 0x5A5A)
    return tel[:-6] + wrong + b"\r\n"


def truncated(tel, mid_line=False):
    """The first half of a telegram, cut at the end of a line in its body (a frame the next
    telegram's '/' ends), or with mid_line in the middle of a line."""
    half = len(tel) // 2
    return tel[:half] if mid_line else tel[: tel.index(b"\n", half) + 1]


def garbage(rng, n=None):
    """Line noise that starts no frame: no '/' in any parity (0x2F, 0xAF; the framer masks
    bytes to 7 bits for 7E1 lines) and no 0xDB (an encrypted envelope)."""
    n = n or rng.randint(1, 120)
    return bytes(b for b in (rng.randrange(256) for _ in range(n))
                 if b & 0x7F != 0x2F and b != 0xDB)


def fds(pid):
    """{fd: what it refers to} of a process."""
    res = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            res[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return res


def stable_fds(pid):
    """fds(pid) once two samples 100 ms apart agree: sd_notify() opens a socket for each
    message it sends, so a single sample can catch one in passing."""
    last = fds(pid)
    for _ in range(30):
        time.sleep(0.1)
        cur = fds(pid)
        if cur == last:
            return cur
        last = cur
    return last


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.msgs = []  # (time, {key: value}, raw text)
        self.cond = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            text = data.decode(errors="replace")
            kv = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            with self.cond:
                self.msgs.append((now(), kv, text))
                self.cond.notify_all()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()

    def mark(self):
        with self.cond:
            return len(self.msgs)

    def wait(self, pred, timeout, since=0):
        """First (time, kv) at index >= since with pred(kv) true, or None."""
        deadline = now() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.msgs):
                    t, kv, _ = self.msgs[i]
                    if pred(kv):
                        return t, kv
                    i += 1
                left = deadline - now()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def times(self, key, value, since=0):
        with self.cond:
            return [t for t, kv, _ in self.msgs[since:] if kv.get(key) == value]

    def statuses(self):
        with self.cond:
            return [kv["STATUS"] for _, kv, _ in self.msgs if "STATUS" in kv]


class DaemonTest(LogChecks, unittest.TestCase):
    """Base: a temporary directory, and every process started is killed at the end."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="p1d-it-")
        self.dir = self._tmp.name
        self.procs = []
        self.closers = []
        self.meter_fds = set()
        self.rng = random.Random(self.id())

    def tearDown(self):
        for fd in self.meter_fds:
            os.close(fd)
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception:
                pass
        kill_all(self.procs)
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def track(self, p):
        self.procs.append(p)
        ALL_PROCS.append(p)

    # ---- processes ----

    def start_p1d(self, args, notify=None, watchdog=False):
        env = clean_env()
        if notify:
            env["NOTIFY_SOCKET"] = notify.path
            if watchdog:
                env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        started = now()
        # no HTTP listener (port 8080 may be taken) and a private database: these tests are
        # about sources, config and systemd; other test files cover the sinks
        args = ["--http", "", "--db", self.path("p1d.db")] + args
        p = subprocess.Popen([P1D] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env, cwd=self.dir)
        self.track(p)
        p.log = Lines(p.stderr)
        p.started = started
        return p

    def stop_process(self, p, sig=signal.SIGTERM, timeout=5):
        return stop(p, sig, timeout)

    def notify_socket(self):
        n = NotifySocket(self.path("notify"))
        self.closers.append(n.close)
        return n

    def start_socat(self):
        """A pty pair: the test writes to DIR/meter, p1d reads DIR/p1. Returns the process
        once both links exist, and the time they did."""
        meter, p1 = self.path("meter"), self.path("p1")
        p = subprocess.Popen([SOCAT, "-d", "-d", f"pty,raw,echo=0,link={meter}",
                              f"pty,raw,echo=0,link={p1}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.track(p)
        ok = wait_until(lambda: os.path.exists(meter) and os.path.exists(p1), 3, 0.005)
        t = now()
        self.assertTrue(ok, "socat did not create its pty links within 3 s")
        return p, t

    def stop_socat(self, p):
        """Unplug: socat exits on SIGTERM and removes its links; the pty vanishes."""
        self.stop_process(p, signal.SIGTERM)
        gone = wait_until(lambda: not os.path.lexists(self.path("p1")), 2)
        self.assertTrue(gone, "socat left its pty link behind")

    def open_meter(self):
        fd = os.open(self.path("meter"), os.O_WRONLY | os.O_NOCTTY)
        self.meter_fds.add(fd)
        return fd

    def close_meter(self, fd):
        self.meter_fds.discard(fd)
        os.close(fd)

    def write_meter(self, fd, data, p1d):
        """Writes data to the meter end and waits until p1d has read that many bytes more
        (socat drained the pty, and p1d's rchar grew by at least len(data))."""
        before = rchar(p1d.pid)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

        def drained():
            q = fcntl.ioctl(fd, termios.TIOCOUTQ, struct.pack("i", 0))
            return struct.unpack("i", q)[0] == 0 and rchar(p1d.pid) - before >= len(data)

        ok = wait_until(drained, 3, 0.005)
        t = now()
        self.assertTrue(ok, f"p1d did not read the {len(data)} bytes written to the pty "
                            f"within 3 s (read {rchar(p1d.pid) - before})")
        time.sleep(0.05)
        return t

    # ---- checks (expect_log, expect_running: p1dtest.LogChecks) ----

    def expect_status(self, p, notify, telegrams, crc=None, timeout=STATUS_WAIT_S):
        """Waits for a STATUS= line reporting exactly `telegrams` telegrams."""
        def pred(kv):
            m = STATUS_RE.search(kv.get("STATUS", ""))
            return m and int(m.group(1)) == telegrams and (crc is None or int(m.group(2)) == crc)

        r = notify.wait(pred, timeout)
        if r is None:
            st = notify.statuses()
            self.fail(f"no STATUS= with {telegrams} telegrams"
                      f"{'' if crc is None else f' and {crc} CRC errors'} within {timeout} s; "
                      f"last STATUS: {st[-1] if st else None!r}; p1d log:\n{p.log.text()}")
        return r


def write_config(path, text):
    """Replaces the file atomically, as an editor or a config manager would."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Test1Config(DaemonTest):
    """p1d -n -c FILE: one error line naming file and line, exit 1; a good file exits 0."""

    def check(self, conf, text):
        path = self.path(conf)
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        r = subprocess.run([P1D, "-n", "-c", path], capture_output=True, timeout=10,
                           env=clean_env(), cwd=self.dir)
        return r, path, r.stderr.decode(errors="replace")

    def test_unknown_key(self):
        r, path, err = self.check("unknown.conf", "[meter main]\nserial = /dev/ttyUSB0\n"
                                                  "seriall = /dev/ttyUSB1\n")
        self.assertEqual(r.returncode, 1, f"unknown key: exit {r.returncode}, stderr:\n{err}")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, f"unknown key: expected exactly one error line:\n{err}")
        self.assertIn(f"{path}:3:", lines[0], "unknown key: the error does not name FILE:3:")
        self.assertIn("seriall", lines[0], "unknown key: the error does not name the key")

    def test_bad_value(self):
        r, path, err = self.check("value.conf", "[meter main]\nserial = /dev/ttyUSB0\n"
                                                "stale_after = banana\n")
        self.assertEqual(r.returncode, 1, f"bad value: exit {r.returncode}, stderr:\n{err}")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, f"bad value: expected exactly one error line:\n{err}")
        self.assertIn(f"{path}:3:", lines[0], "bad value: the error does not name FILE:3:")

    def test_missing_file(self):
        r, path, err = self.check("missing.conf", None)
        self.assertEqual(r.returncode, 1, f"missing file: exit {r.returncode}, stderr:\n{err}")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, f"missing file: expected one error line:\n{err}")
        self.assertIn(path, lines[0], "missing file: the error does not name the file")

    def test_good_config(self):
        r, path, err = self.check("good.conf", "[p1d]\nlog_level = notice\n\n[meter main]\n"
                                               "serial = /dev/ttyUSB0\npreset = 115200-8N1\n"
                                               "stale_after = 2s\nreconnect_max = 5s\n")
        self.assertEqual(r.returncode, 0, f"good config: exit {r.returncode}, stderr:\n{err}")
        self.assertEqual(err, "", "good config: -n printed something on stderr")


class Test2Serial(DaemonTest):
    """S1 basics and Y2: a meter on a pty; READY, STATUS counters, watchdog pings."""

    def test_serial_pty_counts_and_notify(self):
        n_good, n_crc = 10, 2
        tel = make_telegrams(self.dir, n_good + n_crc + 1)
        good, crc_bad, cut = tel[:n_good], tel[n_good:n_good + n_crc], tel[-1]

        socat, _ = self.start_socat()
        notify = self.notify_socket()
        p = self.start_p1d(["-v", "--serial", self.path("p1"), "--preset", "115200-8N1"],
                           notify, watchdog=True)
        r = notify.wait(lambda kv: kv.get("READY") == "1", READY_S)
        self.assertIsNotNone(r, f"READY=1 not sent within {READY_S} s of exec; log:\n"
                                f"{p.log.text()}")
        ready_t = r[0]
        self.expect_log(p, r"meter main: reading .*/p1\b", 2, what="serial open")

        # good telegrams with garbage, CRC errors and a cut frame in between
        stream = b""
        for i, t in enumerate(good):
            stream += garbage(self.rng)
            if i == 3:
                stream += bad_crc(crc_bad[0])
            if i == 5:
                stream += truncated(cut)  # ended by the next '/': truncated, not a CRC error
            if i == 7:
                stream += garbage(self.rng, 300) + bad_crc(crc_bad[1])
            stream += t
        fd = self.open_meter()
        self.write_meter(fd, stream[: len(stream) // 2], p)
        self.write_meter(fd, stream[len(stream) // 2:], p)

        self.expect_status(p, notify, n_good, crc=n_crc)
        self.expect_log(p, r"meter main: first telegram", 0.5, what="first telegram")
        self.expect_running(p, "while reading the pty")

        pings = notify.times("WATCHDOG", "1")
        pings = [t for t in pings if t >= ready_t] + [now()]
        self.assertGreaterEqual(len(pings), 5, "fewer than 5 WATCHDOG=1 pings in the run")
        gap = max(b - a for a, b in zip(pings, pings[1:]))
        figure(f"READY=1 {ready_t - p.started:.3f} s after exec; {len(pings) - 1} WATCHDOG=1, "
               f"largest gap {gap:.3f} s")
        self.assertLessEqual(gap, WATCHDOG_GAP_S,
                             f"WATCHDOG=1 gap of {gap:.2f} s with WATCHDOG_USEC={WATCHDOG_USEC}")
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")
        self.stop_socat(socat)

    def test_serial_cut_telegram(self):
        """A DSMR 5 meter (one telegram a second) stops in the middle of a line (Data Request
        released, bytes dropped) and sends the next telegram 0.9 s later: the cut one is
        dropped, the next one accepted (dsmr-protocol.md 2.6: an inter-byte gap above about
        500 ms at 115200 means the telegram was cut)."""
        tel = make_telegrams(self.dir, 4)
        socat, _ = self.start_socat()
        notify = self.notify_socket()
        p = self.start_p1d(["-v", "--serial", self.path("p1"), "--preset", "115200-8N1"],
                           notify)
        self.expect_log(p, r"meter main: reading .*/p1\b", 2, what="serial open")
        fd = self.open_meter()
        self.write_meter(fd, tel[0] + truncated(tel[1], mid_line=True), p)
        time.sleep(0.9)
        self.write_meter(fd, tel[2], p)
        time.sleep(0.9)
        self.write_meter(fd, tel[3], p)
        self.expect_status(p, notify, 3, crc=0)
        self.close_meter(fd)
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")
        self.stop_socat(socat)


class Test3Replug(DaemonTest):
    """S1: unplug and replug the pty; S3: absent at start."""

    CYCLES = 20

    def test_unplug_replug(self):
        tel = make_telegrams(self.dir, 3 + 3 * self.CYCLES)
        socat, _ = self.start_socat()
        notify = self.notify_socket()
        p = self.start_p1d(["-v", "--serial", self.path("p1"), "--preset", "115200-8N1"], notify)
        self.expect_log(p, r"meter main: reading .*/p1\b", 2, what="serial open")
        fd = self.open_meter()
        sent = 0
        self.write_meter(fd, b"".join(tel[:3]), p)
        sent += 3
        self.expect_status(p, notify, sent)
        fds_first = stable_fds(p.pid)

        latencies, read_latencies = [], []
        for cycle in range(self.CYCLES):
            mark = p.log.mark()
            self.close_meter(fd)
            self.stop_socat(socat)
            self.expect_log(p, r"meter main: .*/p1 disappeared", 2, mark,
                            what=f"cycle {cycle}: the loss")
            time.sleep(self.rng.uniform(0.1, 1.5))  # absent
            self.expect_running(p, f"in cycle {cycle} while the pty was absent")
            socat, t_back = self.start_socat()
            r = self.expect_log(p, r"meter main: .*/p1 back after", REOPEN_S + 1, mark,
                                what=f"cycle {cycle}: the reopen")
            latencies.append(r[0] - t_back)
            fd = self.open_meter()
            k = 1 + cycle % 3
            chunk = tel[sent:sent + k]
            t_read = self.write_meter(fd, garbage(self.rng) + b"".join(chunk), p)
            read_latencies.append(t_read - t_back)
            sent += k
        self.expect_status(p, notify, sent, crc=0)
        self.expect_running(p, "after the replug cycles")
        fds_end = stable_fds(p.pid)
        worst = max(latencies)
        figure(f"{self.CYCLES} replugs: reopen {min(latencies):.3f}..{worst:.3f} s after the "
               f"pty reappeared, its telegrams read {max(read_latencies):.3f} s after at most; "
               f"{sent} telegrams; fds {len(fds_first)} -> {len(fds_end)}")
        self.assertLessEqual(worst, REOPEN_S,
                             f"reopen took up to {worst:.2f} s after the pty reappeared "
                             f"(latencies {[round(x, 2) for x in latencies]})")
        self.assertEqual(len(fds_end), len(fds_first),
                         f"open fds after the first connection: {fds_first}; after "
                         f"{self.CYCLES} replugs: {fds_end}")
        self.close_meter(fd)
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")
        self.stop_socat(socat)

    def test_absent_at_start(self):
        """S3: no device at start: READY anyway, reading <= 2 s after it appears (the pty is
        absent for 5 s: longer than the first backoff steps)."""
        tel = make_telegrams(self.dir, 3)
        notify = self.notify_socket()
        p = self.start_p1d(["-v", "--serial", self.path("p1"), "--preset", "115200-8N1"], notify)
        r = notify.wait(lambda kv: kv.get("READY") == "1", READY_S)
        self.assertIsNotNone(r, f"READY=1 not sent within {READY_S} s with the device absent; "
                                f"log:\n{p.log.text()}")
        self.expect_log(p, r"meter main: cannot open .*/p1", 2, what="the absent device")
        cpu0, t0 = cpu_seconds(p.pid), now()
        time.sleep(5)
        self.expect_running(p, "with the device absent")
        cpu = (cpu_seconds(p.pid) - cpu0) / (now() - t0)
        figure(f"absent at start: CPU {100 * cpu:.2f} % while absent")
        self.assertLess(cpu, 0.01, f"p1d used {100 * cpu:.1f} % CPU while the device was absent")
        socat, t_back = self.start_socat()
        r = self.expect_log(p, r"meter main: .*/p1 available after", 10, what="the first open")
        figure(f"absent at start: opened {r[0] - t_back:.3f} s after the pty appeared")
        self.assertLessEqual(r[0] - t_back, REOPEN_S,
                             f"p1d opened the device {r[0] - t_back:.2f} s after it appeared")
        fd = self.open_meter()
        self.write_meter(fd, b"".join(tel), p)
        self.expect_status(p, notify, 3)
        self.close_meter(fd)
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")
        self.stop_socat(socat)


class Test4Tcp(DaemonTest):
    """S7: a TCP bridge that is killed and restarted."""

    def start_sim(self, port, n):
        err = open(self.path(f"sim{n}.err"), "wb")
        self.closers.append(err.close)
        p = subprocess.Popen([P1D, "simulate", "--listen", f"127.0.0.1:{port}", "--interval",
                              "0.1", "--start", str(1790000000 + 100000 * n)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                             env=clean_env())
        self.track(p)
        return p

    def stop_sim(self, p, n):
        self.assertEqual(self.stop_process(p), 0, "p1d simulate did not exit 0 on SIGTERM")
        with open(self.path(f"sim{n}.err")) as f:
            text = f.read()
        m = re.search(r"written=(\d+)", text)
        self.assertIsNotNone(m, f"no summary from p1d simulate: {text!r}")
        return int(m.group(1))

    def test_tcp_bridge_restart(self):
        port = free_port()
        sim = self.start_sim(port, 1)
        time.sleep(0.2)
        notify = self.notify_socket()
        p = self.start_p1d(["-v", "--tcp", f"127.0.0.1:{port}"], notify)
        self.expect_log(p, r"meter main: first telegram", 3, what="first telegram over TCP")
        time.sleep(1.5)
        lost = r"meter main: 127\.0\.0\.1:%d connection lost" % port
        self.assertEqual(p.log.find_all(lost), [], "the connection dropped while healthy")
        mark = p.log.mark()
        written = self.stop_sim(sim, 1)
        self.assertGreater(written, 5, "the simulator wrote too few telegrams")
        self.expect_log(p, lost, 2, mark, what="the lost connection")
        time.sleep(0.5)  # the bridge is down for a moment

        # S7: reconnect <= 1 s + the current backoff after the bridge is back
        sim = self.start_sim(port, 2)
        t_back = now()
        retries = p.log.find_all(r"next attempt in", mark)
        r = self.expect_log(p, r"meter main: 127\.0\.0\.1:%d back after" % port, 10, mark,
                            what="the reconnect")
        delay = parse_delay(retries[-1]) if retries else 0.25
        figure(f"TCP: reconnected {r[0] - t_back:.3f} s after the bridge came back "
               f"(backoff then {delay:.3f} s)")
        self.assertLessEqual(r[0] - t_back, 1.0 + delay,
                             f"reconnected {r[0] - t_back:.2f} s after the bridge came back; "
                             f"the backoff then was {delay} s; log:\n{p.log.text(mark)}")
        time.sleep(1.0)
        written += self.stop_sim(sim, 2)
        self.expect_status(p, notify, written, crc=0)
        self.expect_running(p, "after the bridge restart")
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")


def parse_delay(line):
    """Seconds from "next attempt in 561 ms" / "1.7 s" / "12 s" / "2 min"."""
    m = re.search(r"next attempt in ([\d.]+) (ms|s|min|h)", line)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600}[m.group(2)]


class Test5File(DaemonTest):
    """File replay, pace fast: exits 0 by itself with the right counts."""

    def replay(self, path, timeout=20):
        p = self.start_p1d(["--file", path, "--pace", "fast"])
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"p1d --file did not exit by itself within {timeout} s; log:\n"
                      f"{p.log.text()}")
        p.log.thread.join(2)
        return rc, p

    def test_replay_500(self):
        path = self.path("500.txt")
        simulate(["--count", "500", "--interval", "0"], path)
        rc, p = self.replay(path)
        self.assertEqual(rc, 0, f"p1d --file exited {rc}; log:\n{p.log.text()}")
        self.assertIsNotNone(p.log.wait(r"meter main: end of input: 500 telegrams, 0 rejected",
                                        0), f"the log does not say 500 telegrams:\n"
                                            f"{p.log.text()}")

    def test_two_meters(self):
        """Two [meter NAME] sections in one daemon, each with its own decoder and counts."""
        a, b = self.path("house.txt"), self.path("garage.txt")
        simulate(["--count", "30", "--interval", "0"], a)
        simulate(["--dialect", "fluvius", "--count", "20", "--interval", "0"], b)
        conf = self.path("two.conf")
        with open(conf, "w") as f:
            f.write(f"[meter house]\nfile = {a}\npace = fast\n"
                    f"[meter garage]\nfile = {b}\npace = fast\n")
        p = self.start_p1d(["-c", conf])
        try:
            rc = p.wait(20)
        except subprocess.TimeoutExpired:
            self.fail(f"p1d with two file meters did not exit by itself; log:\n{p.log.text()}")
        p.log.thread.join(2)
        self.assertEqual(rc, 0, f"p1d exited {rc}; log:\n{p.log.text()}")
        for name, n, dialect in (("house", 30, "dsmr5"), ("garage", 20, "fluvius")):
            self.assertIsNotNone(p.log.wait(rf"meter {name}: first telegram \({dialect}", 0),
                                 f"meter {name} did not report a {dialect} telegram:\n"
                                 f"{p.log.text()}")
            self.assertIsNotNone(p.log.wait(rf"meter {name}: end of input: {n} telegrams, "
                                            r"0 rejected", 0),
                                 f"meter {name} did not count {n} telegrams:\n{p.log.text()}")

    def test_replay_damaged(self):
        tel = make_telegrams(self.dir, 42)
        good, rest = tel[:30], tel[30:]
        data, crc, cut = b"", 0, 0
        for i, t in enumerate(good):
            data += garbage(self.rng, 200) if i % 3 == 0 else b""
            if i % 5 == 2:
                data += bad_crc(rest.pop())
                crc += 1
            if i % 7 == 4:
                data += truncated(rest.pop())
                cut += 1
            data += t
        data += truncated(rest.pop())  # cut at the end of the input
        cut += 1
        path = self.path("damaged.txt")
        with open(path, "wb") as f:
            f.write(data)
        rc, p = self.replay(path)
        self.assertEqual(rc, 0, f"p1d --file exited {rc}; log:\n{p.log.text()}")
        want = f"end of input: {len(good)} telegrams, {crc + cut} rejected"
        self.assertIsNotNone(p.log.wait(re.escape(want), 0),
                             f"expected '{want}' ({crc} CRC errors, {cut} truncated); log:\n"
                             f"{p.log.text()}")
        # rejected frames are logged in summary, one line per reason and interval: the
        # lines of each reason, with their "(N more ...)", add up to that reason's count
        for reason, pattern, n in (("CRC errors", r"CRC mismatch", crc),
                                   ("truncated frames", r"truncated", cut)):
            lines = p.log.find_all(r"warning: meter main: .*" + pattern)
            logged = sum(1 + int(m.group(1)) if m else 1 for m in
                         (re.search(r"\((\d+) more in the last", t) for t in lines))
            self.assertEqual(logged, n, f"the log summarises {logged} {reason}, there were "
                                        f"{n}:\n{p.log.text()}")


CONF = """[p1d]
log_level = {level}

[meter main]
serial = {serial}
preset = 115200-8N1
stale_after = {stale}
reconnect_max = 1s
"""


class Test6Reload(DaemonTest):
    """SIGHUP: a broken file is refused and the running configuration kept; a good one is
    applied; a changed source is named as needing a restart."""

    def test_sighup(self):
        conf = self.path("p1d.conf")
        absent = self.path("absent-tty")  # retried every second (reconnect_max = 1s)
        write_config(conf, CONF.format(level="info", serial=absent, stale="30s"))
        notify = self.notify_socket()
        p = self.start_p1d(["-c", conf], notify)
        self.assertIsNotNone(notify.wait(lambda kv: kv.get("READY") == "1", READY_S),
                             f"READY=1 not sent; log:\n{p.log.text()}")
        self.expect_log(p, r"p1d .* started", 2, what="start")

        # broken: an unknown key on line 3
        write_config(conf, "[p1d]\nlog_level = debug\nlog_levle = debug\n\n[meter main]\n"
                           f"serial = {absent}\n")
        mark, nmark = p.log.mark(), notify.mark()
        p.send_signal(signal.SIGHUP)
        self.expect_log(p, re.escape(conf) + r":3: ", 2, mark,
                        what="the reload error with file:line")
        self.expect_log(p, r"keeping", 2, mark, what="'keeping the running configuration'")
        self.assertEqual(len(p.log.find_all(r"error: .*" + re.escape(conf) + ":", mark)), 1,
                         f"the reload error is not one line:\n{p.log.text(mark)}")
        self.assertIsNotNone(notify.wait(lambda kv: kv.get("READY") == "1", 2, nmark),
                             "no READY=1 after the failed reload")
        time.sleep(1.5)
        self.expect_running(p, "after a SIGHUP with a broken file")
        self.assertEqual(p.log.find_all(r"debug:"), [],
                         f"log_level = debug of the refused file was applied:\n{p.log.text()}")

        # fixed, with a change applied on reload (log_level)
        write_config(conf, CONF.format(level="debug", serial=absent, stale="30s"))
        mark = p.log.mark()
        p.send_signal(signal.SIGHUP)
        self.expect_log(p, r"configuration reloaded", 2, mark, what="'configuration reloaded'")
        self.assertEqual(p.log.find_all(r"error:|warning: reload", mark), [],
                         f"errors after reloading a good file:\n{p.log.text(mark)}")
        self.expect_log(p, r"debug: ", 2.5, mark, what="a debug line after log_level = debug")

        # a changed source needs a restart
        write_config(conf, CONF.format(level="debug", serial=self.path("other-tty"),
                                       stale="30s"))
        mark = p.log.mark()
        p.send_signal(signal.SIGHUP)
        self.expect_log(p, r"\[meter main\] serial changed and needs a restart", 2, mark,
                        what="the restart-needed message")
        time.sleep(0.3)
        self.expect_running(p, "after the reloads")
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")


class Test7Term(DaemonTest):
    """Y2: SIGTERM -> STOPPING=1, exit 0 within 2 s."""

    def test_sigterm(self):
        tel = make_telegrams(self.dir, 2)
        socat, _ = self.start_socat()
        notify = self.notify_socket()
        p = self.start_p1d(["--serial", self.path("p1"), "--preset", "115200-8N1"], notify,
                           watchdog=True)
        self.assertIsNotNone(notify.wait(lambda kv: kv.get("READY") == "1", READY_S),
                             f"READY=1 not sent; log:\n{p.log.text()}")
        self.expect_log(p, r"meter main: reading", 2, what="serial open")
        fd = self.open_meter()
        self.write_meter(fd, b"".join(tel), p)
        mark = notify.mark()
        t0 = now()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.fail(f"p1d still running {STOP_S} s after SIGTERM; log:\n{p.log.text()}")
        took = now() - t0
        figure(f"SIGTERM: exit after {took:.3f} s")
        self.assertEqual(rc, 0, f"exit status {rc} after SIGTERM; log:\n{p.log.text()}")
        self.assertIsNotNone(notify.wait(lambda kv: kv.get("STOPPING") == "1", 0.5, mark),
                             "STOPPING=1 not sent on SIGTERM")
        self.assertLessEqual(took, STOP_S)
        self.close_meter(fd)
        self.stop_socat(socat)


class Test8Stale(DaemonTest):
    """S4: the pty stays open but sends nothing: stale after stale_after, reopened, and
    reading again as soon as data resumes."""

    def test_stale(self):
        tel = make_telegrams(self.dir, 3)
        conf = self.path("p1d.conf")
        write_config(conf, CONF.format(level="info", serial=self.path("p1"), stale="2s"))
        socat, _ = self.start_socat()
        fd = self.open_meter()  # the "meter" is connected, but silent
        notify = self.notify_socket()
        p = self.start_p1d(["-v", "-c", conf], notify)
        t_open = self.expect_log(p, r"meter main: reading .*/p1\b", 2, what="serial open")[0]
        fds_open = stable_fds(p.pid)
        t, line, _ = self.expect_log(p, r"meter main: no valid telegram for .* from .*/p1, "
                                        r"reopening", 3.5, what="the stale warning")
        figure(f"stale flagged {t - t_open:.3f} s after the open (stale_after 2 s)")
        self.assertGreaterEqual(t - t_open, 1.8, f"stale flagged after {t - t_open:.2f} s, "
                                                 "before stale_after = 2 s")
        self.assertLessEqual(t - t_open, 3.0, f"stale flagged {t - t_open:.2f} s after the "
                                              "open; stale_after = 2 s")
        # reopened: the watchdog runs again on the new open and fires again
        mark = p.log.mark()
        self.expect_log(p, r"meter main: still no valid telegram .*, reopening", 3, mark,
                        what="the second stale period (after the reopen)")
        self.assertEqual(p.log.find_all(r"cannot open|disappeared"), [],
                         f"the stale reopen failed:\n{p.log.text()}")
        # data resumes: counted, and the recovery is logged. The line above is logged just
        # before the reopen, which flushes the port's input: let the reopen happen first.
        time.sleep(0.3)
        fds_now = stable_fds(p.pid)
        self.assertEqual(len(fds_now), len(fds_open),
                         f"fds changed across stale reopens: {fds_open} -> {fds_now}")
        mark = p.log.mark()
        t_data = now()
        self.write_meter(fd, b"".join(tel), p)
        r = self.expect_log(p, r"meter main: valid telegrams from .*/p1 again", 2, mark,
                            what="the recovery")
        self.assertLessEqual(r[0] - t_data, 2.0)
        self.expect_status(p, notify, 3)
        self.expect_running(p, "after the stale periods")
        self.close_meter(fd)
        self.assertEqual(self.stop_process(p), 0, "p1d did not exit 0 on SIGTERM")
        self.stop_socat(socat)


def main():
    if not SOCAT:
        print("SKIP: socat not found")
        return 77
    if not P1D or not os.access(P1D, os.X_OK):
        print("P1D must point at the p1d binary", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(128 + signo))
    try:
        prog = unittest.main(exit=False, verbosity=2)
    finally:
        kill_all(ALL_PROCS)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
