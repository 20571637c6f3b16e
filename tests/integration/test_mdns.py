#!/usr/bin/env python3
"""The mDNS announcement of the HomeWizard API (_hwenergy._tcp) by the real p1d, seen through a
real avahi-daemon with avahi-browse.

Everything runs in a private network and mount namespace that the test makes for itself
(unshare): a veth pair with a TEST-NET-2 address as the only multicast interface, a D-Bus
system bus of its own (DBUS_SYSTEM_BUS_ADDRESS), avahi-daemon with a generated configuration
and its runtime directory on a tmpfs. No packet leaves the namespace; when the test ends the
namespace, the interfaces and every process in it are gone.

One p1d (homewizard on, listen 0.0.0.0:PORT) lives through: no D-Bus at all (one clear log
line, HTTP works), the bus appearing but no avahi-daemon (one line, HTTP works), avahi-daemon
starting (the service appears with the port and the TXT records of a HomeWizard P1 meter, the
serial the one GET /api gives), avahi-daemon stopping (one line, p1d keeps serving) and coming
back (the service appears again), a second p1d announcing the same name (Avahi's alternative
name, both visible), p1d on loopback only and with announce = false (nothing announced, a
notice for the first), sockets passed by systemd-socket-activate on port 80 (announced on 80,
no port notice; only when that tool is installed), and SIGTERM (the service disappears, exit
0).

Exit 77 (skip) when not root or when unshare, ip, dbus-daemon, avahi-daemon or avahi-browse
is missing (scripts/deps.sh installs them)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p1dtest as t  # noqa: E402
from p1dtest import FAILURES, check  # noqa: E402

IN_NS = "P1D_MDNS_TEST_NAMESPACE"
VETH, PEER, ADDR = "p1dmdns0", "p1dmdns1", "198.51.100.1"
SERVICE = "_hwenergy._tcp"


def phase(what):
    print(what, flush=True)


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(77)


def tool(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)


def tools_or_skip():
    if not t.P1D:
        skip("P1D is not set: build p1d first")
    if os.geteuid() != 0:
        skip("needs root: the test makes a network namespace, a veth pair, a D-Bus system "
             "bus and an avahi-daemon of its own")
    found = {n: tool(n) for n in ("unshare", "ip", "dbus-daemon", "avahi-daemon",
                                  "avahi-browse")}
    missing = [n for n, p in found.items() if not p]
    if missing:
        skip(f"missing {', '.join(missing)} (scripts/deps.sh installs them: util-linux, "
             "iproute2, dbus, avahi-daemon, avahi-utils)")
    found["systemd-socket-activate"] = tool("systemd-socket-activate")  # optional
    return found


# ---- the namespace ------------------------------------------------------------------------

def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=30)


def make_network():
    """lo, and a veth pair: avahi needs a multicast interface that is not loopback."""
    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "add", VETH, "type", "veth", "peer", "name", PEER)
    run("ip", "addr", "add", f"{ADDR}/24", "dev", VETH)
    run("ip", "link", "set", PEER, "up")
    run("ip", "link", "set", VETH, "up")


def remove_network():
    subprocess.run(["ip", "link", "del", VETH], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)


def private_run():
    """avahi-daemon's pid file and socket are at fixed paths under /run: a tmpfs of our own
    there keeps a system avahi-daemon (if any) out of the way and leaves nothing behind."""
    run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
    os.makedirs("/run/avahi-daemon", mode=0o755)


BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = f"""[server]
host-name=p1dtest
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces={VETH}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-addresses=yes
"""


class Bus:
    def __init__(self, procs, directory, exe):
        self.procs, self.exe = procs, exe
        self.sock = os.path.join(directory, "system_bus_socket")
        self.conf = os.path.join(directory, "bus.conf")
        with open(self.conf, "w") as f:
            f.write(BUS_CONF.format(sock=self.sock))
        self.address = f"unix:path={self.sock}"
        self.p = None

    def start(self):
        self.p = self.procs.start([self.exe, "--config-file", self.conf, "--nofork",
                                   "--nopidfile"])
        if not t.wait_until(lambda: os.path.exists(self.sock), 10):
            raise AssertionError("dbus-daemon did not make its socket within 10 s")


class Avahi:
    def __init__(self, procs, directory, exe, env):
        self.procs, self.exe, self.env = procs, exe, env
        self.conf = os.path.join(directory, "avahi-daemon.conf")
        with open(self.conf, "w") as f:
            f.write(AVAHI_CONF)
        self.p = None

    def start(self):
        self.p = self.procs.start([self.exe, "--no-drop-root", "--no-chroot", "--no-rlimits",
                                   "-f", self.conf], env=self.env, stderr=subprocess.PIPE)
        self.log = t.Lines(self.p.stderr)
        if not self.log.wait(r"Server startup complete", 15):
            raise AssertionError("avahi-daemon did not start:\n" + self.log.text())

    def stop(self):
        check(t.stop(self.p) == 0, "avahi-daemon did not stop cleanly")


# ---- avahi-browse -------------------------------------------------------------------------

def unescape(s):
    """avahi-browse -p writes some characters of names as \\DDD (decimal)."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), s)


def browse(env):
    """Resolved _hwenergy._tcp services: {name: (port, {txt key: value}, address)}."""
    r = subprocess.run(["avahi-browse", "-rpt", SERVICE], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    found = {}
    for line in r.stdout.decode(errors="replace").splitlines():
        f = line.split(";", 9)
        if f[0] != "=" or len(f) < 10:
            continue
        txt = dict(s.split("=", 1) for s in re.findall(r'"((?:[^"\\]|\\.)*)"', f[9])
                   if "=" in s)
        found[unescape(f[3])] = (int(f[8]), txt, f[7])
    return found


def wait_service(env, name, timeout=20, present=True):
    """The service (port, txt, address) once it is there, or None (present=False: True once it
    is gone)."""
    def look():
        s = browse(env).get(name)
        return s if present else s is None
    return t.wait_until(look, timeout, 0.3)


# ---- p1d ----------------------------------------------------------------------------------

def p1d_conf(directory, tag, meter, listen, announce=None, sim=None):
    path = os.path.join(directory, f"p1d-{tag}.conf")
    text = (f"[meter {meter}]\nfile = {sim}\n[store]\nenabled = false\n"
            f"[http]\nlisten = {listen}\nhomewizard = true\ndashboard = false\n")
    if announce is not None:
        text += f"announce = {announce}\n"
    with open(path, "w") as f:
        f.write(text)
    return path


def api_serial(port):
    """The serial GET /api gives, or None."""
    try:
        status, body = t.http_get(port, "/api")
        return json.loads(body)["serial"] if status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def expect_log(p, pattern, what, timeout=15, since=0):
    return check(p.log.wait(pattern, timeout, since), f"{what}: no log line /{pattern}/\n"
                 + p.log.text())


def expect_once(p, pattern, what):
    n = len(p.log.find_all(pattern))
    return check(n == 1, f"{what}: /{pattern}/ logged {n} times, not once\n" + p.log.text())


def service_name(serial):
    return "p1meter-" + serial[-6:].upper()


def check_service(svc, port, serial, what):
    if not check(svc, f"{what}: {SERVICE} not found by avahi-browse"):
        return
    got_port, txt, addr = svc
    check(got_port == port, f"{what}: port {got_port}, expected {port}")
    check(addr == ADDR, f"{what}: address {addr}, expected {ADDR}")
    want = {"api_enabled": "1", "path": "/api/v1", "serial": serial,
            "product_name": "P1 meter (p1d)", "product_type": "HWE-P1"}
    check(txt == want, f"{what}: TXT {txt}, expected {want}")


def socket_activation(procs, directory, tools, env, sim):
    conf = p1d_conf(directory, "e", "socket", "127.0.0.1:1", sim=sim)  # listen is not used
    p = procs.start([tools["systemd-socket-activate"], "-l", "80", "--fdname=http", "-E",
                     f"DBUS_SYSTEM_BUS_ADDRESS={env['DBUS_SYSTEM_BUS_ADDRESS']}", t.P1D, "-c",
                     conf], env=env, stderr=subprocess.PIPE)
    p.log = t.Lines(p.stderr)
    serial = t.wait_until(lambda: api_serial(80), 10)  # the first request starts p1d
    if check(serial, "socket activation: no answer on port 80\n" + p.log.text()):
        check_service(wait_service(env, service_name(serial)), 80, serial, "socket activation")
    expect_log(p, r"http: socket activation", "socket activation")
    expect_log(p, r'mdns: announcing "p1meter-\w+" \(_hwenergy._tcp\) on port 80$',
               "socket activation")
    check(not p.log.find_all(r"mdns: announcing port"), "socket activation: port notice on 80")
    check(t.stop(p) == 0, "socket-activated p1d did not exit 0 on SIGTERM")


def scenario(tools, directory):
    procs = t.Procs()
    try:
        bus = Bus(procs, directory, tools["dbus-daemon"])
        env = t.clean_env(DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        avahi = Avahi(procs, directory, tools["avahi-daemon"], env)
        sim = t.simulate(os.path.join(directory, "sim.txt"), 600, 1767225600)
        port = t.free_port()

        phase("1. no D-Bus at all: p1d runs and says so once")
        p = t.start_p1d(procs, p1d_conf(directory, "a", "main", f"0.0.0.0:{port}", sim=sim),
                        env=env)
        expect_log(p, r"p1d .* started", "start without D-Bus")
        expect_log(p, r"mdns: cannot reach avahi-daemon through the D-Bus system bus",
                   "no D-Bus")
        expect_log(p, r"mdns: announcing port %d; Home Assistant" % port, "port 80 notice")
        serial = t.wait_until(lambda: api_serial(port), 10)
        check(serial and re.fullmatch(r"[0-9a-f]{12}", serial), f"GET /api serial {serial!r}")
        name = service_name(serial or "000000000000")

        phase("2. the bus appears, avahi-daemon does not: one more line, still serving")
        time.sleep(1.5)  # a few retries against the missing bus
        bus.start()
        expect_log(p, r"mdns: avahi-daemon is not running; announcing", "no avahi-daemon",
                   timeout=20)
        expect_once(p, r"cannot reach avahi-daemon through the D-Bus", "no D-Bus")
        check(api_serial(port) == serial, "HTTP stopped answering without avahi-daemon")

        phase("3. avahi-daemon starts: the service appears")
        avahi.start()
        svc = wait_service(env, name)
        check_service(svc, port, serial, "after avahi-daemon started")
        expect_log(p, r'mdns: announcing "%s" \(_hwenergy._tcp\) on port %d' % (name, port),
                   "established")
        expect_once(p, r"avahi-daemon is not running", "no avahi-daemon")

        phase("4. avahi-daemon stops and comes back")
        mark = p.log.mark()
        avahi.stop()
        expect_log(p, r"mdns: avahi-daemon \(or the D-Bus system bus\) went away",
                   "avahi-daemon stopped", since=mark)
        time.sleep(1)
        check(p.poll() is None, "p1d exited when avahi-daemon stopped")
        check(api_serial(port) == serial, "HTTP stopped answering when avahi-daemon stopped")
        avahi.start()
        check_service(wait_service(env, name), port, serial, "after avahi-daemon restarted")
        check(len(p.log.find_all(r"mdns: avahi-daemon (\(or|is not running)",
                                 since=mark)) == 1,
              "the outage was not logged exactly once\n" + p.log.text(since=mark))

        phase("5. a second p1d with the same meter name: Avahi's alternative name")
        port2 = t.free_port()
        p2 = t.start_p1d(procs, p1d_conf(directory, "b", "main", f"{ADDR}:{port2}", sim=sim),
                         env=env)
        expect_log(p2, r'the name "%s" is taken' % name, "collision")
        svc2 = wait_service(env, name + " #2")
        check_service(svc2, port2, serial, "second p1d")
        check_service(browse(env).get(name), port, serial, "first p1d after the collision")

        phase("6. loopback only, and announce = false: nothing announced")
        port3, port4 = t.free_port(), t.free_port()
        p3 = t.start_p1d(procs, p1d_conf(directory, "c", "loop", f"127.0.0.1:{port3}",
                                         sim=sim), env=env)
        p4 = t.start_p1d(procs, p1d_conf(directory, "d", "quiet", f"0.0.0.0:{port4}",
                                         announce="false", sim=sim), env=env)
        expect_log(p3, r"mdns: not announcing _hwenergy._tcp: HTTP listens on loopback only",
                   "loopback only")
        expect_log(p4, r"p1d .* started", "announce = false")
        s3, s4 = (t.wait_until(lambda pt=pt: api_serial(pt), 10) for pt in (port3, port4))
        time.sleep(3)
        names = browse(env)
        for s, what in ((s3, "loopback only"), (s4, "announce = false")):
            check(s and service_name(s) not in names, f"{what}: announced anyway: {names}")
        check(not p4.log.find_all(r"mdns:"), "announce = false still logs:\n" + p4.log.text())
        for q in (p2, p3, p4):
            check(t.stop(q) == 0, "a second p1d did not exit 0 on SIGTERM")

        if tools["systemd-socket-activate"]:
            phase("7. sockets from systemd (p1d.socket), on port 80: announced, no notice")
            socket_activation(procs, directory, tools, env, sim)
        else:
            phase("7. (not run: systemd-socket-activate is not installed)")

        phase("8. SIGTERM: the service goes away with p1d")
        check(t.stop(p, signal.SIGTERM) == 0, "p1d did not exit 0 on SIGTERM")
        check(wait_service(env, name, timeout=10, present=False),
              "the service is still announced after p1d stopped")
        check(not p.log.find_all(r"^\S+ \S+ (warning|error|critical):"),
              "p1d logged warnings or errors:\n" + p.log.text())
    finally:
        procs.kill_all()


def main():
    tools = tools_or_skip()
    if os.environ.get(IN_NS) != "1":
        env = dict(os.environ, **{IN_NS: "1"})
        r = subprocess.run([tools["unshare"], "--net", "--mount", "--propagation", "private",
                            sys.executable, os.path.abspath(__file__)], env=env, timeout=570)
        if r.returncode not in (0, 77):
            print(f"FAIL: the test in its namespace exited {r.returncode}", flush=True)
        sys.exit(r.returncode)
    try:
        private_run()
        make_network()
    except subprocess.CalledProcessError as e:
        print(f"FAIL: cannot set up the namespace: {' '.join(e.cmd)}: {e.stderr.decode()}")
        sys.exit(1)
    try:
        with tempfile.TemporaryDirectory(prefix="p1d-mdns-") as d:
            scenario(tools, d)
    finally:
        remove_network()
    if FAILURES:
        print(f"0 passed, {len(FAILURES)} failed")
        sys.exit(1)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
