// The live page of one rider (/live/<name>): tiles, the chart, the ride's state (docs/rides.md)
// and, once it ended, its summary. One live connection: the stream's metrics SSE.
(() => {
  const L = window.Live, cfg = L.config();
  const $ = (id) => document.getElementById(id);
  const WINDOW_S = 5 * 60, GAP_S = 5;
  const ZONES = [[0, .55, "Z1", "#1b2a36"], [.55, .75, "Z2", "#1b3326"], [.75, .90, "Z3", "#2f3319"],
                 [.90, 1.05, "Z4", "#3a2c16"], [1.05, 1.20, "Z5", "#3a1d16"], [1.20, 1.50, "Z6", "#3a1627"], [1.50, 9, "Z7", "#2d1636"]];
  const samples = [];  // {t (ride time, s), power, hr}: at most one a second
  let markers = [];  // {label, ride_s}: the ride's markers (POST /api/streams/<name>/markers), oldest first
  const MARKER_COLOR = "#58a6ff";
  let latest = null, lost = false, over = false, source = null;

  // --- state -------------------------------------------------------------------------------
  function currentState() {
    if (over) return over;
    if (lost) return "lost";
    return latest ? L.rideState(latest) : "connecting";
  }

  function showState() {
    const state = currentState();
    const text = state === "lost" ? "connection to the server lost, reconnecting…"
      : state === "connecting" ? "connecting…" : L.stateText(state, latest || {});
    L.showState($("state"), state, text);
    document.body.className = state;
    $("lost").hidden = state !== "lost";
    $("summary").hidden = state !== "ended";
    if (state === "ended") showSummary(latest);
    const last = latest && L.lastEntryMs(latest);
    $("last").textContent = last ? `${L.ago(last)} ago` : "–";
  }

  // --- numbers ------------------------------------------------------------------------------
  const put = (id, text) => { $(id).textContent = text; };
  function showOptional(id, value, text) {  // a tile shown once the stream carries its value
    if (value !== null && value !== undefined) $("tile-" + id).hidden = false;
    put(id, text);
  }
  const zone = (id, z) => { $(id).textContent = z || ""; $(id).dataset.zone = z || ""; };
  const npText = (np, lowConfidence) => L.round(np) + (lowConfidence && np !== null && np !== undefined ? "*" : "");

  function showMetrics(m) {
    // An ended ride has no current power, heart rate, cadence or speed: its summary says the rest.
    const now = L.rideState(m) === "ended" ? {} : m;
    put("elapsed", L.hms(m.elapsed_s));
    put("moving", L.hms(m.moving_s));
    put("power3s", L.round(now.power_3s));
    zone("pzone", L.powerZone(now));
    put("np", npText(m.normalized_power, m.np_low_confidence));
    put("if", L.round(m.intensity_factor, 2));
    put("tss", L.round(m.tss, 1));
    put("avgpower", L.round(m.avg_power));
    put("hr", L.round(now.heart_rate));
    zone("hzone", L.hrZone(now));
    showOptional("cadence", m.cadence, L.round(now.cadence));
    showOptional("speed", m.speed, now.speed == null ? "–" : L.round(now.speed * 3.6, 1));
    showOptional("distance", m.distance, m.distance == null ? "–" : L.round(m.distance / 1000, 2));
    put("ftp", L.round(m.ftp));
    put("ftp-source", m.ftp_source ? `(${m.ftp_source})` : "");
  }

  // The summary of an ended ride: the saved workout's numbers once archived, else the live ones.
  function showSummary(m) {
    const w = m.workout || {};
    const pick = (key, liveKey) => w[key] ?? (liveKey ? m[liveKey] : null);
    put("ended-reason", m.ended_reason === "idle" ? "(no data for a long while)" : m.ended_reason === "owner" ? "(by the rider)" : "");
    put("sum-duration", L.hms(pick("duration_s", "elapsed_s")));
    put("sum-moving", L.hms(pick("moving_time_s", "moving_s")));
    put("sum-np", npText(pick("normalized_power", "normalized_power"), !m.workout && m.np_low_confidence) + " W");
    put("sum-if", L.round(pick("intensity_factor", "intensity_factor"), 2));
    put("sum-tss", L.round(pick("tss", "tss"), 1));
    put("sum-avgpower", L.round(pick("avg_power", "avg_power")) + " W");
    put("sum-avghr", L.round(pick("avg_hr", "avg_heart_rate")) + " bpm");
    put("sum-max", L.round(pick("max_power", "max_power")) + " W");
    for (const [id, key] of [["sum-peak5s", "peak_5s"], ["sum-peak1min", "peak_1min"], ["sum-peak5min", "peak_5min"], ["sum-peak20min", "peak_20min"]]) {
      put(id, w[key] == null ? "–" : `${L.round(w[key])} W`);
      $(id).parentElement.hidden = w[key] == null;
    }
    $("workout-link").hidden = !w.url;
    if (w.url) $("workout-link").href = w.url;
    $("workout-pending").hidden = Boolean(w.url);
  }

  // The markers under the chart, as a list (the chart draws them as vertical lines).
  function showMarkers(list) {
    if (list.length === markers.length) return;
    markers = list;
    const ol = $("marker-list");
    ol.replaceChildren(...markers.map((mk) => {
      const li = document.createElement("li");
      li.textContent = `${L.hms(mk.ride_s)} ${mk.label}`;
      return li;
    }));
    ol.hidden = !markers.length;
  }

  // --- the connection ---------------------------------------------------------------------------
  function finish(state, text) {  // the page's connection is over for good
    over = state;
    if (source) source.close();
    L.showState($("state"), state, text);
    document.body.className = "ended";
  }

  function connect() {
    // A reconnect resumes with Last-Event-ID. Each snapshot (at most one a second) brings the
    // numbers and the chart points this connection has not had; with chart_reset (the first
    // one, and after a device's late samples were placed) the whole chart, drawn anew.
    source = new EventSource(cfg.metrics_url);
    source.addEventListener("metrics", (ev) => {
      const m = JSON.parse(ev.data);
      latest = m;
      lost = m.connected === false;
      showMetrics(m);
      if (m.markers) showMarkers(m.markers);
      if (m.chart_reset) samples.length = 0;  // the whole chart: late samples were placed in it
      for (const [t, power, hr] of m.chart || []) {
        if (!samples.length || t > samples[samples.length - 1].t) samples.push({ t, power, hr });
      }
      showState();
    });
    source.addEventListener("deleted", () => finish("deleted", "the stream was deleted"));
    source.addEventListener("forbidden", () => finish("revoked", "access revoked"));
    source.addEventListener("shutdown", () => L.showState($("state"), "reconnecting", "server restarting, reconnecting…"));
    source.addEventListener("overflow", () => L.showState($("state"), "reconnecting", "catching up…"));
    source.addEventListener("failed", () => { lost = true; showState(); });
    source.onerror = () => {
      if (over) return;
      lost = true;  // the browser retries by itself (CONNECTING); CLOSED: a final answer
      if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 3000); }
      showState();
    };
    source.onopen = () => { lost = false; showState(); };
  }

  // --- the chart ------------------------------------------------------------------------------
  // The power scale's gridlines carry the heart-rate labels too: the HR scale is chosen so
  // that each gridline is a round number of bpm on both axes.
  function scales(maxPowerSeen, ftp) {
    const want = Math.max(ftp ? ftp * 1.6 : 400, maxPowerSeen) * 1.05;
    const step = want > 1000 ? 200 : 100, lines = Math.ceil(want / step);
    const hrStep = Math.ceil(180 / lines / 10) * 10;
    return { step, lines, maxPower: lines * step, hrLow: 40, hrStep, maxHr: 40 + lines * hrStep };
  }

  function draw() {
    const canvas = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    // Ride time: the first 5 minutes fill the chart from the left, then it scrolls.
    const end = Math.max(WINDOW_S, samples.length ? samples[samples.length - 1].t : 0), start = end - WINDOW_S;
    while (samples.length && samples[0].t < start) samples.shift();
    put("count", samples.length);
    const ftp = latest && latest.ftp;
    const s = scales(Math.max(0, ...samples.map((p) => p.power ?? 0)), ftp);
    const left = 46, right = 40, top = 18, bottom = 24;
    const pw = w - left - right, ph = h - top - bottom;
    const x = (t) => left + ((t - start) / WINDOW_S) * pw;
    const yp = (v) => top + ph - Math.min(v / s.maxPower, 1) * ph;
    const yh = (v) => top + ph - Math.min(Math.max(v - s.hrLow, 0) / (s.maxHr - s.hrLow), 1) * ph;
    ctx.font = "11px system-ui, sans-serif";
    if (ftp) {  // the power zones of the FTP
      for (const [lo, hi, label, color] of ZONES) {
        const y0 = yp(lo * ftp), y1 = yp(Math.min(hi * ftp, s.maxPower));
        if (y1 >= y0) continue;
        ctx.fillStyle = color; ctx.fillRect(left, y1, pw, y0 - y1);
        if (y0 - y1 >= 13) {  // a label where the band has room for it
          ctx.fillStyle = "#8b949e"; ctx.textAlign = "left"; ctx.fillText(label, left + 4, (y0 + y1) / 2 + 4);
        }
      }
    }
    ctx.strokeStyle = "#2a2f36"; ctx.fillStyle = "#8b949e"; ctx.lineWidth = 1;
    ctx.textAlign = "center";
    for (let t = Math.ceil(start / 60) * 60; t <= end; t += 60) {  // the time axis: ride time, each minute
      const gx = x(t);
      ctx.beginPath(); ctx.moveTo(gx, top); ctx.lineTo(gx, top + ph); ctx.stroke();
      ctx.fillText(L.hms(t), gx, h - 7);
    }
    for (let i = 0; i <= s.lines; i++) {  // gridlines: watts on the left, bpm on the right
      const gy = yp(i * s.step);
      ctx.beginPath(); ctx.moveTo(left, gy); ctx.lineTo(left + pw, gy); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillStyle = "#c7a14a"; ctx.fillText(`${i * s.step}`, left - 5, gy + 4);
      ctx.textAlign = "left"; ctx.fillStyle = "#d0606f"; ctx.fillText(`${s.hrLow + i * s.hrStep}`, left + pw + 5, gy + 4);
    }
    ctx.textAlign = "right"; ctx.fillStyle = "#c7a14a"; ctx.fillText("W", left - 5, 11);
    ctx.textAlign = "left"; ctx.fillStyle = "#d0606f"; ctx.fillText("bpm", left + pw + 5, 11);
    // A line per run of samples; the runs drawn ([first t, last t] each) are left on the
    // canvas (data-power, data-hr) for the page's browser test.
    const series = (key, y, color) => {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      let pen = false, last = -Infinity;
      const runs = [];
      for (const p of samples) {
        if (p[key] === null || p.t - last > GAP_S) pen = false;  // dropouts and gaps stay gaps
        last = p.t;
        if (p[key] === null) continue;
        pen ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]));
        pen ? (runs[runs.length - 1][1] = p.t) : runs.push([p.t, p.t]);
        pen = true;
      }
      ctx.stroke();
      canvas.dataset[key] = JSON.stringify(runs);
    };
    series("power", yp, "#ffb000");
    series("hr", yh, "#ff4d6d");
    // Markers: a vertical line at their ride second, the label at its top. What was drawn is
    // left on the canvas (data-markers) for the page's browser test.
    const drawn = [];
    ctx.strokeStyle = MARKER_COLOR; ctx.fillStyle = MARKER_COLOR; ctx.lineWidth = 2; ctx.textAlign = "left";
    for (const mk of markers) {
      if (mk.ride_s < start || mk.ride_s > end) continue;
      const mx = Math.round(x(mk.ride_s));
      ctx.beginPath(); ctx.moveTo(mx, top); ctx.lineTo(mx, top + ph); ctx.stroke();
      ctx.fillText(mk.label, mx + 3, top + 10);
      drawn.push({ label: mk.label, x: mx, top, bottom: top + ph });
    }
    canvas.dataset.markers = JSON.stringify(drawn);
  }

  connect();
  draw();
  setInterval(() => { draw(); if (!over) showState(); }, 500);
  window.addEventListener("resize", draw);
})();
