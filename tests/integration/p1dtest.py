"""p1dtest.py - helpers shared by the integration tests (test_*.py here) and the end-to-end
benchmark (bench/e2e.py): the real p1d with a generated configuration, a real mosquitto on a
free loopback port, mosquitto_sub subscribers, socat pty pairs, the simulator, a small HTTP
client, what /proc says about a process, what the history database holds, and the check() /
FAILURES bookkeeping of the tests that are plain scripts rather than unittest.

Not a test itself (ctest runs tests/integration/test_* only). Python standard library only.
Every process started through a Procs object is killed by Procs.kill_all().
"""
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime

P1D = os.environ.get("P1D", "")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
SOCAT = shutil.which("socat")

TELEGRAM_RE = re.compile(rb"/[^/!]*![0-9A-F]{4}\r\n", re.S)
STAMP_RE = re.compile(rb'"timestamp":"([^"]+)"')

FAILURES = []  # what check() found wrong


def now():
    return time.monotonic()


def figure(text):
    """A measured figure, for the log."""
    print(f"  # {text}", file=sys.stderr, flush=True)


def wait_until(pred, timeout, step=0.02):
    """pred() until it is truthy or timeout seconds pass; returns the last value."""
    deadline = now() + timeout
    while True:
        v = pred()
        if v or now() >= deadline:
            return v
        time.sleep(step)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def clean_env(**extra):
    """The environment for p1d: nothing inherited that changes how it logs or notifies."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                        "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
    env["LC_ALL"] = "C"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def check(cond, what):
    """A check of a script-style test: a failure is printed and kept in FAILURES."""
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def check_log(text, tail):
    """The checks on a stopped p1d's log (text): no sanitizer report. When any check of the
    run failed, the last tail characters of the log go to stderr."""
    check("runtime error" not in text and "AddressSanitizer" not in text, "sanitizer report")
    if FAILURES:
        sys.stderr.write(text[-tail:])


def failures_status():
    """Prints the number of failed checks; the exit status for it (0: none)."""
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


def iso_utc(text):
    """ISO 8601 with an offset -> UTC seconds."""
    return int(datetime.fromisoformat(text).timestamp())


# ---- processes ----------------------------------------------------------------------------

class Procs:
    """Every process started through it, so that all can be killed at the end."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def kill_all(self):
        kill_all(reversed(self.procs))
        self.procs = []


def kill_all(procs):
    """SIGKILL to each process of procs (Popen objects) still running, in that order; waits
    for each and closes its pipes."""
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()


def stop(p, sig=signal.SIGTERM, timeout=10):
    """Signals p and waits for it; SIGKILL after timeout. Returns the exit status."""
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        return None


class Lines:
    """Collects lines from a stream in a thread, each with its monotonic arrival time."""

    def __init__(self, stream):
        self.items = []  # (time, text)
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        try:
            for raw in iter(stream.readline, b""):
                with self.cond:
                    self.items.append((now(), raw.decode(errors="replace").rstrip("\n")))
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass  # closed by Procs.kill_all
        stream.close()

    def mark(self):
        with self.cond:
            return len(self.items)

    def wait(self, pattern, timeout, since=0):
        """The first (time, text, match) at index >= since matching pattern, or None."""
        rx = re.compile(pattern)
        deadline = now() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.items):
                    t, text = self.items[i]
                    m = rx.search(text)
                    if m:
                        return t, text, m
                    i += 1
                left = deadline - now()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def find_all(self, pattern, since=0):
        rx = re.compile(pattern)
        with self.cond:
            return [s for _, s in self.items[since:] if rx.search(s)]

    def all(self):
        """Every (time, text) so far."""
        with self.cond:
            return list(self.items)

    def text(self, since=0, last=60):
        """The lines from index since, the last `last` of them (None: all), joined."""
        with self.cond:
            lines = [s for _, s in self.items[since:]]
        return "\n".join(lines if last is None else lines[-last:])


class LogChecks:
    """unittest.TestCase checks on a p1d whose stderr is p.log (a Lines)."""

    def expect_log(self, p, pattern, timeout, since=0, what=None):
        r = p.log.wait(pattern, timeout, since)
        if r is None:
            self.fail(f"{what or 'log line'} /{pattern}/ not seen within {timeout} s; p1d "
                      f"{'running' if p.poll() is None else 'exited %s' % p.returncode}; "
                      f"its log:\n{p.log.text()}")
        return r

    def expect_running(self, p, when=""):
        if p.poll() is not None:
            self.fail(f"p1d exited ({p.returncode}) {when}; its log:\n{p.log.text()}")


# ---- /proc --------------------------------------------------------------------------------

def proc_status(pid, key):
    """A kB figure of /proc/PID/status (VmRSS, VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_rollup(pid):
    """kB figures of /proc/PID/smaps_rollup (Rss, Pss, Private_Clean, Private_Dirty, ...):
    Pss shares each shared library page among the processes that map it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f
                                                       if line.rstrip().endswith("kB"))}
    except OSError:
        return {}


def proc_io(pid):
    """/proc/PID/io as a dict (readable for a zombie too)."""
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sanitized(pid):
    """True when the process runs with AddressSanitizer (its RSS says little: freed memory
    waits in ASan's quarantine)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "asan" in f.read()
    except OSError:
        return False


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid, timeout=3):
    """fd_count once three samples 0.1 s apart agree (an HTTP connection the test just closed
    may still be open on p1d's side for a moment)."""
    last, same = fd_count(pid), 0
    deadline = now() + timeout
    while same < 2 and now() < deadline:
        time.sleep(0.1)
        cur = fd_count(pid)
        same = same + 1 if cur == last else 0
        last = cur
    return last


def rchar(pid):
    return proc_io(pid)["rchar"]


# ---- the simulator ------------------------------------------------------------------------

def simulate(path, count, start, step=1, extra=()):
    """`p1d simulate` of count telegrams, simulated clock start + step per telegram, to path."""
    with open(path, "wb") as out:
        r = subprocess.run([P1D, "simulate", "--count", str(count), "--interval", "0",
                            "--step", str(step), "--start", str(start)] + list(extra),
                           stdout=out, stderr=subprocess.PIPE, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"p1d simulate failed ({r.returncode}): {r.stderr.decode()}")
    return path


def delivered_wh(tel):
    """energy_delivered_tariff1 + tariff2 of a telegram (bytes), in Wh."""
    return sum(int(m.group(1) + m.group(2)) for m in
               re.finditer(rb"1-0:1\.8\.[12]\((\d+)\.(\d{3})\*kWh\)", tel))


def telegrams(path):
    """The telegrams of a simulator file, each as bytes."""
    with open(path, "rb") as f:
        data = f.read()
    tel = TELEGRAM_RE.findall(data)
    if b"".join(tel) != data:
        raise AssertionError(f"{path} holds more than telegrams")
    return tel


class Feeder(threading.Thread):
    """Writes into fd (a pipe to p1d's standard input): the telegrams of a list, `rate` per
    second (None: as fast as the pipe takes them), or with path a whole file in 1 MiB chunks.
    stop() ends it early. It never closes fd: the caller does, which ends p1d's input."""

    def __init__(self, fd, tels=None, rate=None, path=None):
        super().__init__(daemon=True)
        self.fd, self.tels, self.rate, self.path = fd, tels, rate, path
        self.written = 0  # telegrams
        self.error = None
        self.stopping = threading.Event()
        self.done = threading.Event()

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def run(self):
        try:
            if self.path:
                with open(self.path, "rb") as f:
                    while not self.stopping.is_set():
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        self._write(chunk)
                        self.written += chunk.count(b"\n!")
            else:
                start = now()
                for i, tel in enumerate(self.tels):
                    if self.rate:
                        delay = start + i / self.rate - now()
                        if delay > 0 and self.stopping.wait(delay):
                            break
                    if self.stopping.is_set():
                        break
                    self._write(tel)
                    self.written += 1
        except OSError as e:
            self.error = e
        self.done.set()

    def stop(self):
        self.stopping.set()
        self.join(10)
        return self.written


# ---- the daemon ---------------------------------------------------------------------------

def config_text(meter, db=None, mqtt_port=None, http_port=None, commit="5s", raw_days=3650,
                http_extra="", extra=""):
    """A p1d.conf: one meter "main" (meter: the lines of its section), the store at db (off
    when None), MQTT to 127.0.0.1:mqtt_port (off when None), HTTP on 127.0.0.1:http_port (off
    when None; http_extra: more lines of [http]). Raw readings are kept for 10 years unless
    raw_days says otherwise, so that every reading can be checked. extra: more sections."""
    text = f"[meter main]\n{meter}\n[store]\n"
    text += (f"database = {db}\ncommit_interval = {commit}\nraw_days = {raw_days}\n" if db
             else "enabled = false\n")
    text += "[http]\n" + (f"listen = 127.0.0.1:{http_port}\n" if http_port else "listen =\n")
    text += http_extra
    if mqtt_port:
        text += f"[mqtt]\nhost = 127.0.0.1\nport = {mqtt_port}\nkeepalive = 5s\n"
    return text + extra


def start_p1d(procs, conf, args=(), stdin=subprocess.DEVNULL, prefix=(), env=None):
    """p1d -c conf ARGS (under prefix, e.g. valgrind); its stderr in p.log (a Lines)."""
    p = procs.start(list(prefix) + [P1D, "-c", conf] + list(args), stdin=stdin,
                    stderr=subprocess.PIPE, env=env or clean_env())
    p.log = Lines(p.stderr)
    return p


# ---- MQTT ---------------------------------------------------------------------------------

class Broker:
    """mosquitto on 127.0.0.1:port with a generated configuration; start() and stop() may be
    called again and again (the same port, the same persistence file)."""

    def __init__(self, procs, directory, port=None, extra=""):
        self.procs, self.dir, self.port = procs, directory, port or free_port()
        self.conf = os.path.join(directory, f"mosquitto-{self.port}.conf")
        with open(self.conf, "w") as f:
            # as root, mosquitto would switch to user "mosquitto", who cannot read our files
            f.write(f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
                    f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    f"log_dest file {os.path.join(directory, f'mosquitto-{self.port}.log')}\n"
                    f"{extra}")
        self.p = None

    def start(self, timeout=5):
        self.p = self.procs.start([MOSQUITTO, "-c", self.conf])
        if not wait_until(lambda: listening(self.port), timeout):
            raise AssertionError(f"mosquitto does not listen on {self.port}")
        return self

    def stop(self, sig=signal.SIGTERM):
        stop(self.p, sig)


class Subscriber:
    """mosquitto_sub on topics (QoS 1); messages as (time, topic, payload bytes). With
    client_id the session is persistent: a broker that keeps it queues messages while the
    subscriber is away (and mosquitto_sub reconnects by itself). keep=False counts the state
    messages' timestamps only (a benchmark's hundreds of thousands of messages)."""

    def __init__(self, procs, port, topics, client_id=None, keep=True):
        args = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-F", "%t\t%p"]
        if client_id:
            args += ["-i", client_id, "-c"]
        for t in topics:
            args += ["-t", t]
        self.p = procs.start(args, stdout=subprocess.PIPE)
        self.lock = threading.Lock()
        self.msgs = []
        self.stamps = {}  # state topic: UTC of each telegram -> times received
        self.keep = keep
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self._read()
        except (OSError, ValueError):
            pass  # closed by Procs.kill_all

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            topic, _, payload = raw.rstrip(b"\n").partition(b"\t")
            m = STAMP_RE.search(payload) if topic.endswith(b"/state") else None
            with self.lock:
                if self.keep:
                    self.msgs.append((now(), topic.decode(errors="replace"), payload))
                if m:
                    u = iso_utc(m.group(1).decode())
                    self.stamps[u] = self.stamps.get(u, 0) + 1

    def messages(self, topic=None):
        with self.lock:
            return [m for m in self.msgs if topic is None or m[1] == topic]

    def unique_stamps(self):
        with self.lock:
            return set(self.stamps)

    def state_count(self):
        with self.lock:
            return sum(self.stamps.values())

    def stop(self):
        stop(self.p)
        self.thread.join(5)


def publish(port, topic, payload, retain=False, qos=1):
    """mosquitto_pub; payload str or bytes (sent from stdin, so any bytes and any size)."""
    data = payload.encode() if isinstance(payload, str) else payload
    args = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t", topic,
            "-s" if data else "-n"]
    if retain:
        args.append("-r")
    subprocess.run(args, input=data, check=True, timeout=20, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


# ---- serial -------------------------------------------------------------------------------

class Pty:
    """A socat pty pair: the test writes to DIR/meter, p1d reads DIR/p1. plug() makes it,
    unplug() removes it (socat exits, the node and its link disappear)."""

    def __init__(self, procs, directory):
        self.procs = procs
        self.meter = os.path.join(directory, "meter")
        self.node = os.path.join(directory, "p1")
        self.p = None
        self.fd = None

    def plug(self):
        """Returns the time just before the node was created."""
        t0 = now()
        self.p = self.procs.start([SOCAT, f"pty,raw,echo=0,link={self.meter}",
                                   f"pty,raw,echo=0,link={self.node}"])
        if not wait_until(lambda: os.path.exists(self.meter) and os.path.exists(self.node), 3,
                          0.005):
            raise AssertionError("socat did not create its pty links within 3 s")
        self.fd = os.open(self.meter, os.O_WRONLY | os.O_NOCTTY)
        return t0

    def unplug(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        stop(self.p)
        if not wait_until(lambda: not os.path.lexists(self.node), 2):
            raise AssertionError("socat left its pty link behind")

    def write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


# ---- HTTP ---------------------------------------------------------------------------------

def http_get(port, path, source="127.0.0.1", timeout=5, method="GET"):
    """(status, body) of one request on its own connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def meter_counts(port, source="127.0.0.1", timeout=5):
    """(telegrams, rejected) of meter main from /api/v1/meters, or None."""
    try:
        st, body = http_get(port, "/api/v1/meters", source, timeout)
    except OSError:
        return None
    if st != 200:
        return None
    m = json.loads(body)["meters"][0]
    return m["telegrams"], m["rejected"]


# ---- the history database -----------------------------------------------------------------

def stored_utcs(db):
    """UTC of every raw reading in the database (committed rows only), decoded from the packed
    chunks as docs/store.md describes them (the decoder of test_store.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_store import readings
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in readings(con)]
    finally:
        con.close()


def integrity(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
