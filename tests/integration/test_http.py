#!/usr/bin/env python3
"""HTTP API of the real p1d: a file of simulated telegrams read at meter pace (1/s), HTTP on
a free loopback port with a read token and the HomeWizard API on.

Checks: /now, /meters/<m>/now, /metrics and the HomeWizard data match what `p1d decode` prints
for the same raw telegram (exact numbers); SSE delivers each new telegram; missing or wrong
token -> 401, right token -> 200, X-Robots-Tag everywhere; malformed paths, parameters and
requests -> 4xx, never a crash; 100 concurrent connections and slowloris-style clients do not
stop telegram counting. Exit 77 (skip) when p1d is not built."""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p1dtest import check, check_log, failures_status, free_port  # noqa: E402

P1D = os.environ.get("P1D")
TOKEN = "test-read-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN}


class Client:
    def __init__(self, port):
        self.port = port

    def request(self, path, method="GET", headers=None, source="127.0.0.1", timeout=5):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                       source_address=(source, 0))
        try:
            c.request(method, path, headers=AUTH if headers is None else headers)
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, path):
        st, _, body = self.request(path)
        check(st == 200, f"{path}: status {st}")
        return json.loads(body)

    def telegrams(self, source="127.0.0.200"):
        st, _, body = self.request("/api/v1/meters", source=source)
        if st != 200:
            return None
        return json.loads(body)["meters"][0]["telegrams"]


def decode(raw):
    out = subprocess.run([P1D, "decode", "-"], input=raw, stdout=subprocess.PIPE, check=True)
    return out.stdout.rstrip(b"\n")


def same_telegram(cli, path):
    """(raw, body of path) taken while the latest telegram did not change."""
    for _ in range(20):
        _, _, raw1 = cli.request("/api/v1/telegram")
        st, _, body = cli.request(path)
        _, _, raw2 = cli.request("/api/v1/telegram")
        if raw1 == raw2 and st == 200:
            return raw1, body
        time.sleep(0.05)
    raise AssertionError("telegram kept changing")


def test_exact(cli):
    raw, now = same_telegram(cli, "/api/v1/now")
    want = decode(raw)
    check(now == want, "/api/v1/now differs from p1d decode")
    raw, now = same_telegram(cli, "/api/v1/meters/main/now")
    check(now == decode(raw), "/api/v1/meters/main/now differs from p1d decode")
    # the numbers as text, exactly as decode prints them
    raw, metrics = same_telegram(cli, "/metrics")
    d = decode(raw).decode()
    for field, metric in [("energy_delivered_tariff1", "p1d_energy_delivered_tariff1_kwh_total"),
                          ("power_delivered", "p1d_power_delivered_kw"),
                          ("voltage_l1", "p1d_voltage_l1_volts"),
                          ("gas_delivered", "p1d_gas_delivered_m3_total")]:
        m = re.search(r'"%s":([-0-9.]+)' % field, d)
        if check(m, f"decode has no {field}"):
            line = '%s{meter="main"} %s\n' % (metric, m.group(1))
            check(line in metrics.decode(), f"/metrics lacks {line.strip()}")
    check_exposition(metrics.decode())
    raw, hw = same_telegram(cli, "/api/v1/data")
    hw = hw.decode()
    m = re.search(r'"energy_delivered_tariff1":([-0-9.]+)', decode(raw).decode())
    check(m and ('"total_power_import_t1_kwh":%s' % m.group(1)) in hw, "HomeWizard t1 != decode")
    j = json.loads(hw)
    check(isinstance(j.get("active_power_w"), int), "HomeWizard active_power_w not an integer")
    check(j.get("external") and j["external"][0]["type"] == "gas_meter", "HomeWizard external")
    st, h, body = cli.request("/api/v1/telegram", method="HEAD")
    check(st == 200 and body == b"", "HEAD /api/v1/telegram")
    st, _, body = cli.request("/api/v1/telegram?mask=1")
    check(st == 200 and b"0-0:96.1.1(XXXX" in body, "mask=1 does not mask the id")


def check_exposition(text):
    families, current = set(), None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            check(typ in ("counter", "gauge"), f"type {typ}")
            check(name not in families, f"family {name} twice")
            check(typ != "counter" or name.endswith("_total"), f"counter {name} without _total")
            families.add(name)
            current = name
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (\S+)', line)
        if not check(m, f"bad sample line {line!r}"):
            continue
        check(m.group(1) == current, f"sample {m.group(1)} outside its family")
        try:
            float(m.group(4))
        except ValueError:
            check(False, f"bad value in {line!r}")


def test_sse(cli):
    c = http.client.HTTPConnection("127.0.0.1", cli.port, timeout=5)
    c.request("GET", "/api/v1/events", headers=AUTH)
    r = c.getresponse()
    check(r.status == 200 and r.getheader("Content-Type") == "text/event-stream", "SSE headers")
    events, start = [], time.monotonic()
    while len(events) < 5 and time.monotonic() - start < 10:
        line = r.fp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
        elif line.startswith(b"id: "):
            events.append(int(line[4:]))
    c.close()
    ids = [e for e in events if isinstance(e, int)]
    data = [e for e in events if isinstance(e, dict)]
    check(len(data) >= 2, f"SSE: {len(data)} events")
    check(ids == list(range(ids[0], ids[0] + len(ids))) if ids else False, f"SSE ids {ids}")
    stamps = [d["timestamp"] for d in data]
    check(len(set(stamps)) == len(stamps), "SSE repeated a telegram")


def test_tokens(cli):
    routes = ["/api/v1/meters", "/api/v1/status", "/api/v1/now", "/api/v1/telegram",
              "/api/v1/meters/main/now", "/api/v1/meters/main/history?resolution=hour", "/metrics", "/api",
              "/api/v1/data", "/api/v1/events", "/nope"]
    for path in routes:
        for hdr, want in [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                          ({"Authorization": "Bearer " + TOKEN[:-1]}, 401),
                          ({"Authorization": "Basic " + TOKEN}, 401)]:
            st, h, body = cli.request(path, headers=hdr)
            check(st == want, f"{path} with {hdr}: {st}, want {want}")
            check(h.get("x-robots-tag") == "noindex", f"{path}: no X-Robots-Tag")
            check(TOKEN.encode() not in body, f"{path}: token in body")
        if path == "/api/v1/events":
            continue
        st, h, body = cli.request(path)
        check(st in (200, 404, 503), f"{path} with the token: {st}")
        check(h.get("x-robots-tag") == "noindex", f"{path}: no X-Robots-Tag")
        check(TOKEN.encode() not in body, f"{path}: token in body")
    st, _, _ = cli.request("/api/v1/status")
    check(st == 200, "status with the right token")


def raw_request(port, data, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # p1d answered and closed before reading everything
        out = b""
        while len(out) < 1 << 20:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            out += b
    m = re.match(rb"HTTP/1\.[01] (\d{3})", out)
    return int(m.group(1)) if m else None


def test_malformed(cli):
    for path, want in [("/api/v1/meters/nope/now", 404), ("/api/v1/meters/../now", 404),
                       ("/api/v1/meters/main/now/", 404), ("/api/v1/telegram?mask=2", 400),
                       ("/api/v1/history?resolution=year", 400), ("/api/v1/history", 400),
                       ("/api/v1/history?resolution=hour&from=yesterday", 400),
                       ("/api/v1/meters/%00/now", 404), ("/api/v1/meters/%zz/now", 404),
                       ("/%", 404), ("/api/v1/now?" + "a=b&" * 200, 200)]:
        st, _, body = cli.request(path)
        check(st == want, f"{path[:60]}: {st}, want {want}")
        if st >= 400:
            check(json.loads(body).get("error"), f"{path[:60]}: no JSON error")
    st, h, _ = cli.request("/api/v1/now", method="POST")
    check(st == 405 and h.get("allow") == "GET, HEAD", f"POST: {st}")
    auth = ("Authorization: Bearer %s\r\n" % TOKEN).encode()
    for data in [b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n",
                 b"BREW /api/v1/now HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
                 b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n" + auth +
                 b"\r\nhello",
                 b"\x00\xff garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"]:
        st = raw_request(cli.port, data)
        check(st is None or 400 <= st < 500 or st == 505,
              f"raw {data[:40]!r}...: status {st}")
    check(cli.telegrams() is not None, "p1d answers after malformed requests")


def test_load(cli, proc):
    before = cli.telegrams()
    socks = []
    # 100 connections from 20 loopback addresses (5 each, under the per-IP cap), half of
    # them slowloris: a partial request line, then nothing
    for i in range(100):
        s = socket.socket()
        s.settimeout(2)
        s.bind(("127.0.0.%d" % (2 + i // 5), 0))
        try:
            s.connect(("127.0.0.1", cli.port))
            if i % 2:
                s.sendall(b"GET /api/v1/now HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            pass
        socks.append(s)
    time.sleep(3.5)
    during = cli.telegrams()
    check(proc.poll() is None, "p1d died under load")
    # [http] timeout = 2s: every idle or slow connection was closed by p1d by now
    timed_out = 0
    for s in socks:
        s.settimeout(0.5)
        try:
            data = s.recv(4096)
            timed_out += data == b"" or data.startswith(b"HTTP/1.1 408")
        except ConnectionResetError:
            timed_out += 1
        except OSError:
            pass
        s.close()
    check(timed_out == len(socks), f"slow connections closed by the timeout: {timed_out} of 100")
    time.sleep(1.2)
    after = cli.telegrams()
    check(before is not None and during is not None and during >= before + 2,
          f"telegrams during load: {before} -> {during}")
    check(after is not None and after > during, f"telegrams after load: {during} -> {after}")
    # 8 connections from one address are allowed, more are refused
    socks = [socket.create_connection(("127.0.0.1", cli.port), source_address=("127.0.0.77", 0))
             for _ in range(10)]
    time.sleep(0.3)
    closed = 0
    for s in socks:
        s.settimeout(1)
        try:
            s.sendall(b"GET /api/v1/status HTTP/1.0\r\n" + AUTH_LINE + b"\r\n")
            if not s.recv(100):
                closed += 1
        except OSError:
            closed += 1
        s.close()
    check(closed == 2, f"per-IP limit: {closed} of 10 refused, want 2")


def test_health(cli):
    """The store's health in /api/v1/status and /metrics: it commits every second, so the
    committed count grows and matches the database; MQTT is off, so its section is null."""
    def committed():
        return cli.json("/api/v1/status")["store"]["readings_committed"]
    first = committed()
    deadline = time.monotonic() + 5
    while committed() <= first and time.monotonic() < deadline:
        time.sleep(0.2)
    st = cli.json("/api/v1/status")
    store = st["store"]
    check(store["readings_committed"] > first, f"store commits do not advance: {store}")
    check(store["healthy"] is True and store["commit_failures"] == 0, f"store unhealthy: {store}")
    check(store["size_bytes"] >= os.path.getsize(store["path"]) > 0, f"store size: {store}")
    check(store["commits"] >= 1 and store["pages_written"] > 0, f"store counters: {store}")
    check(st["mqtt"] is None, "mqtt section without MQTT")
    _, _, body = cli.request("/metrics")
    text = body.decode()
    m = re.search(r"^p1d_store_readings_committed_total (\d+)$", text, re.M)
    check(m and int(m.group(1)) >= store["readings_committed"], "p1d_store_readings_committed_total")
    for fam in ("p1d_store_healthy 1", "p1d_store_size_bytes ", "p1d_process_resident_memory_bytes ",
                "# TYPE p1d_store_checkpoints_total counter"):
        check(fam in text, f"/metrics lacks {fam!r}")
    check("p1d_mqtt_" not in text, "MQTT families without MQTT")


AUTH_LINE = ("Authorization: Bearer %s\r\n" % TOKEN).encode()


def main():
    if not P1D or not os.access(P1D, os.X_OK):
        print("P1D not set or not executable, skipping")
        return 77
    with tempfile.TemporaryDirectory() as d:
        sim = os.path.join(d, "sim.txt")
        subprocess.run([P1D, "simulate", "--count", "120", "--interval", "0", "--output", sim],
                       check=True, stderr=subprocess.DEVNULL)
        port = free_port()
        conf = os.path.join(d, "p1d.conf")
        with open(conf, "w") as f:
            f.write("[meter main]\nfile = %s\npace = meter\n\n[store]\ndatabase = %s\n"
                    "commit_interval = 1s\n\n"
                    "[mqtt]\n\n[http]\nlisten = 127.0.0.1:%d\nmax_connections = 256\n"
                    "timeout = 2s\nread_token = %s\nhomewizard = true\n"
                    % (sim, os.path.join(d, "p1d.db"), port, TOKEN))
        log = open(os.path.join(d, "p1d.log"), "w+")
        proc = subprocess.Popen([P1D, "-c", conf], stdout=subprocess.DEVNULL, stderr=log)
        cli = Client(port)
        try:
            for _ in range(100):
                try:
                    if (cli.telegrams(source="127.0.0.1") or 0) >= 1:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError("no telegram over HTTP within 10 s")
            for t in (test_exact, test_sse, test_tokens, test_malformed, test_health):
                print("--", t.__name__, flush=True)
                t(cli)
            print("-- test_load", flush=True)
            test_load(cli, proc)
            check(proc.poll() is None, "p1d still running")
        finally:
            proc.terminate()
            rc = proc.wait(10)
            check(rc == 0, f"p1d exit code {rc}")
            log.seek(0)
            check_log(log.read(), 4000)
    return failures_status()


if __name__ == "__main__":
    sys.exit(main())
