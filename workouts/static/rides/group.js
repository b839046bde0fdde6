// The group view (/live/?streams=a,b): a row per rider from one multi-stream metrics SSE,
// with the ride's state, the zones as colours, and columns sorted by a click on their header.
(() => {
  const L = window.Live, cfg = L.config();
  const $ = (id) => document.getElementById(id);
  const rows = {}, latest = {};
  let lost = false, sortKey = null, sortDir = 1;
  for (const tr of document.querySelectorAll("#riders tr")) rows[tr.dataset.stream] = tr;

  const put = (tr, sel, text) => { tr.querySelector(sel).textContent = text; };
  // Under or over the target now (GET /api/metrics's rule): a rider who stopped is not.
  const offTarget = (m) => Boolean(m.plan) && ["under", "over"].includes(m.plan.state) && L.rideState(m) === "live";

  function fill(name) {
    const m = latest[name], tr = rows[name];
    if (!m || !tr) return;
    const state = lost ? "lost" : L.rideState(m);
    tr.className = state;
    L.showState(tr.querySelector(".status .state"), state, L.stateText(state, m));
    const current = state === "live";  // a stale or ended rider's 3 s power is no longer now
    put(tr, ".p3s", current ? L.round(m.power_3s) : "–");
    tr.querySelector(".pzone").textContent = current ? (L.powerZone(m) || "") : "";
    tr.querySelector(".pzone").dataset.zone = current ? (L.powerZone(m) || "") : "";
    put(tr, ".pftp", current ? L.round(L.percentFtp(m)) : "–");
    tr.querySelector(".pftp").dataset.zone = current ? (L.powerZone(m) || "") : "";
    put(tr, ".wkg", current ? L.round(L.wattsPerKg(m), 1) : "–");
    put(tr, ".np", L.round(m.normalized_power) + (m.np_low_confidence && m.normalized_power != null ? "*" : ""));
    put(tr, ".hr", current ? L.round(m.heart_rate) : "–");
    tr.querySelector(".hzone").textContent = current ? (L.hrZone(m) || "") : "";
    tr.querySelector(".hzone").dataset.zone = current ? (L.hrZone(m) || "") : "";
    put(tr, ".elapsed", L.hms(m.elapsed_s));
    showPlan(tr, m.plan, current);
    showAlerts(tr, state === "ended" ? [] : (m.alerts || []));
    showWorkout(tr, state === "ended" ? m.workout : null);
    if (state === "ended") showSummary(tr, m); else tr.querySelector(".status .summary").textContent = "";
  }

  // The plan's cell: % of target coloured by the state, the step and its target under it.
  function showPlan(tr, plan, current) {
    const cell = tr.querySelector(".plan");
    if (!plan) { cell.dataset.plan = ""; put(tr, ".plan .pct", "–"); put(tr, ".plan .step", ""); return; }
    cell.dataset.plan = current && plan.state ? plan.state : "";
    put(tr, ".plan .pct", current && plan.pct_of_target != null ? `${L.round(plan.pct_of_target)} %` : "–");
    const target = plan.target_w ? ` · ${plan.target_w[0]}-${plan.target_w[1]} W` : "";
    const step = plan.phase === "running" ? `${plan.step + 1}/${plan.steps} ${plan.step_name}${target}`
      : plan.phase === "before" ? "plan not started" : "plan done";
    const compliance = plan.session_compliance != null ? ` · ${Math.round(plan.session_compliance * 100)} % on target` : "";
    put(tr, ".plan .step", step + compliance);
  }

  const ALERT_TEXT = { w_prime_low: "W′ low", hr_high: "HR high", off_target: "off target", stale: "no data" };
  function showAlerts(tr, kinds) {
    tr.classList.toggle("alerting", kinds.length > 0);
    const box = tr.querySelector(".status .alerts");
    box.replaceChildren(...kinds.map((k) => Object.assign(document.createElement("span"),
      { className: "alert-chip", textContent: ALERT_TEXT[k] || k })));
  }

  // The session's header: the step most riders with a plan are in, and a countdown to the next
  // one that ticks between snapshots.
  let sessionAt = null;
  function showSession() {
    document.body.classList.toggle("with-plan", Object.values(latest).some((m) => m.plan));
    const running = Object.values(latest).map((m) => m.plan).filter((p) => p && p.phase === "running");
    const box = $("session");
    box.hidden = running.length === 0;
    if (!running.length) { sessionAt = null; return; }
    const counts = {};
    for (const p of running) counts[p.step] = (counts[p.step] || 0) + 1;
    const step = Number(Object.keys(counts).sort((a, b) => counts[b] - counts[a])[0]);
    const p = running.find((x) => x.step === step);
    sessionAt = { remaining: Math.min(...running.filter((x) => x.step === step).map((x) => x.step_remaining_s)), at: Date.now() };
    $("session-step").textContent = `${p.step + 1}/${p.steps} ${p.step_name}`;
    $("session-target").textContent = sessionTarget(Object.values(latest).filter((m) => m.plan && m.plan.step === step));
    const off = Object.values(latest).filter(offTarget).length;
    $("session-off").textContent = off ? `${off} off target` : "everyone on target";
    tickSession();
  }
  // The step's target for the header: in watts when every rider on it has the same, else in
  // % of FTP (riders with different FTPs have different watts for one "% FTP" step).
  function sessionTarget(riders) {
    const watts = riders.map((m) => m.plan.target_w).filter(Boolean);
    if (!watts.length) return "";
    if (watts.every((w) => w[0] === watts[0][0] && w[1] === watts[0][1])) return `${watts[0][0]}-${watts[0][1]} W`;
    const m = riders.find((x) => x.plan.target_w && x.ftp);
    return m ? `${Math.round(100 * m.plan.target_w[0] / m.ftp)}-${Math.round(100 * m.plan.target_w[1] / m.ftp)} % FTP` : "";
  }
  function tickSession() {
    if (!sessionAt) return;
    const left = Math.max(0, sessionAt.remaining - (Date.now() - sessionAt.at) / 1000);
    $("session-countdown").textContent = L.hms(left);
  }

  // An ended ride's summary in its state cell: duration, NP and TSS (the saved workout's once
  // archived), and a link to the workout.
  function showSummary(tr, m) {
    const w = m.workout || {};
    const np = w.normalized_power ?? m.normalized_power, tss = w.tss ?? m.tss;
    tr.querySelector(".status .summary").textContent =
      `${L.hms(w.duration_s ?? m.elapsed_s)} · NP ${L.round(np)} W · TSS ${L.round(tss)}`;
  }

  function showWorkout(tr, workout) {
    const link = tr.querySelector(".status .workout");
    link.hidden = !workout?.url;
    if (workout?.url) link.href = workout.url;
  }

  // Sorting: by the snapshot's value (derived ones computed), empty values last.
  const STATE_ORDER = { live: 0, stale: 1, waiting: 2, lost: 3, ended: 4 };
  function sortValue(name) {
    const m = latest[name] || {};
    if (sortKey === "name") return name;
    if (sortKey === "state") return STATE_ORDER[rows[name].className] ?? 5;
    if (sortKey === "pftp") return L.percentFtp(m);
    if (sortKey === "wkg") return L.wattsPerKg(m);
    if (sortKey === "off_target") {  // off target first, the furthest from its target first
      const p = m.plan;
      if (!p || p.pct_of_target == null) return null;
      return (offTarget(m) ? 1000 : 0) + Math.abs(p.pct_of_target - 100);
    }
    return m[sortKey] ?? null;
  }
  function sortRows() {
    if (!sortKey) return;
    const names = Object.keys(rows).sort((a, b) => {
      const x = sortValue(a), y = sortValue(b);
      if (x === y) return a.localeCompare(b);
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    $("riders").append(...names.map((n) => rows[n]));
  }
  for (const th of document.querySelectorAll("th.sortable")) {
    th.addEventListener("click", () => {
      sortDir = sortKey === th.dataset.sort ? -sortDir : (th.dataset.sort === "name" ? 1 : -1);
      sortKey = th.dataset.sort;
      for (const other of document.querySelectorAll("th.sortable")) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sortDir === 1 ? "ascending" : "descending");
      sortRows();
    });
  }

  function setLost(value) {
    lost = value;
    $("lost").hidden = !value;
    document.body.classList.toggle("lost", value);
    Object.keys(latest).forEach(fill);
  }
  const setState = (key, text) => L.showState($("state"), key, text);

  // One connection for every rider: the multi-stream metrics SSE resumes all of them.
  const es = new EventSource(cfg.metrics_url);
  es.onopen = () => { setLost(false); setState("live", "live"); };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) { setLost(true); setState("lost", "connection closed: reload the page"); return; }
    setLost(true); setState("lost", "connection lost, reconnecting…");
  };
  es.addEventListener("metrics", (ev) => {
    const m = JSON.parse(ev.data);
    if (!rows[m.name]) return;
    latest[m.name] = m;
    if (lost && m.connected !== false) setLost(false);
    fill(m.name);
    sortRows();
    showSession();
  });
  es.addEventListener("alert", (ev) => {  // raised or cleared: the next snapshot says which are up
    const a = JSON.parse(ev.data);
    const m = latest[a.stream];
    if (!m) return;
    const kinds = new Set(m.alerts || []);
    if (a.state === "raised") kinds.add(a.kind); else kinds.delete(a.kind);
    m.alerts = [...kinds];
    fill(a.stream);
  });
  es.addEventListener("deleted", (ev) => {
    const name = JSON.parse(ev.data).stream;
    if (!rows[name]) return;
    latest[name] = { ...(latest[name] || { name }), state: "deleted" };
    fill(name);
  });
  es.addEventListener("forbidden", () => { es.close(); setState("revoked", "access revoked"); });
  es.addEventListener("failed", () => setState("reconnecting", "the server failed, reconnecting…"));
  es.addEventListener("shutdown", () => setState("reconnecting", "server restarting, reconnecting…"));
  setInterval(() => { if (!lost) Object.keys(latest).forEach(fill); tickSession(); }, 1000);  // "no data for 12 s" ticks
})();
