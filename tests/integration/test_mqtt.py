#!/usr/bin/env python3
"""test_mqtt.py - the MQTT sink against a real mosquitto broker.

Covers rows M1, M2 (accelerated), M5 and M6 of the test matrix and issue 5's checks: per-field
topics carry exactly what `p1d decode` reads from the same telegram, the state topic is the
decode JSON without framing, Home Assistant discovery configs are valid JSON with the right
classes and units, SIGKILL of p1d turns `<base>/status` offline (the will) within 1.5 x
keepalive, a broker stopped for a minute and restarted gets every telegram of the outage
afterwards (and, with a store and a small memory queue, from the history), a wrong password is refused with one clear log line while p1d keeps reading, and
TLS to a broker with a test CA works (and fails with another CA).

Every broker is Debian's mosquitto on a free loopback port with a generated config; the
independent client is mosquitto_sub/mosquitto_pub. Exits 77 (skipped) when they are missing.
Python standard library only. Run: P1D=build/p1d python3 tests/integration/test_mqtt.py
"""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p1dtest import (MOSQUITTO, MOSQUITTO_PUB as PUB, MOSQUITTO_SUB as SUB,  # noqa: E402
                     Lines, figure, free_port, listening, now, stop, wait_until)

P1D = os.environ.get("P1D", "")
PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")

KEEPALIVE_S = 5
# mosquitto_sub as a persistent session (clean session off), kept across broker restarts
SESSION = ("-i", "p1d-test-sub", "-c")
FRAMING = ("valid", "dialect", "header", "crc", "encrypted")
ALL_PROCS = []


def exact(text):
    """JSON with numbers kept as the text the meter wrote (0.000 stays 0.000)."""
    return json.loads(text, parse_float=str, parse_int=str)


class Subscriber:
    """mosquitto_sub -v on some topics; messages as (time, retained, topic, payload)."""

    def __init__(self, port, topics, extra=()):
        args = [SUB, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-F", "%r\t%t\t%p"]
        for t in topics:
            args += ["-t", t]
        self.p = subprocess.Popen(args + list(extra), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        ALL_PROCS.append(self.p)
        self.out = Lines(self.p.stdout)

    def messages(self, topic=None):
        msgs = []
        for t, line in self.out.all():
            parts = line.split("\t", 2)
            if len(parts) == 3 and (topic is None or parts[1] == topic):
                msgs.append((t, parts[0] == "1", parts[1], parts[2]))
        return msgs

    def latest(self):
        d = {}
        for _, _, topic, payload in self.messages():
            d[topic] = payload
        return d

    def stop(self):
        # SIGKILL if it does not go within 5 s (seen on a loaded machine while the broker was
        # down): what it printed before is read already
        stop(self.p, timeout=5)


class FakeBroker:
    """A scripted MQTT 3.1.1 broker on a free port: answers CONNECT, SUBSCRIBE and PINGREQ,
    records every PUBLISH as (connection, packet id, topic, payload, dup flag), and sends
    PUBACK for state messages only when `ack` is true (always for the others). One
    connection at a time, in a thread."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.ack = False
        self.publishes = []
        self.connections = 0
        self.conn = None
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conn = c
            try:
                self._session(c, self.connections)
            except OSError:
                pass
            c.close()

    @staticmethod
    def _read(c, n):
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return buf

    def _session(self, c, conn_no):
        while True:
            h = self._read(c, 1)[0]
            length, mult = 0, 1
            while True:
                b = self._read(c, 1)[0]
                length += (b & 127) * mult
                mult *= 128
                if not b & 128:
                    break
            body = self._read(c, length)
            kind = h >> 4
            if kind == 1:    # CONNECT
                c.sendall(b"\x20\x02\x00\x00")
            elif kind == 3:  # PUBLISH
                qos = (h >> 1) & 3
                tl = int.from_bytes(body[:2], "big")
                topic = body[2:2 + tl].decode()
                pid = int.from_bytes(body[2 + tl:4 + tl], "big") if qos else 0
                payload = body[2 + tl + (2 if qos else 0):]
                with self.lock:
                    self.publishes.append((conn_no, pid, topic, payload, bool(h & 8)))
                if qos == 1 and (self.ack or not topic.endswith("/state")):
                    c.sendall(b"\x40\x02" + pid.to_bytes(2, "big"))
            elif kind == 8:  # SUBSCRIBE: grant QoS 0
                c.sendall(b"\x90\x03" + body[:2] + b"\x00")
            elif kind == 12:  # PINGREQ
                c.sendall(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                return

    def states(self, conn_no=None):
        with self.lock:
            return [json.loads(p[3])["timestamp"] for p in self.publishes
                    if p[2].endswith("/state") and (conn_no is None or p[0] == conn_no)]

    def drop(self):
        """Close the current connection (the broker going away mid-QoS 1)."""
        with self.lock:
            if self.conn:
                self.conn.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.srv.close()
        with self.lock:
            if self.conn:
                self.conn.close()


class MqttTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="p1d-mqtt-")
        self.procs = []
        self.port = free_port()
        self.broker = None

    def tearDown(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def track(self, p):
        self.procs.append(p)
        ALL_PROCS.append(p)
        return p

    # ---- broker ----

    def start_broker(self, extra=""):
        conf = self.path("mosquitto.conf")
        with open(conf, "w") as f:
            # as root, mosquitto would switch to user "mosquitto", who cannot read our files
            f.write(f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
                    f"listener {self.port} 127.0.0.1\npersistence false\n"
                    f"log_dest file {self.path('broker.log')}\n{extra}")
            if "password_file" not in extra:
                f.write("allow_anonymous true\n")
        self.broker = self.track(subprocess.Popen([MOSQUITTO, "-c", conf],
                                                  stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
        self.assertTrue(wait_until(lambda: listening(self.port), 5), "broker does not listen")
        return self.broker

    def stop_broker(self):
        self.broker.terminate()
        self.broker.wait(5)

    # ---- p1d ----

    def write_config(self, mqtt="", meter="file = -\npace = fast\n", store="enabled = false\n"):
        conf = self.path("p1d.conf")
        with open(conf, "w") as f:
            f.write(f"[store]\n{store}[http]\nlisten =\n"
                    f"[meter main]\n{meter}"
                    f"[mqtt]\nhost = 127.0.0.1\nport = {self.port}\n"
                    f"keepalive = {KEEPALIVE_S}s\n{mqtt}")
        return conf

    def start_p1d(self, conf, interval=0.25, count=None):
        """p1d reading `p1d simulate` through a pipe (one telegram per interval, simulated
        clock one second per telegram, so every telegram has its own timestamp)."""
        sim = [P1D, "simulate", "--interval", str(interval), "--step", "1"]
        if count:
            sim += ["--count", str(count)]
        s = self.track(subprocess.Popen(sim, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        p = self.track(subprocess.Popen([P1D, "-c", conf, "-v"], stdin=s.stdout,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env=dict(os.environ, LC_ALL="C")))
        s.stdout.close()
        p.log = Lines(p.stderr)
        p.sim = s
        return p

    def telegrams_read(self, p):
        return len(re.findall(r"meter main: telegram \d+:", p.log.text(last=None)))

    @staticmethod
    def mqtt_log(p):
        return "\n".join(l for l in p.log.text(last=None).splitlines() if "mqtt:" in l)

    def expect_log(self, p, pattern, timeout):
        ok = wait_until(lambda: re.search(pattern, p.log.text(last=None)), timeout)
        self.assertTrue(ok, f"no log line /{pattern}/ in:\n{self.mqtt_log(p)}")

    def subscriber(self, topics, extra=()):
        s = Subscriber(self.port, topics, extra)
        self.procs.append(s.p)
        return s

    def retained(self, topics, extra=()):
        """Every retained message on the topics, read with a fresh client."""
        args = [SUB, "-h", "127.0.0.1", "-p", str(self.port), "-F", "%t\t%p", "-W", "2",
                "--retained-only"] + list(extra)
        for t in topics:
            args += ["-t", t]
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        d = {}
        for line in r.stdout.decode().splitlines():
            t, _, payload = line.partition("\t")
            d[t] = payload
        return d

    # ---- tests ----

    def test_fields_state_discovery(self):
        """M1/issue: per-field topics and the state topic equal `p1d decode` of the same
        telegram; discovery configs are valid JSON with the right classes and units; a clean
        stop leaves `offline`."""
        tel = self.path("tel.txt")
        with open(tel, "wb") as f:
            subprocess.run([P1D, "simulate", "--count", "4", "--interval", "0", "--step", "1"],
                           stdout=f, stderr=subprocess.DEVNULL, check=True, timeout=30)
        decoded = [exact(l) for l in subprocess.run([P1D, "decode", tel], stdout=subprocess.PIPE,
                                                    check=True).stdout.decode().splitlines()]
        self.assertEqual(len(decoded), 4)
        self.start_broker()
        conf = self.write_config(meter=f"file = {tel}\npace = meter\n")
        p = self.track(subprocess.Popen([P1D, "-c", conf, "-v"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE))
        p.log = Lines(p.stderr)
        self.assertEqual(p.wait(20), 0, p.log.text(last=None))

        got = self.retained(["p1d/#", "homeassistant/#"])
        self.assertEqual(got.get("p1d/status"), "offline")
        last = decoded[-1]
        self.assertEqual(got.get("p1d/main/timestamp"), last["timestamp"])
        checked = 0
        for key, value in last.items():
            if key in FRAMING or key in ("mbus", "units", "unknown"):
                continue
            topic = f"p1d/main/{key}"
            if value is None or value == "":
                self.assertNotIn(topic, got)
                continue
            self.assertIn(topic, got, f"no retained {topic}")
            if isinstance(value, list):
                self.assertEqual(exact(got[topic]), value, topic)
            else:
                self.assertEqual(got[topic], value, topic)  # exact text: 0.000 is 0.000
            checked += 1
        self.assertGreater(checked, 30)
        state = exact(got["p1d/main/state"])
        self.assertEqual(state, {k: v for k, v in last.items() if k not in FRAMING})

        configs = {t: json.loads(v) for t, v in got.items() if t.startswith("homeassistant/")}
        want = {
            "energy_delivered_tariff1": ("energy", "total_increasing", "kWh"),
            "energy_returned_tariff2": ("energy", "total_increasing", "kWh"),
            "power_delivered": ("power", "measurement", "kW"),
            "power_delivered_l1": ("power", "measurement", "kW"),
            "voltage_l1": ("voltage", "measurement", "V"),
            "current_l1": ("current", "measurement", "A"),
            "gas_delivered": ("gas", "total_increasing", "m\u00b3"),
            "timestamp": ("timestamp", None, None),
            "electricity_failures": (None, "total_increasing", None),
            "equipment_id": (None, None, None),
        }
        for field, (dc, sc, unit) in want.items():
            c = configs.get(f"homeassistant/sensor/p1d_main/{field}/config")
            self.assertIsNotNone(c, f"no discovery config for {field}")
            self.assertEqual(c.get("device_class"), dc, field)
            self.assertEqual(c.get("state_class"), sc, field)
            self.assertEqual(c.get("unit_of_measurement"), unit, field)
        for t, c in configs.items():
            self.assertEqual(c["availability_topic"], "p1d/status", t)
            self.assertTrue(c["state_topic"].startswith("p1d/main/"), t)
            self.assertEqual(c["device"]["identifiers"], ["p1d_" + last["equipment_id"]])
            self.assertEqual(c["device"]["manufacturer"], "Iskra")
            self.assertEqual(c["device"]["sw_version"], last["p1_version"])
            field = c["state_topic"].split("/")[-1]
            self.assertIn(field, last, f"discovery for a field the meter does not send: {t}")
        figure(f"{checked} per-field topics, {len(configs)} discovery configs")

    def test_fields_thinned_on_fast_replay(self):
        """Per-field topics are latest-value topics: a file replayed at full speed publishes
        each of them at most every 0.5 s and the last telegram's values when it ends, while
        the state topic carries every telegram; at one telegram a second every telegram's
        values go out."""
        n = 3000
        tel = self.path("fast.txt")
        with open(tel, "wb") as f:
            subprocess.run([P1D, "simulate", "--count", str(n), "--interval", "0", "--step", "1"],
                           stdout=f, stderr=subprocess.DEVNULL, check=True, timeout=30)
        last = exact(subprocess.run([P1D, "decode", tel], stdout=subprocess.PIPE, check=True)
                     .stdout.decode().splitlines()[-1])
        # 3000 messages in a burst: the broker must not drop what its subscriber (a slow
        # Python reader on a loaded machine) has not taken yet (default: 1000 queued)
        self.start_broker("max_queued_messages 0\n")
        sub = self.subscriber(["p1d/main/state", "p1d/main/timestamp"])
        self.assertTrue(wait_until(lambda: listening(self.port), 5))
        time.sleep(0.3)  # the subscription is in place
        conf = self.write_config(meter=f"file = {tel}\npace = fast\n")
        t0 = now()
        p = self.track(subprocess.Popen([P1D, "-c", conf], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE))
        p.log = Lines(p.stderr)
        self.assertEqual(p.wait(60), 0, p.log.text(last=None))
        took = now() - t0
        self.assertTrue(wait_until(lambda: len(self._stamps(sub)) >= n, 10),
                        f"{len(self._stamps(sub))} of {n} state messages")
        stamps = [m[3] for m in sub.messages("p1d/main/timestamp")]
        self.assertLessEqual(len(stamps), took / 0.5 + 2, "per-field topics not thinned out")
        self.assertEqual(stamps[-1], last["timestamp"], "the last values were not published")
        self.assertEqual(self.retained(["p1d/main/timestamp"]).get("p1d/main/timestamp"),
                         last["timestamp"])
        figure(f"{n} telegrams in {took:.1f} s: {len(self._stamps(sub))} state messages, "
               f"{len(stamps)} on p1d/main/timestamp")

        # live pace: every telegram's values (4 telegrams, one a second)
        live = self.path("live.txt")
        with open(live, "wb") as f:
            subprocess.run([P1D, "simulate", "--count", "4", "--interval", "0", "--step", "1",
                            "--start", "2026-01-05T00:00:00Z"],
                           stdout=f, stderr=subprocess.DEVNULL, check=True, timeout=30)
        conf = self.write_config(meter=f"file = {live}\npace = meter\n")
        p = self.track(subprocess.Popen([P1D, "-c", conf], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE))
        p.log = Lines(p.stderr)
        self.assertEqual(p.wait(20), 0, p.log.text(last=None))
        self.assertTrue(wait_until(lambda: len([m for m in sub.messages("p1d/main/timestamp")
                                                if m[3].startswith("2026-01-05")]) >= 4, 5))
        got = [m[3] for m in sub.messages("p1d/main/timestamp") if m[3].startswith("2026-01-05")]
        self.assertEqual(len(got), 4, got)

    def test_ha_status_republishes_discovery(self):
        """M1: `homeassistant/status online` makes p1d send its discovery configs again."""
        self.start_broker()
        p = self.start_p1d(self.write_config(), interval=0.5)
        sub = self.subscriber(["homeassistant/sensor/+/power_delivered/config"])
        self.assertTrue(wait_until(lambda: sub.messages(), 10), p.log.text(last=None))
        n = len(sub.messages())
        t0 = now()
        subprocess.run([PUB, "-h", "127.0.0.1", "-p", str(self.port), "-t",
                        "homeassistant/status", "-m", "online"], check=True, timeout=10)
        self.assertTrue(wait_until(lambda: len(sub.messages()) > n, 5),
                        "no discovery after homeassistant/status online")
        figure(f"discovery again {now() - t0:.2f} s after homeassistant/status online")

    def test_will_on_sigkill(self):
        """M5: SIGKILL of p1d turns <base>/status offline within 1.5 x keepalive."""
        self.start_broker()
        p = self.start_p1d(self.write_config())
        sub = self.subscriber(["p1d/status"])
        self.assertTrue(wait_until(lambda: ("p1d/status", "online") in
                                   [(m[2], m[3]) for m in sub.messages()], 10),
                        p.log.text(last=None))
        n = len(sub.messages())
        t0 = now()
        p.kill()
        p.wait(5)
        ok = wait_until(lambda: any(m[3] == "offline" for m in sub.messages()[n:]),
                        1.5 * KEEPALIVE_S + 1)
        self.assertTrue(ok, "no offline status after SIGKILL")
        figure(f"offline {now() - t0:.2f} s after SIGKILL (limit {1.5 * KEEPALIVE_S} s)")
        self.assertEqual(self.retained(["p1d/status"]).get("p1d/status"), "offline")

    def test_outage_delivers_every_telegram(self):
        """M2 (accelerated): broker stopped for a minute at 4 telegrams/s; afterwards every
        telegram of the outage arrives on the state topic, with its own timestamp, in order."""
        p, sub1, sub2, read_before, read_during, t_stop, t_start = self._outage(
            self.write_config(), 0.25, 60, 200)
        reconnected = wait_until(lambda: len(re.findall(r"mqtt: connected to",
                                                        p.log.text(last=None))) >= 2, 35)
        self.assertTrue(reconnected, self.mqtt_log(p))
        self.assertRegex(self.mqtt_log(p).splitlines()[-1],
                         r"connected to .*delivering \d+ readings kept while disconnected")
        reconnect_s = now() - t_start
        figure(f"reconnected {reconnect_s:.1f} s after the broker listened again")
        # a refused connection is retried at least every MQTT_BACKOFF_REFUSED_MS (1.5 s)
        self.assertLess(reconnect_s, 3.0, self.mqtt_log(p))
        # wait until the newest telegram read has arrived
        def caught_up():
            stamps = self._stamps(sub2)
            return stamps and len(stamps) > read_during
        self.assertTrue(wait_until(caught_up, 30), "backlog not delivered")
        p.sim.kill()
        stamps, unique = self._assert_every_stamp(sub1, sub2, "backlog out of order")
        self.assertGreaterEqual(len(unique), read_before + read_during)
        dups = len(stamps) - len(unique)
        self.assertLessEqual(dups, 20)
        self.assertEqual(len(re.findall(r"lost the connection", p.log.text(last=None))), 1,
                         p.log.text(last=None))
        figure(f"{len(unique)} telegrams delivered, {dups} duplicates, outage "
               f"{t_start - t_stop:.1f} s")

    def test_outage_backfills_from_store(self):
        """M2 with a store: the memory queue holds 10 readings only; the others of a 12 s
        outage at 10 telegrams/s are read back from the history after the reconnect and
        published with their own timestamps, oldest first, before the queued ones."""
        db = self.path("p1d.db")
        conf = self.write_config(mqtt="queue = 10\n",
                                 store=f"database = {db}\ncommit_interval = 1s\n")
        p, sub1, sub2, read_before, read_during, _, _ = self._outage(conf, 0.1, 12, 60)
        self.expect_log(p, r"mqtt: meter main: sent \d+ readings of the outage from the history",
                        30)
        self.assertTrue(wait_until(lambda: len(set(self._stamps(sub1) + self._stamps(sub2)))
                                   >= read_before + read_during, 30),
                        f"backlog not delivered:\n{self.mqtt_log(p)}")
        p.sim.kill()
        stamps, unique = self._assert_every_stamp(sub1, sub2, "history and queue out of order")
        history = [json.loads(m[3]) for m in sub2.messages("p1d/main/state")]
        history = [m for m in history if m.get("from_history")]
        self.assertGreaterEqual(len(history), read_during - 10 - 20, self.mqtt_log(p))
        for m in history:  # the registers, exactly as the meter sent them
            self.assertRegex(str(m["energy_delivered_tariff1"]), r"^\d+\.\d+$")
            self.assertIn("gas_delivered", m)
            self.assertEqual(m["units"]["energy_delivered_tariff1"], "kWh")
        self.assertNotRegex(self.mqtt_log(p), r"are lost|dropping the oldest")
        figure(f"{len(history)} readings of a {read_during}-telegram outage sent from the history,"
               f" {len(stamps) - len(unique)} duplicates")

    def test_no_puback_means_not_delivered(self):
        """M7: a broker that takes QoS 1 state messages without acknowledging them, then drops
        the connection. Every unacknowledged message is sent again on the next connection
        (only a PUBACK counts as delivered), and nothing newer is lost."""
        fake = FakeBroker()
        self.addCleanup(fake.close)
        self.port = fake.port
        p = self.start_p1d(self.write_config(), interval=0.25)
        self.assertTrue(wait_until(lambda: len(fake.states(1)) >= 8, 15), p.log.text(last=None))
        fake.ack = True
        fake.drop()
        unacked = set(fake.states(1))
        self.assertLessEqual(len(unacked), 20, "more in flight than MQTT_INFLIGHT_MAX")
        self.expect_log(p, r"mqtt: lost the connection", 5)
        self.assertTrue(wait_until(lambda: fake.connections >= 2, 10), self.mqtt_log(p))
        self.assertTrue(wait_until(lambda: unacked <= set(fake.states(2)), 10),
                        f"not sent again: {sorted(unacked - set(fake.states(2)))}")
        read = self.telegrams_read(p)
        self.assertTrue(wait_until(lambda: len(set(fake.states())) >= read, 10),
                        "newer telegrams not delivered after the acknowledgements resumed")
        figure(f"{len(unacked)} unacknowledged state messages sent again after the reconnect")

    def test_stalled_broker(self):
        """M3/M4: a broker that stops answering (SIGSTOP) is noticed within 1.5 x keepalive,
        reading goes on, and after SIGCONT every telegram arrives."""
        self.start_broker()
        p = self.start_p1d(self.write_config(), interval=0.25)
        sub = self.subscriber(["p1d/main/state"])
        self.assertTrue(wait_until(lambda: len(sub.messages()) >= 4, 15), p.log.text(last=None))
        self.broker.send_signal(signal.SIGSTOP)
        t0 = now()
        read_before = self.telegrams_read(p)
        self.expect_log(p, r"mqtt: lost the connection .*no acknowledgement", 1.5 * KEEPALIVE_S + 1)
        figure(f"stall noticed after {now() - t0:.1f} s (limit {1.5 * KEEPALIVE_S} s)")
        time.sleep(max(0, 12 - (now() - t0)))
        read_during = self.telegrams_read(p) - read_before
        self.assertGreater(read_during, 30, "reading slowed while the broker was stalled")
        self.broker.send_signal(signal.SIGCONT)
        self.assertTrue(wait_until(lambda: len(set(self._stamps(sub))) >=
                                   read_before + read_during, 40),
                        f"backlog not delivered:\n{p.log.text(last=None)[-2000:]}")
        p.sim.kill()
        unique = sorted(set(self._stamps(sub)))
        gaps = [(a, b) for a, b in zip(unique, unique[1:]) if b - a != 1]
        self.assertEqual(gaps, [], "telegrams missing on the state topic")

    def _outage(self, conf, interval, seconds, min_read):
        """M2's outage: the broker (keeping sessions), p1d reading a telegram per interval and
        a SESSION subscriber seeing its state messages; then the broker stopped for `seconds`,
        during which p1d must read more than min_read telegrams; then the broker back and the
        same session subscribed again (ready: it sees a marker). Returns (p, sub1, sub2,
        read_before, read_during, t_stop, t_start): read_* count the telegrams read before and
        during the outage; t_stop just after the broker stopped, t_start just after it listened
        again."""
        self.start_broker(self._keep_sessions())
        p = self.start_p1d(conf, interval=interval)
        sub1 = self.subscriber(["p1d/main/state"], SESSION)
        self.assertTrue(wait_until(lambda: len(sub1.messages()) >= 4, 15), p.log.text(last=None))
        self.stop_broker()
        t_stop = now()
        read_before = self.telegrams_read(p)
        time.sleep(seconds)
        read_during = self.telegrams_read(p) - read_before
        self.assertGreater(read_during, min_read, "reading slowed while the broker was away")
        sub1.stop()
        self.start_broker(self._keep_sessions())
        t_start = now()
        sub2 = self.subscriber(["p1d/main/state", "p1d/marker"], SESSION)
        self.assertTrue(wait_until(lambda: self._marker(sub2), 5), "subscriber not ready")
        return p, sub1, sub2, read_before, read_during, t_stop, t_start

    def _assert_every_stamp(self, sub1, sub2, order_what):
        """No telegram missing on the state topic across sub1 and sub2 (before and after an
        outage), and sub2's in order. Returns (every timestamp, the distinct ones sorted)."""
        stamps = self._stamps(sub1) + self._stamps(sub2)
        unique = sorted(set(stamps))
        gaps = [(a, b) for a, b in zip(unique, unique[1:]) if b - a != 1]
        self.assertEqual(gaps, [], "telegrams missing on the state topic")
        s2 = self._stamps(sub2)
        self.assertEqual(s2, sorted(s2), order_what)
        return stamps, unique

    def _keep_sessions(self):
        """Broker settings under which a message the broker took survives its restart: the
        subscriber's session (SESSION) and what it has not acknowledged are saved at the
        stop. Without them, messages the broker acknowledged to p1d but had not yet handed to
        a lagging subscriber are lost with the broker (seen on a loaded machine: the 20 the
        broker had in flight to the subscriber), which says nothing about p1d."""
        return f"persistence true\npersistence_location {self.path('')}\n"

    def _marker(self, sub):
        subprocess.run([PUB, "-h", "127.0.0.1", "-p", str(self.port), "-t", "p1d/marker",
                        "-m", "x"], timeout=5)
        return wait_until(lambda: sub.messages("p1d/marker"), 0.5)

    @staticmethod
    def _stamps(sub):
        out = []
        for _, _, _, payload in sub.messages("p1d/main/state"):
            ts = json.loads(payload)["timestamp"]
            t = time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")
            out.append(int(time.mktime(t)))
        return out

    def test_wrong_password(self):
        """M6: a wrong password is refused with one clear log line; p1d keeps reading; the
        right one connects."""
        if not PASSWD:
            self.skipTest("mosquitto_passwd missing")
        pw = self.path("passwd")
        subprocess.run([PASSWD, "-b", "-c", pw, "meter", "s3cret"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(pw, 0o600)
        self.start_broker(f"allow_anonymous false\npassword_file {pw}\n")
        p = self.start_p1d(self.write_config("username = meter\npassword = wrong\n"))
        self.expect_log(p, r"mqtt: cannot connect .*not authori[sz]ed.*username and password", 10)
        time.sleep(8)  # several attempts with backoff
        lines = [l for l in p.log.text(last=None).splitlines() if "mqtt:" in l]
        self.assertEqual(len(lines), 1, "\n".join(lines))
        self.assertNotIn("wrong", p.log.text(last=None))
        self.assertGreater(self.telegrams_read(p), 20, "reading stopped")
        self.assertIsNone(p.poll())
        p.kill()
        p.sim.kill()
        p2 = self.start_p1d(self.write_config("username = meter\npassword = s3cret\n"))
        self.expect_log(p2, r"mqtt: connected to", 10)

    def test_tls(self):
        """TLS to a broker whose certificate a test CA signed; another CA is refused."""
        if not OPENSSL:
            self.skipTest("openssl missing")
        def run(*args):
            subprocess.run([OPENSSL] + list(args), check=True, cwd=self.tmp,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        for ca in ("ca", "other"):
            run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                f"/CN=p1d test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
        run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", "server.key", "-out", "server.csr")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-copy_extensions", "copy", "-out", "server.crt")
        self.start_broker(f"cafile {self.path('ca.crt')}\ncertfile {self.path('server.crt')}\n"
                          f"keyfile {self.path('server.key')}\n")
        p = self.start_p1d(self.write_config(f"tls = true\nca_file = {self.path('other.crt')}\n"))
        self.expect_log(p, r"mqtt: cannot connect .*(TLS|certificate|handshake)", 10)
        p.kill()
        p.sim.kill()
        p2 = self.start_p1d(self.write_config(f"tls = true\nca_file = {self.path('ca.crt')}\n"))
        self.expect_log(p2, r"mqtt: connected to", 10)
        got = wait_until(lambda: self.retained(["p1d/main/power_delivered"],
                                               ["--cafile", self.path("ca.crt")]), 10)
        self.assertTrue(got, "nothing published over TLS")


def main():
    if not P1D or not os.access(P1D, os.X_OK):
        print("P1D is not set to the p1d binary", file=sys.stderr)
        return 1
    if not (MOSQUITTO and SUB and PUB):
        print("mosquitto or mosquitto-clients missing: skipped", file=sys.stderr)
        return 77
    try:
        prog = unittest.main(exit=False, verbosity=2)
    finally:
        for p in ALL_PROCS:
            if p.poll() is None:
                p.kill()
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
