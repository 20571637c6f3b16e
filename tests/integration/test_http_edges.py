#!/usr/bin/env python3
"""test_http_edges.py - the HTTP server's edges with the real p1d, each case its own daemon:

- HTTPS: with tls_cert/tls_key the API answers over TLS (checked against the test CA) and
  not in plain text; a key file others may read, or a certificate without its key, stops p1d
  at start with one clear line and exit status 1.
- Socket activation: started by systemd-socket-activate with a socket named "http", p1d
  serves on that socket and not on its configured address.
- The raw telegram relay: a client that reads every byte gets every telegram byte for byte,
  a client that never reads is dropped (counted in /metrics) and never slows p1d.
- The live stream: an SSE client that never reads is dropped (counted in /api/v1/status)
  while another one gets every telegram, in order, and p1d keeps counting telegrams.

Telegrams come from `p1d simulate` through a pipe at 200 per second. Python standard library
plus openssl and systemd-socket-activate (skipped cases say why). Exit 77 when p1d is not
built.
"""
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p1dtest import (check, failures_status, figure, free_port, listening, now,  # noqa: E402
                     wait_until)

P1D = os.environ.get("P1D", "")
OPENSSL = shutil.which("openssl")
ACTIVATE = shutil.which("systemd-socket-activate")
SKIPPED = []


class Daemon:
    """The real p1d reading the simulator through a pipe, with a config of its own."""

    def __init__(self, d, http, extra_http="", rate=200, prefix=()):
        self.port = free_port()
        self.conf = os.path.join(d, "p1d.conf")
        with open(self.conf, "w") as f:
            f.write("[meter main]\nfile = -\npace = fast\n[store]\nenabled = false\n"
                    f"[http]\nlisten = 127.0.0.1:{self.port}\n{http}{extra_http}")
        self.log = open(os.path.join(d, "p1d.log"), "w+")
        self.sim = subprocess.Popen([P1D, "simulate", "--interval", str(1 / rate), "--step", "1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.p = subprocess.Popen(list(prefix) + [P1D, "-c", self.conf], stdin=self.sim.stdout,
                                  stdout=subprocess.DEVNULL, stderr=self.log)
        self.sim.stdout.close()

    def text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        for p in (self.sim, self.p):
            if p.poll() is None:
                p.terminate()
        rc = self.p.wait(10)
        self.sim.wait(10)
        check("AddressSanitizer" not in self.text() and "runtime error" not in self.text(),
              "sanitizer report:\n" + self.text()[-2000:])
        return rc


def get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def telegrams(port):
    try:
        st, body = get(port, "/api/v1/meters")
    except OSError:
        return -1  # not listening yet
    return json.loads(body)["meters"][0]["telegrams"] if st == 200 else -1


def test_tls(d):
    if not OPENSSL:
        SKIPPED.append("tls: no openssl")
        return
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o640)
    tls = f"tls_cert = {cert}\ntls_key = {key}\n"
    dm = Daemon(d, tls)
    try:
        ctx = ssl.create_default_context(cafile=cert)

        def now_json():
            try:
                c = http.client.HTTPSConnection("127.0.0.1", dm.port, context=ctx, timeout=5)
                c.request("GET", "/api/v1/now")
                r = c.getresponse()
                body = r.read()
                c.close()
                return json.loads(body) if r.status == 200 else None
            except OSError:
                return None
        t = wait_until(now_json, 10)
        check(t and t.get("valid") is True, "no telegram over HTTPS")
        check("(TLS)" in dm.text(), "no 'listening ... (TLS)' line")
        try:
            st, _ = get(dm.port, "/api/v1/now", timeout=3)
            check(st != 200, "plain HTTP answered on the TLS port")
        except (OSError, http.client.HTTPException):
            pass  # refused or closed: right
        other = ssl.create_default_context()  # the system's CAs do not know the test CA
        try:
            c = http.client.HTTPSConnection("127.0.0.1", dm.port, context=other, timeout=5)
            c.request("GET", "/api/v1/now")
            check(False, "certificate accepted by a client without the test CA")
        except ssl.SSLError:
            pass
    finally:
        check(dm.stop() == 0, "p1d with TLS did not exit 0")
    # refusals at start
    os.chmod(key, 0o644)
    dm = Daemon(d, tls)
    rc = dm.p.wait(10)
    dm.stop()
    check(rc == 1 and re.search(r"tls_key .* can be read by anyone", dm.text()),
          f"world-readable key: exit {rc}, log:\n{dm.text()}")
    dm = Daemon(d, f"tls_cert = {cert}\n")
    rc = dm.p.wait(10)
    dm.stop()
    check(rc == 1 and "tls_cert and tls_key go together" in dm.text(),
          f"cert without key: exit {rc}, log:\n{dm.text()}")


def test_socket_activation(d):
    if not ACTIVATE:
        SKIPPED.append("socket activation: no systemd-socket-activate")
        return
    port = free_port()
    dm = Daemon(d, "", prefix=[ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=http"])
    try:
        # systemd-socket-activate starts p1d at the first connection
        n = wait_until(lambda: telegrams(port) > 0 if listening(port) else False, 10)
        check(n, "no answer on the activated socket")
        check("socket activation" in dm.text(), "no socket activation line:\n" + dm.text())
        check(not listening(dm.port), "the configured address is served too")
    finally:
        dm.stop()


def read_relay(sock, stop_at):
    data = b""
    sock.settimeout(0.2)
    while now() < stop_at:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return data


def test_relay(d):
    rport = free_port()
    dm = Daemon(d, f"relay = 127.0.0.1:{rport}\n")
    try:
        check(wait_until(lambda: listening(rport) and telegrams(dm.port) > 0, 10), "relay not up")
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", rport))
        good = socket.create_connection(("127.0.0.1", rport))
        t0 = telegrams(dm.port)
        data = read_relay(good, now() + 6)
        t1 = telegrams(dm.port)
        frames = re.findall(rb"/[^!]*![0-9A-F]{4}\r\n", data)
        # the simulator's clock steps one second per telegram: every one is there, in order
        stamps = [int(m) * 60 + int(sec) for m, sec in
                  re.findall(rb"0-0:1\.0\.0\(\d{8}(\d\d)(\d\d)[SW]\)", data)]
        steps = {(b - a) % 3600 for a, b in zip(stamps, stamps[1:])}
        check(len(frames) > 600 and steps == {1}, f"relay client: {len(frames)} telegrams, "
              f"steps between them {sorted(steps)[:5]} (want only 1 s)")
        check(b"".join(frames) == data[data.index(b"/"):data.rindex(b"\n") + 1],
              "bytes between telegrams on the relay")
        check(t1 - t0 > 600, f"p1d slowed down: {t1 - t0} telegrams in 6 s")
        _, body = get(dm.port, "/metrics")
        m = re.search(rb"^p1d_relay_dropped_total (\d+)$", body, re.M)
        check(m and int(m.group(1)) >= 1, "the client that never reads was not dropped")
        slow.settimeout(2)
        try:
            while slow.recv(65536):
                pass  # what was queued, then the end
            closed = True
        except (socket.timeout, ConnectionResetError):
            closed = False
        check(closed, "the slow relay client's connection was not closed")
        figure(f"relay: {len(frames)} telegrams to the reading client, slow client dropped")
        good.close()
        slow.close()
    finally:
        rc = dm.stop()
        check(rc == 0, f"p1d with the relay exited {rc}, not 0; its log:\n{dm.text()[-3000:]}")


def small_window_sse(port):
    """An event stream request on a socket with a 4 KiB receive buffer, so that what the
    client does not read backs up in p1d at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_sse_slow_client(d):
    dm = Daemon(d, "")
    try:
        check(wait_until(lambda: telegrams(dm.port) > 0, 10), "no telegram")
        slow = small_window_sse(dm.port)
        good = socket.create_connection(("127.0.0.1", dm.port))
        good.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = telegrams(dm.port)

        def dropped():
            _, body = get(dm.port, "/api/v1/status")
            return json.loads(body)["http"]["sse_dropped"]
        data = b""
        good.settimeout(0.2)
        deadline = now() + 20
        while now() < deadline and not (dropped() >= 1 and len(data) > 100000):
            try:
                data += good.recv(65536)
            except socket.timeout:
                pass
        t1 = telegrams(dm.port)
        check(dropped() >= 1, "the SSE client that never reads was not dropped")
        ids = [int(x) for x in re.findall(rb"^id: (\d+)\r?$", data, re.M)]
        check(len(ids) > 50 and ids == list(range(ids[0], ids[0] + len(ids))),
              f"the reading SSE client missed events: {len(ids)} ids")
        check(t1 - t0 > 100, f"p1d slowed down while an SSE client lagged: {t1 - t0}")
        figure(f"SSE: slow client dropped after {t1 - t0} telegrams, the other got {len(ids)}"
               " events in order")
        good.close()
        slow.close()
    finally:
        check(dm.stop() == 0, "p1d with SSE clients did not exit 0")


def test_sse_lagging_client(d):
    """A client that reads, but slower than telegrams come, skips to the newest events instead
    of being dropped: it stays connected, its ids only go up (with gaps), every event it gets
    is whole, and the skipped events are counted."""
    dm = Daemon(d, "")
    try:
        check(wait_until(lambda: telegrams(dm.port) > 0, 10), "no telegram")
        lag = small_window_sse(dm.port)
        lag.settimeout(5)
        data = b""
        t0 = telegrams(dm.port)
        deadline = now() + 12
        while now() < deadline:  # about 80 KB/s; p1d produces some 360 KB/s
            chunk = lag.recv(4096)
            check(chunk, "p1d closed the lagging client's connection")
            data += chunk
            time.sleep(0.05)
        t1 = telegrams(dm.port)
        _, body = get(dm.port, "/api/v1/status")
        st = json.loads(body)["http"]
        body = data.split(b"\r\n\r\n", 1)[1]
        events = re.findall(rb"id: (\d+)\r?\nevent: telegram\r?\ndata: ([^\r\n]*)\r?\n\r?\n",
                            body)
        ids = [int(i) for i, _ in events]
        for _, payload in events[:-1]:
            json.loads(re.sub(rb"\r\n[0-9a-f]+\r\n", b"", payload))
        check(len(ids) > 20 and ids == sorted(set(ids)),
              f"ids not increasing: {ids[:20]}...")
        gaps = sum(1 for a, b in zip(ids, ids[1:]) if b != a + 1)
        check(gaps > 0 and st["sse_skipped"] > 0, f"nothing skipped: {st}")
        check(st["sse_dropped"] == 0 and st["sse_clients"] == 1, f"client dropped: {st}")
        # at most the queue and the socket buffers behind (some 300 events), not the whole run
        check(t1 - ids[-1] < 600, f"the lagging client is {t1 - ids[-1]} events behind")
        figure(f"SSE: lagging client kept, {len(ids)} events received over {t1 - t0} telegrams,"
               f" {st['sse_skipped']} skipped in {gaps} gaps")
        lag.close()
    finally:
        check(dm.stop() == 0, "p1d with a lagging SSE client did not exit 0")


def main():
    if not P1D or not os.access(P1D, os.X_OK):
        print("P1D not set or not executable, skipping")
        return 77
    for t in (test_tls, test_socket_activation, test_relay, test_sse_slow_client,
              test_sse_lagging_client):
        print("--", t.__name__, flush=True)
        with tempfile.TemporaryDirectory(prefix="p1d-http-") as d:
            t(d)
    for s in SKIPPED:
        print("skipped:", s)
    return failures_status()


if __name__ == "__main__":
    sys.exit(main())
