#!/usr/bin/env python3
"""One version everywhere: CMake's project(VERSION) in CMakeLists.txt (the source of
P1D_VERSION), the newest entry of debian/changelog (the package's version, without epoch and
Debian revision), `p1d --version`, /api/v1/status and the p1d_build_info metric of the real p1d.
Exit 77 (skip) when p1d is not built."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p1dtest import free_port, http_get  # noqa: E402

P1D = os.environ.get("P1D")
SRC = os.environ.get("P1_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
FAILURES = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def cmake_version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        m = re.search(r"^project\(p1d VERSION ([0-9.]+)", f.read(), re.M)
    return m.group(1) if m else None


def changelog_version():
    """The upstream part of the newest entry: 1:0.2.0-3 -> 0.2.0, 0.2.0 -> 0.2.0."""
    with open(os.path.join(SRC, "debian", "changelog")) as f:
        m = re.match(r"p1d \(([^)]+)\) ", f.readline())
    if not m:
        return None
    v = m.group(1).split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


def served_versions(version):
    with tempfile.TemporaryDirectory() as d:
        sim = os.path.join(d, "sim.txt")
        subprocess.run([P1D, "simulate", "--count", "60", "--interval", "0", "--output", sim],
                       check=True, stderr=subprocess.DEVNULL)
        port = free_port()
        conf = os.path.join(d, "p1d.conf")
        with open(conf, "w") as f:
            f.write("[meter main]\nfile = %s\npace = meter\n\n[store]\nenabled = false\n\n"
                    "[http]\nlisten = 127.0.0.1:%d\n" % (sim, port))
        log = open(os.path.join(d, "p1d.log"), "w+")
        proc = subprocess.Popen([P1D, "-c", conf], stdout=subprocess.DEVNULL, stderr=log)
        try:
            status = None
            for _ in range(100):
                try:
                    st, body = http_get(port, "/api/v1/status")
                    if st == 200:
                        status = json.loads(body)
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            if check(status is not None, "/api/v1/status answers"):
                check(status.get("version") == version,
                      "/api/v1/status version %r is %s" % (status.get("version"), version))
            st, body = http_get(port, "/metrics")
            check(st == 200 and ('p1d_build_info{version="%s"} 1' % version) in body.decode(),
                  "/metrics p1d_build_info has version %s" % version)
        finally:
            proc.terminate()
            proc.wait(10)
            if FAILURES:
                log.seek(0)
                sys.stderr.write(log.read()[-2000:])


def main():
    version = cmake_version()
    if not check(version is not None, "CMakeLists.txt has project(p1d VERSION x.y.z)"):
        return 1
    deb = changelog_version()
    check(deb == version, "debian/changelog's version %s is CMake's %s" % (deb, version))
    if not P1D or not os.access(P1D, os.X_OK):
        print("P1D not set or not executable, skipping the binary's checks")
        return 1 if FAILURES else 77
    out = subprocess.run([P1D, "--version"], capture_output=True, text=True).stdout.strip()
    check(out == "p1d " + version, "p1d --version says %r" % out)
    served_versions(version)
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
