/* p1d dashboard: live power from the event stream, today's and this month's totals, history
 * charts and the meters' health, all from p1d's own API (docs/api.md). Plain JavaScript, no
 * build step; charts by Chart.js (served by p1d at /js/chart.js). Dates of periods are the
 * meter's local dates (p1d interprets from/to in the meter's time zone), so the browser's own
 * time zone never shifts a day or a month. */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const LIVE_WINDOW_MS = 10 * 60 * 1000; /* the live chart shows the last 10 minutes */
  const STALE_MIN_MS = 10 * 1000; /* banner when no telegram came for this long ... */
  const STALE_INTERVALS = 3; /* ... or for this many of the meter's usual intervals */
  const POLL_METERS_MS = 5000;
  const POLL_STATUS_MS = 30000;
  const POLL_HISTORY_MS = 60000;
  const RETRY_MAX_MS = 30000;

  const LABELS = {
    energy_delivered_total: 'Used',
    energy_returned_total: 'Returned',
    gas_delivered: 'Gas',
    water_delivered: 'Water',
    thermal_delivered: 'Heat',
  };
  const UNITS = {gas_delivered: 'm³', water_delivered: 'm³', thermal_delivered: 'GJ'};

  function stored(key) {
    try {
      return localStorage.getItem(key);
    } catch (e) {
      return null;
    }
  }

  const state = {
    token: stored('p1d-token') || '',
    meters: [],
    meter: '',
    view: 'day',
    date: null, /* [y, m, d] of the period shown */
    today: null, /* [y, m, d] in the meter's time zone */
    latest: null,
    lastSeen: 0, /* Date.now() of the latest telegram */
    gaps: [], /* ms between recent telegrams */
    unreachable: false,
    stream: null, /* AbortController */
    retryMs: 1000,
    charts: {},
    liveData: [], /* {x: ms since 1970, y: W} of the last LIVE_WINDOW_MS */
  };

  /* ---- formatting ---- */

  const nf = (digits) => new Intl.NumberFormat(undefined, {
    minimumFractionDigits: digits, maximumFractionDigits: digits});
  const fmt0 = nf(0), fmt1 = nf(1), fmt2 = nf(2), fmt3 = nf(3);

  function watts(w) {
    const a = Math.abs(w);
    return a >= 10000 ? fmt2.format(a / 1000) + ' kW' : fmt0.format(a) + ' W';
  }

  function age(ms) {
    if (ms == null) return 'never';
    const s = Math.round(ms / 1000);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor(s % 86400 / 3600) + ' h';
  }

  function bytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1 << 20) return fmt1.format(n / 1024) + ' KiB';
    if (n < 1 << 30) return fmt1.format(n / (1 << 20)) + ' MiB';
    return fmt2.format(n / (1 << 30)) + ' GiB';
  }

  function label(col) {
    if (LABELS[col]) return LABELS[col];
    const m = /^energy_(delivered|returned)_tariff(\d)$/.exec(col);
    return m ? (m[1] === 'delivered' ? 'Used' : 'Returned') + ', tariff ' + m[2] : col;
  }

  const unit = (col) => UNITS[col] || 'kWh';
  const amount = (v, col) => v == null ? '–' : fmt3.format(v) + ' ' + unit(col);

  /* ---- dates (calendar arithmetic on [y, m, d], no time zone involved) ---- */

  const pad = (n) => String(n).padStart(2, '0');
  const iso = (d) => d[0] + '-' + pad(d[1]) + '-' + pad(d[2]);
  const daysIn = (y, m) => new Date(Date.UTC(y, m, 0)).getUTCDate();
  const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
    'September', 'October', 'November', 'December'];

  function addDays(d, n) {
    const t = new Date(Date.UTC(d[0], d[1] - 1, d[2] + n));
    return [t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate()];
  }

  function addMonths(d, n) {
    const t = new Date(Date.UTC(d[0], d[1] - 1 + n, 1));
    return [t.getUTCFullYear(), t.getUTCMonth() + 1, 1];
  }

  function parseDate(s) {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(s || '');
    return m ? [+m[1], +m[2], +m[3]] : null;
  }

  function browserToday() {
    const t = new Date();
    return [t.getFullYear(), t.getMonth() + 1, t.getDate()];
  }

  /* [from, to, resolution, title, slot labels] of the period shown */
  function period(view, d) {
    if (view === 'day') {
      const labels = [];
      for (let h = 0; h < 24; h++) labels.push(pad(h) + ':00');
      return {from: iso(d), to: iso(addDays(d, 1)), res: 'hour', labels,
        title: new Date(Date.UTC(d[0], d[1] - 1, d[2])).toLocaleDateString(undefined,
          {weekday: 'short', day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC'}),
        key: (start) => start.slice(11, 16)};
    }
    if (view === 'month') {
      const first = [d[0], d[1], 1], labels = [];
      for (let i = 1; i <= daysIn(d[0], d[1]); i++) labels.push(String(i));
      return {from: iso(first), to: iso(addMonths(first, 1)), res: 'day', labels,
        title: MONTHS[d[1] - 1] + ' ' + d[0], key: (start) => String(+start.slice(8, 10))};
    }
    return {from: d[0] + '-01-01', to: (d[0] + 1) + '-01-01', res: 'month',
      labels: MONTHS.map((m) => m.slice(0, 3)), title: String(d[0]),
      key: (start) => MONTHS[+start.slice(5, 7) - 1].slice(0, 3)};
  }

  /* ---- the API ---- */

  class HttpError extends Error {
    constructor(status, msg) {
      super(msg);
      this.status = status;
    }
  }

  function headers() {
    return state.token ? {Authorization: 'Bearer ' + state.token} : {};
  }

  async function api(path, opts) {
    let res;
    try {
      res = await fetch(path, Object.assign({headers: headers(), cache: 'no-store'}, opts));
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      setUnreachable(true);
      throw e;
    }
    setUnreachable(false);
    if (res.status === 401) {
      showLogin(!!state.token);
      throw new HttpError(401, 'token needed');
    }
    if (!res.ok) {
      let msg = res.statusText;
      try {
        msg = (await res.json()).error || msg;
      } catch (e) { /* not JSON */ }
      throw new HttpError(res.status, msg);
    }
    return res;
  }

  const getJSON = async (path) => (await api(path)).json();
  const meterPath = (leaf) => '/api/v1/meters/' + encodeURIComponent(state.meter) + '/' + leaf;

  function historyUrl(res, from, to, format) {
    return meterPath('history') + '?resolution=' + res + '&from=' + from + '&to=' + to +
      (format ? '&format=' + format : '');
  }

  /* ---- token ---- */

  function showLogin(rejected) {
    $('login').hidden = false;
    $('login-error').hidden = !rejected;
    $('main').hidden = true;
    stopStream();
  }

  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('token').value.trim();
    try {
      localStorage.setItem('p1d-token', state.token);
    } catch (e) { /* storage off: the token lasts as long as the page */ }
    $('login').hidden = true;
    $('main').hidden = false;
    start();
  });

  /* ---- the banner and the connection badge ---- */

  function setUnreachable(on) {
    if (state.unreachable === on) return;
    state.unreachable = on;
    if (on) state.unreachableSince = new Date();
    updateBanner();
  }

  const STATES = {idle: 'not opened yet', connecting: 'connecting', connected: 'port open',
    absent: 'port unavailable, retrying', stale: 'no valid data, reopening the port',
    eof: 'end of the file'};
  const stateText = (m) => STATES[m.state] || m.state;

  function typicalGap() {
    if (!state.gaps.length) return 1000;
    const s = state.gaps.slice().sort((a, b) => a - b);
    return s[s.length >> 1];
  }

  function updateBanner() {
    const b = $('banner');
    const m = state.meters.find((x) => x.name === state.meter);
    let text = '';
    if (state.unreachable) {
      text = 'p1d does not answer (since ' + state.unreachableSince.toLocaleTimeString() +
        '); retrying.';
    } else if (m && !state.lastSeen) {
      text = 'No telegram from meter ' + m.name + ' yet (' + stateText(m) + '). Check the P1 ' +
        'cable and the meter\'s port.';
    } else if (m) {
      const gone = Date.now() - state.lastSeen;
      /* the text changes only with the state: screen readers announce each change */
      if (gone > Math.max(STALE_MIN_MS, STALE_INTERVALS * typicalGap())) {
        text = 'No telegram from meter ' + m.name + ' since ' + (state.latest &&
          state.latest.timestamp ? state.latest.timestamp.slice(11, 19) + ' (meter time)' :
          new Date(state.lastSeen).toLocaleTimeString()) + ': ' + stateText(m) + '.';
      }
    }
    b.hidden = !text;
    if (b.textContent !== text) b.textContent = text;
    document.body.classList.toggle('stale', !!text);
    const live = state.stream && !text;
    $('conn').textContent = live ? 'live' : state.stream ? 'waiting' : 'offline';
    $('conn').className = 'conn ' + (live ? 'ok' : 'bad');
  }

  /* ---- live: the event stream ---- */

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  async function runStream() {
    stopStream();
    const ctrl = new AbortController();
    state.stream = ctrl;
    updateBanner();
    try {
      const res = await api(meterPath('events'), {signal: ctrl.signal,
        headers: Object.assign({Accept: 'text/event-stream'}, headers())});
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      state.retryMs = 1000;
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true}).replace(/\r\n?/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          onEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e instanceof HttpError && e.status === 401) return;
    }
    if (state.stream !== ctrl) return;
    state.stream = null;
    updateBanner();
    setTimeout(() => { if (!state.stream && !ctrl.signal.aborted) runStream(); }, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
  }

  function onEvent(block) {
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('data:')) data += line.slice(line[5] === ' ' ? 6 : 5);
    }
    if (!data) return;
    let t;
    try {
      t = JSON.parse(data);
    } catch (e) {
      return;
    }
    const now = Date.now();
    if (state.latest && t.timestamp && t.timestamp === state.latest.timestamp) return;
    if (state.lastSeen && state.latest) state.gaps = state.gaps.concat(now - state.lastSeen).slice(-20);
    state.latest = t;
    state.lastSeen = now;
    const day = parseDate(t.timestamp);
    if (day && (!state.today || iso(day) !== iso(state.today))) {
      state.today = day; /* the first telegram, or midnight */
      refreshTotals();
      if (!state.date) refreshHistory();
    }
    showLive(t, now);
    updateBanner();
  }

  /* value of a field in W/V/A; null when absent */
  function num(t, field, scale) {
    const v = t[field];
    if (typeof v !== 'number') return null;
    const u = t.units && t.units[field];
    return u === 'W' || u === 'Wh' || u === 'var' || u === 'VA' ? v * scale / 1000 : v * scale;
  }

  function netPower(t, suffix) {
    const d = num(t, 'power_delivered' + suffix, 1000), r = num(t, 'power_returned' + suffix, 1000);
    if (d == null && r == null) return null;
    return Math.round((d || 0) - (r || 0));
  }

  function showLive(t, now) {
    const w = netPower(t, '');
    const p = $('power');
    p.textContent = w == null ? '–' : watts(w);
    p.dataset.w = w == null ? '' : String(w);
    $('direction').textContent = w == null ? '' : w < 0 ? 'returning' : 'drawing';
    $('live').classList.toggle('returning', w != null && w < 0);
    showPhases(t);
    $('tariff').textContent = t.electricity_tariff ? 'Tariff ' + (+t.electricity_tariff) + ' ·' : '';
    const gas = t.mbus && t.mbus.find((b) => b.medium === 'gas' && typeof b.value === 'number');
    const g = typeof t.gas_delivered === 'number' ? t.gas_delivered : gas && gas.value;
    $('gas-now').textContent = typeof g === 'number' ? 'Gas meter ' + fmt3.format(g) + ' m³ ·' : '';
    const stamp = $('stamp');
    stamp.dateTime = t.timestamp || '';
    stamp.textContent = t.timestamp ? 'meter time ' + t.timestamp.slice(11, 19) : '';
    if (w == null) return;
    pushLive(t.timestamp ? Date.parse(t.timestamp) : now, w);
  }

  function showPhases(t) {
    const phases = [1, 2, 3].filter((n) => t['voltage_l' + n] != null ||
      t['power_delivered_l' + n] != null || t['current_l' + n] != null);
    const table = $('phases');
    table.hidden = !phases.length;
    if (!phases.length) return;
    const head = table.tHead.rows[0];
    while (head.cells.length > 1) head.deleteCell(1);
    for (const n of phases) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = 'L' + n;
      head.appendChild(th);
    }
    const rows = [
      ['ph-power', (n) => { const w = netPower(t, '_l' + n); return w == null ? '–' : (w < 0 ? '−' : '') + watts(w); }],
      ['ph-voltage', (n) => { const v = num(t, 'voltage_l' + n, 1); return v == null ? '–' : fmt1.format(v) + ' V'; }],
      ['ph-current', (n) => { const a = num(t, 'current_l' + n, 1); return a == null ? '–' : fmt0.format(a) + ' A'; }],
    ];
    for (const [id, f] of rows) {
      const tr = $(id);
      while (tr.cells.length > 1) tr.deleteCell(1);
      let any = false;
      for (const n of phases) {
        const td = tr.insertCell();
        td.textContent = f(n);
        any = any || td.textContent !== '–';
      }
      tr.hidden = !any;
    }
  }

  /* ---- charts ---- */

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function chartDefaults() {
    if (!window.Chart) return false;
    Chart.defaults.color = css('--muted');
    Chart.defaults.borderColor = css('--grid');
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.maintainAspectRatio = false;
    return true;
  }

  /* ms since 1970 -> "12:16:35" in the meter's time (the offset of its latest telegram) */
  function meterTime(ms, seconds) {
    const m = /([+-])(\d{2}):(\d{2})$/.exec((state.latest && state.latest.timestamp) || '');
    const off = m ? (m[1] === '-' ? -1 : 1) * (+m[2] * 60 + +m[3]) : -new Date(ms).getTimezoneOffset();
    return new Date(ms + off * 60000).toISOString().slice(11, seconds ? 19 : 16);
  }

  function liveChart() {
    if (state.charts.live || !window.Chart) return state.charts.live;
    state.charts.live = new Chart($('live-chart'), {
      type: 'line',
      data: {datasets: [{label: 'Power (W)', data: state.liveData, borderColor: css('--used'),
        borderWidth: 2, pointRadius: 0, tension: 0.2,
        fill: {target: 'origin', above: css('--used-fill'), below: css('--ret-fill')}}]},
      options: {
        animation: false, parsing: false, normalized: true,
        interaction: {mode: 'nearest', axis: 'x', intersect: false},
        scales: {
          x: {type: 'linear', afterBuildTicks: liveTicks,
            ticks: {callback: (v) => meterTime(v, liveStep() < 60000), maxRotation: 0}},
          y: {title: {display: true, text: 'W'}, suggestedMin: 0, suggestedMax: 0},
        },
        plugins: {legend: {display: false},
          tooltip: {callbacks: {title: (items) => meterTime(items[0].parsed.x, true)}}},
      },
    });
    return state.charts.live;
  }

  /* ticks on whole seconds or minutes, at most six of them */
  function liveStep() {
    const d = state.liveData, span = d.length ? d[d.length - 1].x - d[0].x : 0;
    return [10000, 30000, 60000, 120000].find((st) => span / st <= 6) || 120000;
  }

  function liveTicks(axis) {
    const step = liveStep(), ticks = [];
    for (let v = Math.ceil(axis.min / step) * step; v <= axis.max; v += step) ticks.push({value: v});
    axis.ticks = ticks;
  }

  function pushLive(x, w) {
    const data = state.liveData;
    if (data.length && x <= data[data.length - 1].x) return; /* an old or repeated telegram */
    data.push({x, y: w});
    while (data[0].x < x - LIVE_WINDOW_MS) data.shift();
    drawLive();
  }

  function drawLive() {
    const chart = liveChart(), data = state.liveData;
    if (!chart || !data.length) return;
    chart.options.scales.x.min = data[0].x;
    chart.options.scales.x.max = data[data.length - 1].x;
    chart.update('none');
  }

  /* the colours come from the style sheet: draw again when it switches to dark or back */
  function recolor() {
    if (!chartDefaults()) return;
    for (const c of Object.values(state.charts)) c.destroy();
    state.charts = {};
    drawLive();
    refreshHistory();
  }
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', recolor);

  /* ---- totals: today / yesterday, this month / last month ---- */

  /* p1d without a store ([store] enabled = false) answers 503 for history: say so once and
   * stop asking */
  function storeOff(e) {
    if (!(e instanceof HttpError && e.status === 503 && /store not available/.test(e.message))) {
      return false;
    }
    state.noStore = true;
    $('totals').hidden = true;
    $('history').hidden = true;
    $('no-history').hidden = false;
    return true;
  }

  /* one at a time, and history waits for them: the first request alone finds out whether
   * there is a store */
  let totalsChain = Promise.resolve();
  function refreshTotals() {
    totalsChain = totalsChain.then(loadTotals);
    return totalsChain;
  }

  async function loadTotals() {
    if (!state.meter || state.noStore) return;
    const today = state.today || browserToday();
    const month = [today[0], today[1], 1];
    try {
      const days = await getJSON(historyUrl('day', iso(addDays(today, -1)), iso(addDays(today, 1))));
      const months = await getJSON(historyUrl('month', iso(addMonths(month, -1)), iso(addMonths(month, 1))));
      fillTotals($('t-day'), days, iso(today), iso(addDays(today, -1)));
      fillTotals($('t-month'), months, iso(month), iso(addMonths(month, -1)));
      /* the history includes the minutes so far: say up to when */
      const ts = state.latest && state.latest.timestamp ? state.latest.timestamp : '';
      $('totals-upto').textContent = (days.length || months.length) && ts.startsWith(iso(today)) ?
        'Up to ' + ts.slice(11, 16) + ' today.' : '';
      $('totals-note').hidden = true;
    } catch (e) {
      if ((e instanceof HttpError && e.status === 401) || storeOff(e)) return;
      const note = $('totals-note');
      note.textContent = e instanceof HttpError && e.status === 503 ? 'No history: ' + e.message + '.' : 'Totals are not available right now.';
      note.hidden = false;
    }
  }

  function columns(rows) {
    const cols = [];
    for (const r of rows) {
      for (const k of Object.keys(r)) {
        if (k !== 'start' && k !== 'end' && !k.startsWith('power_') && !cols.includes(k)) cols.push(k);
      }
    }
    return cols;
  }

  function fillTotals(table, rows, cur, prev) {
    const a = rows.find((r) => r.start.startsWith(cur)) || {};
    const b = rows.find((r) => r.start.startsWith(prev)) || {};
    const body = table.tBodies[0];
    body.textContent = '';
    const cols = columns(rows);
    const add = (name, col, va, vb, cls) => {
      const tr = body.insertRow();
      if (cls) tr.className = cls;
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = name;
      tr.appendChild(th);
      tr.insertCell().textContent = amount(va, col);
      tr.insertCell().textContent = amount(vb, col);
      tr.dataset.col = col;
    };
    const sum = (r, kind) => {
      const ks = cols.filter((c) => c.startsWith('energy_' + kind + '_tariff'));
      return ks.some((k) => r[k] != null) ? ks.reduce((s, k) => s + (r[k] || 0), 0) : null;
    };
    for (const kind of ['delivered', 'returned']) {
      const tariffs = cols.filter((c) => c.startsWith('energy_' + kind + '_tariff'));
      /* no solar panels: no rows of zeros */
      const all = cols.filter((c) => c.startsWith('energy_' + kind));
      if (kind === 'returned' && !rows.some((r) => all.some((c) => r[c]))) continue;
      if (tariffs.length > 1) {
        add(kind === 'delivered' ? 'Used' : 'Returned', 'energy_' + kind + '_sum',
          sum(a, kind), sum(b, kind), 'total');
      }
      for (const c of all) {
        add(tariffs.length > 1 && c.includes('tariff') ? 'tariff ' + c.slice(-1) : label(c),
          c, a[c], b[c], c.includes('tariff') && tariffs.length > 1 ? 'sub' : '');
      }
    }
    for (const c of cols.filter((x) => !x.startsWith('energy_'))) add(label(c), c, a[c], b[c]);
    if (!cols.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = 3;
      td.className = 'empty';
      td.textContent = 'No history yet.';
    }
  }

  /* ---- history: hours of a day, days of a month, months of a year ---- */

  const SERIES = [
    {re: /^energy_delivered_(tariff\d|total)$/, sign: 1, stack: 'e', colors: ['--used', '--used2', '--used3', '--used4']},
    {re: /^energy_returned_(tariff\d|total)$/, sign: -1, stack: 'e', colors: ['--ret', '--ret2', '--ret3', '--ret4']},
  ];

  async function refreshHistory() {
    await totalsChain;
    if (!state.meter || state.noStore) return;
    const d = state.date || state.today || browserToday();
    const p = period(state.view, d);
    $('period').textContent = p.title;
    const today = state.today || browserToday();
    $('next').disabled = p.to > iso(today);
    const csv = $('csv');
    csv.href = historyUrl(p.res, p.from, p.to, 'csv');
    csv.download = 'p1d-' + state.meter + '-' + p.from + '-' + p.res + '.csv';
    saveHash();
    const token = (state.historyToken = {});
    let rows;
    try {
      rows = await getJSON(historyUrl(p.res, p.from, p.to));
    } catch (e) {
      if (token !== state.historyToken || (e instanceof HttpError && e.status === 401) ||
          storeOff(e)) return;
      showHistoryNote(e instanceof HttpError ? 'No history: ' + e.message + '.' : 'History is not available right now.');
      rows = [];
    }
    if (token !== state.historyToken) return;
    if (rows.length) $('history-note').hidden = true;
    else if ($('history-note').hidden) showHistoryNote('No history for ' + p.title + '.');
    drawHistory(p, rows);
    fillHistoryTable(p, rows);
    $('history').dataset.shown = p.res + ' ' + p.from; /* what the chart and table hold */
  }

  function showHistoryNote(text) {
    $('history-note').textContent = text;
    $('history-note').hidden = false;
  }

  /* slot labels with the rows placed (rows come in time order); a repeated hour (the autumn
   * clock change) gets a slot of its own, both labelled with their UTC offsets */
  function slots(p, rows) {
    const labels = p.labels.slice(), owner = labels.map(() => null), at = [];
    for (const r of rows) {
      const k = p.key(r.start);
      let j = labels.indexOf(k);
      if (j < 0) {
        j = labels.push(k) - 1;
        owner.push(null);
      } else if (owner[j]) {
        labels[j] = k + ' ' + owner[j].start.slice(19);
        labels.splice(j + 1, 0, k + ' ' + r.start.slice(19));
        owner.splice(j + 1, 0, null);
        j += 1;
      }
      owner[j] = r;
      at.push(j);
    }
    return {labels, at};
  }

  /* the right axis: gas, water or heat, when the meter has them */
  function y2(cols) {
    const units = [...new Set(cols.filter((c) => !/^energy_/.test(c)).map(unit))];
    return {display: units.length > 0, title: {display: true, text: units.join(', ')}};
  }

  function drawHistory(p, rows) {
    if (!window.Chart) return;
    const {labels, at} = slots(p, rows);
    const cols = columns(rows);
    const datasets = [];
    for (const s of SERIES) {
      /* returned energy only where some was returned */
      cols.filter((c) => s.re.test(c) && (s.sign > 0 || rows.some((r) => r[c]))).forEach((c, n) => {
        const data = labels.map(() => null);
        rows.forEach((r, i) => { if (r[c] != null) data[at[i]] = s.sign * r[c]; });
        datasets.push({type: 'bar', label: label(c), data, stack: s.stack, yAxisID: 'y',
          backgroundColor: css(s.colors[n % 4]), p1dColumn: c});
      });
    }
    for (const c of cols.filter((x) => !/^energy_/.test(x))) {
      const data = labels.map(() => null);
      rows.forEach((r, i) => { if (r[c] != null) data[at[i]] = r[c]; });
      datasets.push({type: 'line', label: label(c) + ' (' + unit(c) + ')', data, yAxisID: 'y2',
        borderColor: css('--gas'), backgroundColor: css('--gas'), pointRadius: 2, borderWidth: 2,
        spanGaps: false, p1dColumn: c});
    }
    const chart = state.charts.history;
    if (chart) {
      chart.data.labels = labels;
      chart.data.datasets = datasets;
      Object.assign(chart.options.scales.y2, y2(cols));
      chart.update();
      return;
    }
    state.charts.history = new Chart($('history-chart'), {
      type: 'bar',
      data: {labels, datasets},
      options: {
        interaction: {mode: 'index', intersect: false},
        scales: {
          x: {stacked: true, ticks: {maxRotation: 0, autoSkipPadding: 6}},
          y: {stacked: true, title: {display: true, text: 'kWh'}},
          y2: Object.assign({position: 'right', beginAtZero: true, grid: {drawOnChartArea: false}},
            y2(cols)),
        },
        plugins: {
          legend: {position: 'bottom', labels: {boxWidth: 12}},
          tooltip: {callbacks: {label: (c) => c.dataset.label + ': ' + fmt3.format(Math.abs(c.parsed.y))}},
        },
      },
    });
  }

  function fillHistoryTable(p, rows) {
    const table = $('history-table');
    const cols = columns(rows);
    table.textContent = '';
    const cap = table.createCaption();
    cap.textContent = p.title;
    const hr = table.createTHead().insertRow();
    for (const h of ['Start'].concat(cols.map((c) => label(c) + ' (' + unit(c) + ')'))) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = h;
      hr.appendChild(th);
    }
    const body = table.createTBody();
    for (const r of rows) {
      const tr = body.insertRow();
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = p.res === 'hour' ? r.start.slice(11, 16) : p.res === 'day' ? r.start.slice(0, 10) : r.start.slice(0, 7);
      tr.appendChild(th);
      for (const c of cols) tr.insertCell().textContent = r[c] == null ? '' : fmt3.format(r[c]);
    }
  }

  /* the CSV link carries no token: with one, fetch it and hand the browser a blob */
  $('csv').addEventListener('click', async (ev) => {
    if (!state.token) return;
    ev.preventDefault();
    try {
      const blob = await (await api($('csv').href)).blob();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = $('csv').download;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      showHistoryNote('The CSV could not be fetched.');
    }
  });

  function setView(view) {
    state.view = view;
    for (const b of document.querySelectorAll('[data-view]')) {
      b.setAttribute('aria-pressed', String(b.dataset.view === view));
    }
    refreshHistory();
  }

  function step(n) {
    const d = state.date || state.today || browserToday();
    state.date = state.view === 'day' ? addDays(d, n) : state.view === 'month' ? addMonths(d, n) : [d[0] + n, 1, 1];
    refreshHistory();
  }

  for (const b of document.querySelectorAll('[data-view]')) {
    b.addEventListener('click', () => setView(b.dataset.view));
  }
  $('prev').addEventListener('click', () => step(-1));
  $('next').addEventListener('click', () => step(1));
  $('now-btn').addEventListener('click', () => {
    state.date = null; /* follows today */
    refreshHistory();
  });
  $('history').addEventListener('keydown', (ev) => {
    if (ev.target.closest('input, select, textarea, summary')) return;
    if (ev.key === 'ArrowLeft') step(-1);
    else if (ev.key === 'ArrowRight' && !$('next').disabled) step(1);
  });

  /* #m=main&v=month&d=2026-10-01 (d once moved away from today): the view survives a reload
   * and can be bookmarked */
  function saveHash() {
    const h = '#m=' + encodeURIComponent(state.meter) + '&v=' + state.view +
      (state.date ? '&d=' + iso(state.date) : '');
    if (location.hash !== h) history.replaceState(null, '', h);
  }

  function loadHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    if (['day', 'month', 'year'].includes(q.get('v'))) state.view = q.get('v');
    const d = parseDate(q.get('d'));
    if (d) state.date = d;
    return q.get('m') || '';
  }

  /* ---- health ---- */

  async function refreshMeters() {
    let data;
    try {
      data = await getJSON('/api/v1/meters');
    } catch (e) {
      updateBanner();
      return false;
    }
    state.meters = data.meters;
    const m = state.meters.find((x) => x.name === state.meter);
    if (m && m.last_telegram_age_ms != null) {
      const seen = Date.now() - m.last_telegram_age_ms;
      if (seen > state.lastSeen + 1000 || !state.lastSeen) state.lastSeen = seen;
    }
    const box = $('meters');
    box.textContent = '';
    for (const x of state.meters) {
      const card = document.createElement('dl');
      card.className = 'meter' + (x.connected ? '' : ' down');
      card.dataset.meter = x.name;
      const items = [['Meter', x.name], ['State', x.state], ['Telegrams', fmt0.format(x.telegrams)],
        ['CRC errors', fmt0.format(x.crc_errors)], ['Rejected', fmt0.format(x.rejected)],
        ['Last telegram', '']];
      for (const [k, v] of items) {
        const div = document.createElement('div');
        const dt = document.createElement('dt');
        const dd = document.createElement('dd');
        dt.textContent = k;
        dd.textContent = v;
        if (k === 'Last telegram') {
          dd.className = 'seen';
          dd.dataset.seen = x.last_telegram_age_ms == null ? '' : String(Date.now() - x.last_telegram_age_ms);
        }
        div.append(dt, dd);
        card.appendChild(div);
      }
      box.appendChild(card);
    }
    tick();
    return true;
  }

  async function refreshStatus() {
    let s;
    try {
      s = await getJSON('/api/v1/status');
    } catch (e) {
      return;
    }
    $('version').textContent = 'p1d ' + s.version;
    const st = s.store;
    const p = $('store');
    if (st && typeof st.size_bytes === 'number') {
      p.textContent = 'History database: ' + bytes(st.size_bytes) +
        (typeof st.bytes_written === 'number' ? ', ' + bytes(st.bytes_written) + ' written since p1d started' : '') + '.';
      p.hidden = false;
    } else {
      p.hidden = true;
    }
  }

  /* every second: ages and the banner */
  function tick() {
    for (const dd of document.querySelectorAll('dd.seen')) {
      dd.textContent = dd.dataset.seen ? age(Math.max(0, Date.now() - +dd.dataset.seen)) + ' ago' : 'never';
    }
    updateBanner();
  }

  /* ---- start ---- */

  function pickMeter(wanted) {
    const sel = $('meter');
    sel.textContent = '';
    for (const m of state.meters) sel.add(new Option(m.name, m.name));
    const names = state.meters.map((m) => m.name);
    state.meter = names.includes(wanted) ? wanted : names.includes(state.meter) ? state.meter : names[0] || '';
    sel.value = state.meter;
    $('meter-pick').hidden = names.length < 2;
  }

  $('meter').addEventListener('change', () => {
    state.meter = $('meter').value;
    state.latest = null;
    state.lastSeen = 0;
    state.gaps = [];
    state.liveData.length = 0;
    if (state.charts.live) state.charts.live.update('none');
    runStream();
    refreshTotals();
    refreshHistory();
    refreshMeters();
  });

  let started = false;
  async function start() {
    const wanted = loadHash();
    if (!(await refreshMeters())) {
      if (!$('login').hidden) return;
      setTimeout(start, 3000);
      return;
    }
    pickMeter(wanted);
    if (!state.meter) return;
    runStream();
    refreshStatus();
    refreshTotals();
    refreshHistory();
    if (started) return;
    started = true;
    setInterval(refreshMeters, POLL_METERS_MS);
    setInterval(refreshStatus, POLL_STATUS_MS);
    setInterval(() => {
      refreshTotals();
      const p = period(state.view, state.date || state.today || browserToday());
      if (p.to > iso(state.today || browserToday())) refreshHistory(); /* the period is not over */
    }, POLL_HISTORY_MS);
    setInterval(tick, 1000);
  }

  if (!chartDefaults()) {
    for (const id of ['live-chart', 'history-chart']) {
      const note = document.createElement('p');
      note.className = 'note';
      note.textContent = 'Charts need Chart.js, which p1d could not serve (see chartjs in p1d.conf(5)).';
      $(id).parentNode.replaceWith(note);
    }
  }
  start();
})();
