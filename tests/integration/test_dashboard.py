#!/usr/bin/env python3
"""test_dashboard.py - the dashboard in a real browser: headless Chromium, driven through the
DevTools protocol, against the real p1d fed by the simulator.

Setup: 70 days of simulated history, a telegram every 5 minutes, are loaded with `p1d import`,
then p1d reads the simulator live (a telegram a second on a pseudo-terminal) into the same
database and serves the dashboard from the source tree's web/ on a free loopback port. The
browser runs in another time zone than the meter, so a day taken from the browser's clock
would show.

Checks:
- the page shows each new telegram's power (the /api/v1/now value, to the watt) within one
  telegram interval of p1d having it; the live chart gains points;
- the Month view (chosen with the keyboard) draws, day by day and register by register,
  what `p1d history --resolution day` prints for this month (days before today) and, one
  step back, for the whole previous month; the Year view has the months;
- the CSV link is what `p1d history` prints, byte for byte, fetched and downloaded;
- health shows the meter's telegram count and the store size; no banner while telegrams
  come, a banner once the simulator is stopped;
- the page fits a 360-px-wide phone (no sideways scrolling);
- no console error, exception or failed resource load in the whole run;
- with a read token: the page's files load without it, the page asks for it, and works
  once it is typed in.
Screenshots (desktop 1280x800, phone 360x740, both also full page, and the banner) go to
<build>/artifacts/ (the directory of $P1D), or $P1_ARTIFACTS.

Needs P1D, Debian's chromium and python3-websocket; exit 77 (skip) without them.
"""
import base64
import csv
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

try:
    import websocket
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-websocket
    try:
        import websocket
    except ImportError:
        websocket = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p1dtest import check, check_log, failures_status, free_port, wait_until  # noqa: E402

P1D = os.environ.get("P1D", "")
SOURCE = os.environ.get("P1_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token-0123456789"
INTERVAL_S = 1.0  # the simulator's telegram interval
BROWSER_TZ = "America/Los_Angeles"  # not the meter's zone (Europe/Amsterdam)
ARTIFACTS = ""


def get(port, path, token=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Browser:
    """One Chromium, one page, spoken to over the DevTools protocol."""

    def __init__(self, tmp):
        self.profile = os.path.join(tmp, "chromium")
        os.makedirs(self.profile)
        self.log = open(os.path.join(tmp, "chromium.log"), "w+")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--remote-debugging-port=0", "--no-sandbox",
             "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--user-data-dir=" + self.profile, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        if not wait_until(lambda: os.path.exists(port_file) and open(port_file).read().count("\n"),
                        30, 0.1):
            raise RuntimeError("chromium did not start its DevTools endpoint")
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events = []
        self.errors = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(domain + ".enable")
        self.send("Emulation.setTimezoneOverride", timezoneId=BROWSER_TZ)

    def _event(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console.%s: %s" % (p["type"], " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", []))))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: %s %s" % (
                d.get("text", ""), d.get("exception", {}).get("description", "")))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append("log: %s %s" % (p["entry"].get("text"), p["entry"].get("url", "")))
        self.events.append(msg)
        del self.events[:-200]

    def send(self, method, **params):
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self._event(msg)

    def pump(self, seconds):
        """Let time pass while collecting events."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ws.settimeout(max(0.01, end - time.monotonic()))
            try:
                self._event(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
        self.ws.settimeout(30)

    def js(self, expr):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("js %r: %s" % (expr[:80], r["exceptionDetails"]))
        return r["result"].get("value")

    def until(self, expr, timeout, step=0.05):
        """Evaluates expr until it is truthy; returns its last value."""
        end = time.monotonic() + timeout
        while True:
            v = self.js(expr)
            if v or time.monotonic() > end:
                return v
            self.pump(step)

    def size(self, width, height, mobile=False):
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)

    def navigate(self, url):
        self.send("Page.navigate", url=url)
        self.until("document.readyState === 'complete'", 20)

    def key(self, key, code, keycode, text=""):
        for t in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=t, key=key, code=code,
                      windowsVirtualKeyCode=keycode, nativeVirtualKeyCode=keycode,
                      **({"text": text} if t == "keyDown" and text else {}))

    def press(self, selector):
        """Focuses an element and presses Enter on it, as a keyboard user would."""
        check(self.js("(() => { const e = document.querySelector(%s); e.focus(); "
                      "return document.activeElement === e; })()" % json.dumps(selector)),
              "%s takes the keyboard focus" % selector)
        self.key("Enter", "Enter", 13, "\r")

    def download(self, selector, folder):
        """Presses Enter on a link and returns the bytes of the file it downloads (or None)."""
        os.makedirs(folder)
        self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=folder)
        self.press(selector)
        files = wait_until(lambda: [f for f in os.listdir(folder)
                                  if not f.endswith(".crdownload")], 10, 0.1)
        if not files:
            return None
        with open(os.path.join(folder, files[0]), "rb") as f:
            return f.read()

    def screenshot(self, path, full=False):
        params = {"format": "png"}
        if full:
            h = self.js("Math.ceil(document.documentElement.scrollHeight)")
            w = self.js("document.documentElement.clientWidth")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print("artifact:", path, flush=True)

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def cli_history(db, res, start, end, fmt="csv"):
    r = subprocess.run([P1D, "history", "--db", db, "--resolution", res, "--from", start,
                        "--to", end, "--format", fmt], capture_output=True, timeout=60)
    check(r.returncode == 0, "p1d history: %s" % r.stderr.decode()[-300:])
    return r.stdout


def next_month(y, m):
    return (y + 1, 1) if m == 12 else (y, m + 1)


def prev_month(y, m):
    return (y - 1, 12) if m == 1 else (y, m - 1)


CHART_DATA = """(() => {
  const c = Chart.getChart('history-chart');
  return c && {labels: c.data.labels, title: document.getElementById('period').textContent,
    sets: c.data.datasets.map((d) => ({col: d.p1dColumn, data: d.data}))};
})()"""


def compare_month(b, db, y, m, before_day, what):
    """The month chart against `p1d history`, for days before before_day (1-based)."""
    start, end = "%04d-%02d-01" % (y, m), "%04d-%02d-01" % next_month(y, m)
    cli = list(csv.DictReader(io.StringIO(cli_history(db, "day", start, end).decode())))
    chart = b.until("document.getElementById('history').dataset.shown === 'day %s' && %s"
                    % (start, CHART_DATA), 10)
    if not check(chart, "%s: the month chart is drawn" % what):
        return
    days = 31 if m in (1, 3, 5, 7, 8, 10, 12) else 30 if m != 2 else 28 + (y % 4 == 0)
    check(len(chart["labels"]) == days, "%s: %d slots, want %d" % (what, len(chart["labels"]),
                                                                    days))
    sets = {s["col"]: s["data"] for s in chart["sets"]}
    compared = 0
    for row in cli:
        day = int(row["start"][8:10])
        if day >= before_day:
            continue
        for col, text in row.items():
            if not col.startswith(("energy_", "gas_")) or text == "":
                continue
            want = float(text)
            sign = -1 if col.startswith("energy_returned") else 1
            if col not in sets:
                # returned energy that is zero all month is not drawn
                check(want == 0 and sign < 0, "%s: no dataset for %s" % (what, col))
                continue
            got = sets[col][day - 1]
            check(got is not None and abs(sign * got - want) < 5e-7,
                  "%s: %s day %d: chart %s, p1d history %s" % (what, col, day, got, text))
            compared += 1
    check(compared >= 3 * min(before_day - 1, 20),
          "%s: only %d values compared" % (what, compared))
    print("-- %s: %d values equal to p1d history" % (what, compared), flush=True)


def start_p1d(tmp, name, conf_text):
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    log = open(os.path.join(tmp, name + ".log"), "w+")
    proc = subprocess.Popen([P1D, "-c", conf], stdout=subprocess.DEVNULL, stderr=log)
    return proc, log


def request(port, method, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_static_http(port):
    """The files as HTTP: types, ETag and 304, HEAD, 405, and paths that are not files."""
    with open(os.path.join(SOURCE, "web", "index.html"), "rb") as f:
        page = f.read()
    st, h, body = request(port, "GET", "/")
    check(st == 200 and body == page, "GET / is web/index.html")
    check(h.get("content-type") == "text/html; charset=utf-8", "type of /: %s" % h)
    check("script-src 'self'" in h.get("content-security-policy", ""), "CSP of /")
    etag = h.get("etag", "")
    check(etag.startswith('"') and h.get("cache-control") == "no-cache", "ETag of / %r" % etag)
    st, h, body = request(port, "GET", "/", {"If-None-Match": etag})
    check(st == 304 and body == b"" and h.get("etag") == etag, "If-None-Match: %d" % st)
    st, h, body = request(port, "HEAD", "/app.js")
    check(st == 200 and body == b"" and int(h.get("content-length", 0)) > 1000 and
          h.get("content-type") == "text/javascript; charset=utf-8", "HEAD /app.js %d %s" % (st, h))
    st, h, body = request(port, "GET", "/js/chart.js")
    check(st == 200 and b"Chart" in body[:2000] and h.get("x-content-type-options") == "nosniff",
          "/js/chart.js: %d" % st)
    st, h, body = request(port, "POST", "/")
    check(st == 405 and h.get("allow") == "GET, HEAD" and json.loads(body).get("error"),
          "POST /: %d" % st)
    for path in ("/index.html", "/../etc/passwd", "/%2e%2e/etc/passwd", "/web/app.js",
                 "/js/../app.js", "/app.js/", "/js/chart.min.js", "/favicon.ico", "//app.js"):
        st, h, body = request(port, "GET", path)
        check(st == 404 and json.loads(body).get("error"), "%s: %d %r" % (path, st, body[:80]))


def test_keyboard(b):
    """Tab reaches every control of the page, in order, with a visible focus."""
    b.js("document.activeElement.blur(); window.scrollTo(0, 0)")
    seen = []
    for _ in range(40):
        b.key("Tab", "Tab", 9)
        d = b.js("(() => { const e = document.activeElement; return e && e !== document.body ? "
                 "(e.id || e.dataset.view || e.tagName.toLowerCase()) + '|' + "
                 "getComputedStyle(e).outlineStyle : null; })()")
        if d:
            seen.append(d)
    names = [x.split("|")[0] for x in seen]
    for want in ("month", "year", "prev", "now-btn", "csv", "summary"):
        check(want in names, "Tab does not reach %s (reached %s)" % (want, names[:20]))
    check(all(x.split("|")[1] != "none" for x in seen if x.split("|")[0] in ("month", "prev")),
          "focus is visible: %s" % seen[:10])


def telegrams(port, token=None):
    try:
        st, body = get(port, "/api/v1/meters", token)
        return json.loads(body)["meters"][0]["telegrams"] if st == 200 else None
    except OSError:
        return None


def test_live(b, port):
    check(b.until("document.getElementById('power').dataset.w", 10),
          "the page shows a power value")
    for i in range(3):
        old = json.loads(get(port, "/api/v1/now")[1])["timestamp"]
        now = wait_until(lambda: (lambda j: j if j["timestamp"] != old else None)(
            json.loads(get(port, "/api/v1/now")[1])), 3 * INTERVAL_S, 0.02)
        if not check(now, "a new telegram within %.1f s" % (3 * INTERVAL_S)):
            return
        t0 = time.monotonic()
        shown = b.until("document.getElementById('stamp').dateTime === %s"
                        % json.dumps(now["timestamp"]), 2 * INTERVAL_S, 0.02)
        delay = time.monotonic() - t0
        check(shown and delay <= INTERVAL_S,
              "telegram %s shown after %.2f s (interval %.1f s)" % (now["timestamp"], delay,
                                                                    INTERVAL_S))
        want = round(now.get("power_delivered", 0) * 1000 - now.get("power_returned", 0) * 1000)
        got = b.js("document.getElementById('stamp').dateTime === %s ? "
                   "document.getElementById('power').dataset.w : null"
                   % json.dumps(now["timestamp"]))
        if got is not None:
            check(int(got) == want, "power on the page %s W, /api/v1/now %s W" % (got, want))
            text = b.js("document.getElementById('power').textContent")
            check(text.replace(",", "").startswith(str(abs(want))), "power text %r" % text)
        print("-- telegram %s on the page after %.3f s, %s W" % (now["timestamp"], delay, got),
              flush=True)
        for ph in (1, 2, 3):
            v = now.get("voltage_l%d" % ph)
            if v is not None:
                cells = b.js("[...document.querySelectorAll('#ph-voltage td')]"
                             ".map((td) => td.textContent)")
                check(any(c.startswith("%.1f" % v) for c in cells) or
                      b.js("document.getElementById('stamp').dateTime") != now["timestamp"],
                      "voltage L%d %s not in %s" % (ph, v, cells))
    count = "Chart.getChart('live-chart').data.datasets[0].data.length"
    n1 = b.js(count)
    b.pump(3.5 * INTERVAL_S)
    n2 = b.js(count)
    check(n2 >= n1 + 2, "live chart points %d -> %d" % (n1, n2))


def test_history(b, port, db):
    today = b.js("document.getElementById('stamp').dateTime").split("T")[0]
    y, m, d = (int(x) for x in today.split("-"))
    # the totals: yesterday as p1d history has it
    day_csv = cli_history(db, "day", "%04d-%02d-%02d" % (y, m, max(d - 1, 1)), today)
    rows = list(csv.DictReader(io.StringIO(day_csv.decode())))
    if d > 1 and check(rows, "p1d history has yesterday"):
        want = float(rows[0]["energy_delivered_tariff1"])
        got = b.until("(() => { const r = document.querySelector("
                      "'#t-day tr[data-col=energy_delivered_tariff1]'); "
                      "return r && r.cells[2].textContent; })()", 10)
        check(got and got.replace(",", "").startswith("%.3f" % want),
              "yesterday's tariff 1 on the page %r, p1d history %.3f" % (got, want))
    b.press("[data-view=month]")
    check(b.until("location.hash.includes('v=month')", 5), "Month view chosen with Enter")
    compare_month(b, db, y, m, d, "this month")
    b.press("#prev")
    py, pm = prev_month(y, m)
    compare_month(b, db, py, pm, 99, "previous month")
    b.js("document.querySelector('#history details').open = true; "
         "document.getElementById('history').scrollIntoView()")
    b.pump(0.5)
    b.screenshot(os.path.join(ARTIFACTS, "dashboard-month.png"))
    b.js("document.querySelector('#history details').open = false")
    # the CSV link: what p1d history prints, byte for byte
    href = b.js("document.getElementById('csv').getAttribute('href')")
    check(href and "format=csv" in href and "resolution=day" in href, "CSV link %r" % href)
    want = cli_history(db, "day", "%04d-%02d-01" % (py, pm), "%04d-%02d-01" % (y, m))
    st, body = get(port, href)
    check(st == 200 and body == want, "the CSV link gives what p1d history prints")
    check(b.download("#csv", os.path.join(os.path.dirname(db), "downloads")) == want,
          "the CSV link downloads what p1d history prints")
    rows = b.js("document.querySelectorAll('#history-table tbody tr').length")  # shown above
    check(rows == len(want.splitlines()) - 1, "history table rows %s" % rows)
    # a year of months
    b.press("[data-view=year]")
    chart = b.until("document.getElementById('history').dataset.shown === 'month %04d-01-01' "
                    "&& %s" % (py, CHART_DATA), 10)
    ycsv = list(csv.DictReader(io.StringIO(cli_history(
        db, "month", "%04d-01-01" % py, "%04d-01-01" % (py + 1)).decode())))
    if check(chart and ycsv, "the year chart is drawn"):
        sets = {s["col"]: s["data"] for s in chart["sets"]}
        for row in ycsv:
            mo = int(row["start"][5:7])
            if (py, mo) == (y, m):
                continue  # still growing
            got = sets["energy_delivered_tariff1"][mo - 1]
            check(got is not None and abs(got - float(row["energy_delivered_tariff1"])) < 5e-7,
                  "year: month %d tariff 1 chart %s, p1d history %s"
                  % (mo, got, row["energy_delivered_tariff1"]))
    b.press("[data-view=month]")
    b.press("#now-btn")
    check(b.until("document.getElementById('next').disabled", 5), "no next month after today")


def test_health(b, port):
    n = telegrams(port)
    shown = b.until("(() => { const c = document.querySelector('dl.meter'); "
                    "return c && c.textContent; })()", 10)
    check(shown and "main" in shown and "connected" in shown, "health card %r" % shown)
    got = b.until("(() => { const dd = [...document.querySelectorAll('dl.meter div')]"
                  ".find((d) => d.firstChild.textContent === 'Telegrams'); "
                  "return dd && +dd.lastChild.textContent.replace(/\\D/g, ''); })()", 10)
    check(got and abs(got - n) <= 8, "health telegrams %s, /api/v1/meters %s" % (got, n))
    _, body = get(port, "/api/v1/status")
    store = json.loads(body).get("store")
    if store and "size_bytes" in store:
        text = b.until("document.getElementById('store').textContent", 35)
        check(text and "History database" in text, "store size shown: %r" % text)
    check(b.js("document.getElementById('banner').hidden"), "no banner while telegrams come")


def test_token(b, tmp, sim_file):
    """A second p1d with a read token: the page asks for it and works with it, the CSV link
    too (it cannot carry the token itself)."""
    port = free_port()
    db = os.path.join(tmp, "token.db")
    r = subprocess.run([P1D, "import", "--db", db, sim_file], capture_output=True)
    check(r.returncode == 0, "import for the token p1d")
    proc, log = start_p1d(tmp, "token", "[meter main]\nfile = %s\npace = meter\n\n"
                          "[store]\ndatabase = %s\n\n[http]\nlisten = 127.0.0.1:%d\n"
                          "read_token = %s\nwww_dir = %s/web\n" % (sim_file, db, port, TOKEN,
                                                                  SOURCE))
    try:
        if not check(wait_until(lambda: telegrams(port, TOKEN), 10, 0.1), "token p1d runs"):
            return
        for path in ("/", "/app.js", "/style.css", "/favicon.svg", "/js/chart.js"):
            st, _ = get(port, path)
            check(st == 200, "%s without a token: %d" % (path, st))
        check(get(port, "/api/v1/now")[0] == 401, "the API still needs the token")
        errors_before = len(b.errors)
        b.send("Runtime.evaluate", expression="localStorage.clear()")
        b.navigate("http://127.0.0.1:%d/" % port)
        check(b.until("!document.getElementById('login').hidden", 10), "the page asks for the token")
        b.js("document.getElementById('token').focus()")
        b.send("Input.insertText", text=TOKEN)
        b.key("Enter", "Enter", 13, "\r")
        check(b.until("document.getElementById('power').dataset.w", 10),
              "with the token typed in, the page shows the power")
        check(b.js("document.getElementById('login').hidden"), "the token form is gone")
        href = b.until("document.getElementById('history').dataset.shown && "
                       "document.getElementById('csv').getAttribute('href')", 10)
        st, want = get(port, href, TOKEN)
        check(st == 200 and want.startswith(b"start,end"), "CSV with the token: %d" % st)
        check(b.download("#csv", os.path.join(tmp, "token-downloads")) == want,
              "the CSV link downloads the CSV with the token")
        # the expected refusals before the token was typed in
        expected = [e for e in b.errors[errors_before:]
                    if "status of 401" in e]
        unexpected = [e for e in b.errors[errors_before:] if e not in expected]
        check(not unexpected, "console errors with a token: %s" % unexpected)
        del b.errors[errors_before:]
    finally:
        proc.terminate()
        proc.wait(10)
        log.seek(0)
        text = log.read()
        check("AddressSanitizer" not in text and "runtime error" not in text,
              "sanitizer report (token p1d)")


def main():
    if not P1D or not os.access(P1D, os.X_OK):
        print("P1D not set or not executable, skipping")
        return 77
    if not CHROMIUM or websocket is None:
        print("chromium or python3-websocket missing, skipping")
        return 77
    global ARTIFACTS
    ARTIFACTS = os.environ.get("P1_ARTIFACTS") or os.path.join(os.path.dirname(P1D), "artifacts")
    artifacts = ARTIFACTS
    os.makedirs(artifacts, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="p1d-dash-") as tmp:
        db = os.path.join(tmp, "p1d.db")
        hist = os.path.join(tmp, "history.txt")
        now = int(time.time())
        start = (now - 70 * 86400) // 300 * 300
        subprocess.run([P1D, "simulate", "--start", str(start), "--step", "300", "--count",
                        str((now - 600 - start) // 300), "--interval", "0", "--output", hist],
                       check=True, stderr=subprocess.DEVNULL)
        r = subprocess.run([P1D, "import", "--db", db, hist], capture_output=True, text=True)
        if not check(r.returncode == 0, "p1d import: " + r.stderr[-300:]):
            return 1
        pty = os.path.join(tmp, "meter")
        sim = subprocess.Popen([P1D, "simulate", "--pty", pty, "--interval", str(INTERVAL_S)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(pty), 5)
        port = free_port()
        proc, log = start_p1d(tmp, "p1d", "[meter main]\nserial = %s\npreset = 115200-8N1\n\n"
                              "[store]\ndatabase = %s\n\n[http]\nlisten = 127.0.0.1:%d\n"
                              "www_dir = %s/web\n" % (pty, db, port, SOURCE))
        b = None
        try:
            if not check(wait_until(lambda: telegrams(port), 10, 0.1), "p1d reads the simulator"):
                return 1
            b = Browser(tmp)
            b.size(1280, 800)
            b.navigate("http://127.0.0.1:%d/" % port)
            print("-- test_static_http", flush=True)
            test_static_http(port)
            for t in (test_live, test_history, test_health):
                print("--", t.__name__, flush=True)
                t(b, port, db) if t is test_history else t(b, port)
            print("-- test_keyboard", flush=True)
            test_keyboard(b)
            b.press("[data-view=day]")
            b.until("Chart.getChart('history-chart').data.labels.length === 24", 5)
            b.js("window.scrollTo(0, 0)")
            b.pump(1)
            b.screenshot(os.path.join(artifacts, "dashboard-desktop.png"))
            b.screenshot(os.path.join(artifacts, "dashboard-desktop-full.png"), full=True)
            b.size(360, 740, mobile=True)
            b.pump(1.5)
            width = b.js("document.documentElement.scrollWidth")
            check(width <= 360, "the page is %s px wide on a 360-px phone" % width)
            b.screenshot(os.path.join(artifacts, "dashboard-phone.png"))
            b.screenshot(os.path.join(artifacts, "dashboard-phone-full.png"), full=True)
            b.size(1280, 800)
            b.send("Emulation.setEmulatedMedia",
                   features=[{"name": "prefers-color-scheme", "value": "dark"}])
            b.pump(1)
            b.screenshot(os.path.join(artifacts, "dashboard-dark.png"))
            b.send("Emulation.setEmulatedMedia", features=[])
            # no telegram for a while: the banner says so
            sim.terminate()
            sim.wait(10)
            banner = b.until("(() => { const e = document.getElementById('banner'); "
                             "return !e.hidden && e.textContent; })()", 25, 0.2)
            check(banner and "No telegram" in banner, "the banner after the meter went quiet: %r"
                  % banner)
            b.js("window.scrollTo(0, 0)")
            b.screenshot(os.path.join(artifacts, "dashboard-stale.png"))
            check(proc.poll() is None, "p1d still running")
            check(not b.errors, "console errors: %s" % b.errors[:5])
            print("--", "test_token", flush=True)
            small = os.path.join(tmp, "small.txt")
            subprocess.run([P1D, "simulate", "--count", "120", "--interval", "0", "--output",
                            small], check=True, stderr=subprocess.DEVNULL)
            test_token(b, tmp, small)
        finally:
            if b:
                b.close()
            if sim.poll() is None:
                sim.terminate()
                sim.wait(10)
            proc.terminate()
            rc = proc.wait(20)
            check(rc == 0, "p1d exit code %s" % rc)
            log.seek(0)
            check_log(log.read(), 3000)
    return failures_status()


if __name__ == "__main__":
    sys.exit(main())
