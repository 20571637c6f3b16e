#!/usr/bin/env python3
"""test_store.py - the history store through the real p1d binary (test matrix D1, T3-T5).

1. A simulated month (October 2026, 10-s telegrams, the DST change of 25 October) with a meter
   swap on the 20th (a second simulator run with another seed: another equipment id and other
   register values), fed with `p1d --file F --pace fast --db DB`. Every hour, day and month
   bucket must equal the register differences computed here from the telegrams themselves,
   exactly (integers in thousandths); 25 October has 25 hours; `p1d history` prints the same.
2. Spring forward (29 March 2026) has 23 hourly buckets. (Simulated times stay in the past:
   a meter clock more than a day ahead of the system clock is bogus and replaced.)
3. `p1d import` of the same telegrams twice changes nothing.
4. kill -9 at random moments while ingesting, 50 cycles: `PRAGMA integrity_check` is ok and
   the readings present are, per cycle, a gap-free prefix of what the simulator sent, and no
   reading committed in an earlier cycle disappears.

Needs P1D (the p1d binary; ctest sets it). Python stdlib only.
"""
import csv
import http.client
import io
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

P1D = os.environ.get("P1D", "p1d")
ZONE = ZoneInfo("Europe/Amsterdam")
REGS = {
    "1-0:1.8.1": "energy_delivered_tariff1",
    "1-0:1.8.2": "energy_delivered_tariff2",
    "1-0:2.8.1": "energy_returned_tariff1",
    "1-0:2.8.2": "energy_returned_tariff2",
}
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, flush=True)


def milli(text):
    """'004669.437*kWh' -> 4669437 (thousandths, exact)."""
    num = text.split("*")[0]
    whole, _, frac = num.partition(".")
    frac = (frac + "000")[:3]
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 1000 + int(frac))


def meter_utc(stamp):
    """YYMMDDhhmmssX -> UTC seconds, with the S/W flag."""
    civil = datetime(2000 + int(stamp[0:2]), int(stamp[2:4]), int(stamp[4:6]), int(stamp[6:8]),
                     int(stamp[8:10]), int(stamp[10:12]), tzinfo=timezone.utc).timestamp()
    return int(civil) - (7200 if stamp[12] == "S" else 3600)


def parse(path):
    """Telegrams as (utc, equipment id, {column: thousandths})."""
    out, cur = [], None
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("/"):
                cur = {"regs": {}}
            elif cur is None:
                continue
            elif line.startswith("0-0:1.0.0("):
                cur["utc"] = meter_utc(line[10:23])
            elif line.startswith("0-0:96.1.1("):
                cur["id"] = line[11:].split(")")[0]
            elif line[:9] in REGS:
                cur["regs"][REGS[line[:9]]] = milli(line[10:].split(")")[0])
            elif line.startswith("0-1:24.2.1("):
                cur["regs"]["gas_delivered"] = milli(line.split(")(")[1].split(")")[0])
            elif line.startswith("!"):
                out.append((cur["utc"], cur["id"], cur["regs"]))
                cur = None
    return out


def local_day(utc):
    return datetime.fromtimestamp(utc, ZONE).date()


def bucket_keys(utc):
    d = datetime.fromtimestamp(utc, ZONE)
    return {"hour": utc - utc % 3600, "day": (d.year, d.month, d.day), "month": (d.year, d.month)}


def expected(telegrams):
    """Per resolution, bucket -> {column: sum of differences}; each difference goes to the
    bucket of the later reading; a new equipment id starts a new segment (no difference)."""
    exp = {"hour": {}, "day": {}, "month": {}}
    prev = None
    for utc, ident, regs in telegrams:
        if prev and prev[1] == ident:
            for res, key in bucket_keys(utc).items():
                b = exp[res].setdefault(key, {})
                for col, v in regs.items():
                    if col in prev[2]:
                        b[col] = b.get(col, 0) + v - prev[2][col]
        prev = (utc, ident, regs)
    return exp


def simulate(path, start, count, seed, step=10):
    with open(path, "wb") as f:
        subprocess.run([P1D, "simulate", "--dialect", "dsmr5", "--start", start, "--step",
                        str(step), "--count", str(count), "--interval", "0", "--seed", str(seed)],
                       stdout=f, stderr=subprocess.DEVNULL, check=True)


# HTTP (on by default) stays off: tests run in parallel and the store is all that is tested
QUIET = "[http]\nlisten =\n"
BASE_CONF = None


def run_daemon(args, timeout=600):
    r = subprocess.run([P1D, "-c", BASE_CONF] + args, capture_output=True, text=True, timeout=timeout)
    check(r.returncode == 0, f"p1d {' '.join(args)} exited {r.returncode}: {r.stderr[-500:]}")
    return r


def db_buckets(db, res_id):
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = con.execute("SELECT * FROM agg WHERE res = ? ORDER BY start_utc", (res_id,)).fetchall()
    con.close()
    return rows


def key_of(res, start_utc):
    if res == "hour":
        return start_utc
    d = datetime.fromtimestamp(start_utc, ZONE)
    check(d.hour == 0 and d.minute == 0, f"{res} bucket starts at local {d}")
    return (d.year, d.month, d.day) if res == "day" else (d.year, d.month)


def compare(db, exp, label):
    for res_id, res in ((1, "hour"), (2, "day"), (3, "month")):
        got = {}
        for row in db_buckets(db, res_id):
            got[key_of(res, row["start_utc"])] = {
                c: row[c] for c in list(REGS.values()) + ["gas_delivered"] if row[c] is not None}
        want = {k: v for k, v in exp[res].items()}
        # buckets holding only the first reading of a segment have no differences
        for k in list(got):
            if k not in want and all(v == 0 for v in got[k].values()):
                del got[k]
        for k in set(got) | set(want):
            g, w = got.get(k, {}), want.get(k, {})
            if any(g.get(c, 0) != w.get(c, 0) for c in set(g) | set(w)):
                check(False, f"{label}: {res} {k}: db {g} != telegrams {w}")
                break
        check(len(got) == len(want), f"{label}: {res}: {len(got)} buckets, expected {len(want)}")


def test_month(tmp):
    db = os.path.join(tmp, "month.db")
    a, b = os.path.join(tmp, "a.txt"), os.path.join(tmp, "b.txt")
    # 1-20 October, seed 1; then the swap: 20 October - 1 November, seed 2 (another meter)
    simulate(a, "2026-10-01T00:00:00Z", 19 * 8640, 1)
    simulate(b, "2026-10-20T00:00:00Z", 12 * 8640 + 360, 2)
    ta, tb = parse(a), parse(b)
    check(ta[0][1] != tb[0][1], "the second simulator run has another equipment id")
    t0 = time.monotonic()
    run_daemon(["--file", a, "--pace", "fast", "--db", db])
    r = run_daemon(["--file", b, "--pace", "fast", "--db", db])
    print(f"figure: month ingest {len(ta) + len(tb)} telegrams in {time.monotonic() - t0:.1f} s")
    check("equipment id changed" in r.stderr, "the meter swap is logged")
    check(r.stderr.count("starting history segment") == 1, "the swap is logged once")
    exp = expected(ta + tb)
    compare(db, exp, "month")

    # the register difference of each segment equals the sum of its hours
    con = sqlite3.connect(db)
    total = dict(con.execute("SELECT 'e1', sum(energy_delivered_tariff1) FROM agg"
                             " WHERE res = 1").fetchall())["e1"]
    want = sum(t[-1][2]["energy_delivered_tariff1"] - t[0][2]["energy_delivered_tariff1"]
               for t in (ta, tb))
    check(total == want, f"sum of hours {total} == register differences {want}")
    segs = con.execute("SELECT seq, reason FROM segments ORDER BY seq").fetchall()
    check([s[0] for s in segs] == [0, 1] and "equipment id" in segs[1][1], f"segments {segs}")
    hours_25 = con.execute("SELECT count(*) FROM agg WHERE res = 1 AND start_utc >= ? AND"
                           " start_utc < ?", (1792879200, 1792879200 + 25 * 3600)).fetchone()[0]
    check(hours_25 == 25, f"25 October has 25 hourly buckets, got {hours_25}")
    day = con.execute("SELECT start_utc FROM agg WHERE res = 2 AND start_utc = 1792879200"
                      ).fetchone()
    check(day is not None, "25 October starts at 22:00Z the day before")
    check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity")
    # raw readings: the last raw_days (7) of the second meter, register for register
    raw = readings(con)
    src = {t[0]: t[2] for t in tb}
    cols = {"energy_delivered_tariff1": 0, "energy_delivered_tariff2": 1,
            "energy_returned_tariff1": 5, "energy_returned_tariff2": 6, "gas_delivered": 10}
    check(raw and raw[-1][0] == tb[-1][0], "the newest reading is stored raw")
    check(7 * 86400 <= raw[-1][0] - raw[0][0] <= 8 * 86400, "raw readings cover 7 days")
    bad = [r for r in raw if any(r[2][i] != src[r[0]][c] for c, i in cols.items())]
    check(not bad, f"raw readings differ from the telegrams: {bad[:2]}")
    con.close()

    # p1d history prints the same numbers
    r = subprocess.run([P1D, "history", "--db", db, "--resolution", "day", "--from",
                        "2026-10-01", "--to", "2026-11-01"], capture_output=True, text=True)
    check(r.returncode == 0, f"history exit {r.returncode} {r.stderr}")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    check(len(rows) == 31, f"history: 31 days, got {len(rows)}")
    for row in rows:
        d = datetime.fromisoformat(row["start"])
        e = datetime.fromisoformat(row["end"])
        w = exp["day"].get((d.year, d.month, d.day), {})
        hours = (e - d).total_seconds() / 3600
        check(hours == (25 if (d.month, d.day) == (10, 25) else 24), f"{row['start']} {hours} h")
        for col in ("energy_delivered_tariff1", "energy_delivered_tariff2", "gas_delivered"):
            check(milli(row[col]) == w.get(col, 0), f"history {row['start']} {col} {row[col]}"
                  f" != {w.get(col, 0)}")
    r = subprocess.run([P1D, "history", "--db", db, "--resolution", "month", "--from",
                        "2026-10-01", "--to", "2026-11-01", "--format", "json"],
                       capture_output=True, text=True)
    rows = json.loads(r.stdout)
    check(len(rows) == 1 and rows[0]["start"] == "2026-10-01T00:00:00+02:00"
          and rows[0]["end"] == "2026-11-01T00:00:00+01:00", f"history json {r.stdout[:200]}")
    return a


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_history_streamed(tmp, db):
    """GET .../history is streamed in steps of 512 buckets: a month of minutes (44,640, across
    the meter swap and the 25-hour day) and of hours, as JSON and CSV, must be byte for byte
    what `p1d history` prints in one piece; a range beyond the limit is refused."""
    port = free_port()
    stdin_r, stdin_w = os.pipe()
    p = subprocess.Popen([P1D, "-c", BASE_CONF, "--file", "-", "--db", db, "--http",
                          f"127.0.0.1:{port}"], stdin=stdin_r, stderr=subprocess.PIPE)
    os.close(stdin_r)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not listening(port):
            time.sleep(0.05)
        check(listening(port), "p1d serves HTTP")
        for res, fmt in (("minute", "json"), ("minute", "csv"), ("hour", "json"),
                         ("hour", "csv"), ("day", "json")):
            q = f"resolution={res}&from=2026-10-01&to=2026-11-01&format={fmt}"
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/api/v1/meters/main/history?" + q)
            r = c.getresponse()
            body = r.read()
            c.close()
            want = subprocess.run([P1D, "history", "--db", db, "--resolution", res, "--from",
                                   "2026-10-01", "--to", "2026-11-01", "--format", fmt],
                                  capture_output=True, timeout=120).stdout
            check(r.status == 200, f"history {q}: status {r.status} {body[:200]!r}")
            check(len(want) > 1000 and body == want,
                  f"history {q}: {len(body)} bytes streamed, p1d history printed {len(want)}"
                  f" (first difference at byte "
                  f"{next((i for i, (x, y) in enumerate(zip(body, want)) if x != y), None)})")
            if fmt == "json":
                rows = json.loads(body)
                # local October has 31 * 24 + 1 hours; the data start at 00:00Z (02:00)
                n = {"minute": (31 * 24 + 1 - 2) * 60, "hour": 31 * 24 + 1 - 2, "day": 31}[res]
                check(len(rows) == n, f"history {q}: {len(rows)} buckets, want {n}")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/api/v1/meters/main/history?resolution=minute&from=2023-01-01"
                         "&to=2026-01-01")
        r = c.getresponse()
        check(r.status == 400 and b"at most" in r.read(), "three years of minutes are refused")
    finally:
        os.close(stdin_w)
        p.terminate()
        rc = p.wait(20)
        err = p.stderr.read().decode(errors="replace")
    check(rc == 0, f"p1d exit {rc}: {err[-500:]}")


def test_spring(tmp):
    db = os.path.join(tmp, "spring.db")
    f = os.path.join(tmp, "spring.txt")
    simulate(f, "2026-03-28T00:00:00Z", 3 * 8640, 3)
    run_daemon(["--file", f, "--pace", "fast", "--db", db])
    compare(db, expected(parse(f)), "spring")
    con = sqlite3.connect(db)
    start = int(datetime(2026, 3, 29, tzinfo=ZONE).timestamp())
    end = int(datetime(2026, 3, 30, tzinfo=ZONE).timestamp())
    n = con.execute("SELECT count(*) FROM agg WHERE res = 1 AND start_utc >= ? AND start_utc < ?",
                    (start, end)).fetchone()[0]
    check(end - start == 23 * 3600 and n == 23, f"29 March 2026 has 23 hourly buckets, got {n}")
    con.close()


def varints(data):
    i = 0
    while i < len(data):
        v = shift = 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        yield v


def readings(con):
    """Raw readings (utc, segment, registers) decoded from the packed chunks, as docs/store.md
    describes the format; independent of the C decoder."""
    out = []
    for first, seg, data in con.execute("SELECT first_utc, seg, data FROM chunks ORDER BY id"):
        it = varints(data)
        utc, flags, power, prev = first, 0, 0, [0] * 16
        for head in it:
            utc += head >> 2
            if head & 2:
                seg += next(it)
            if head & 1:
                flags = next(it)
            if flags & 1:
                v = next(it)
                power += (v >> 1) ^ -(v & 1)
            changed = next(it)
            for k in range(16):
                if changed & (1 << k):
                    v = next(it)
                    prev[k] += (v >> 1) ^ -(v & 1)
            out.append((utc, seg, tuple(prev[k] if flags >> 1 & (1 << k) else None
                                        for k in range(13)), power))
    return out


def dump(db):
    con = sqlite3.connect(db)
    rows = con.execute("SELECT * FROM agg ORDER BY meter_id, res, start_utc").fetchall()
    n = len(readings(con))
    con.close()
    return rows, n


def test_import_twice(tmp, src):
    db = os.path.join(tmp, "import.db")
    small = os.path.join(tmp, "small.txt")
    with open(src, "rb") as f, open(small, "wb") as g:
        g.write(f.read(5000 * 913))  # the first few thousand telegrams, the last one cut
    r1 = subprocess.run([P1D, "import", "--db", db, small], capture_output=True, text=True)
    check(r1.returncode == 0, f"import: {r1.stderr[-300:]}")
    first = dump(db)
    r2 = subprocess.run([P1D, "import", "--db", db, small], capture_output=True, text=True)
    check(r2.returncode == 0, f"import again: {r2.stderr[-300:]}")
    check(" 0 readings stored" in r2.stderr, f"second import stores nothing: {r2.stderr[-200:]}")
    check(dump(db) == first and first[1] > 4000, "importing twice changes nothing")


def test_kill9(tmp, cycles=50):
    db = os.path.join(tmp, "kill.db")
    conf = os.path.join(tmp, "kill.conf")
    with open(conf, "w") as f:
        f.write(f"[store]\ndatabase = {db}\ncommit_interval = 1s\nraw_days = 3650\n"
                "[meter main]\nfile = -\npace = fast\n" + QUIET)
    rng = random.Random(int(os.environ.get("P1_TEST_SEED", "4")))
    base = 1767225600  # 2026-01-01
    seen = {}  # cycle -> readings present after it
    with_rows = 0
    for i in range(cycles):
        start = base + i * 100000
        sim = subprocess.Popen([P1D, "simulate", "--dialect", "dsmr5", "--start", str(start),
                                "--step", "1", "--count", "100000", "--interval", "0.001"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        d = subprocess.Popen([P1D, "-c", conf], stdin=sim.stdout, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        sim.stdout.close()
        time.sleep(rng.uniform(0.05, 2.5))
        d.send_signal(signal.SIGKILL)
        d.wait()
        sim.kill()
        sim.wait()
        con = sqlite3.connect(db)
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        check(ok == "ok", f"cycle {i}: integrity_check {ok}")
        present = [r[0] for r in readings(con)]
        check(present == sorted(set(present)), f"cycle {i}: readings out of order or doubled")
        for j in range(i + 1):
            s = base + j * 100000
            utcs = [u for u in present if s <= u < s + 100000]
            if j == i:
                seen[j] = len(utcs)
                with_rows += len(utcs) > 0
                check(utcs == list(range(s, s + len(utcs))),
                      f"cycle {i}: readings are not a gap-free prefix of the telegrams sent")
            else:
                check(len(utcs) == seen[j], f"cycle {i}: cycle {j} had {seen[j]} readings,"
                      f" now {len(utcs)}")
        con.close()
    print(f"figure: kill -9 {cycles} cycles, {with_rows} with committed rows, "
          f"{sum(seen.values())} readings kept")
    check(with_rows >= cycles // 4, f"only {with_rows} cycles committed anything")


def main():
    global BASE_CONF
    with tempfile.TemporaryDirectory(prefix="p1d-store-") as tmp:
        BASE_CONF = os.path.join(tmp, "base.conf")
        with open(BASE_CONF, "w") as f:
            f.write(QUIET)
        src = test_month(tmp)
        test_history_streamed(tmp, os.path.join(tmp, "month.db"))
        test_spring(tmp)
        test_import_twice(tmp, src)
        test_kill9(tmp, int(os.environ.get("P1_KILL_CYCLES", "50")))
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
