// What the coach's pages share (the front page, /live/<name>, /live/?streams=): how numbers,
// durations and zones are shown, a ride's state (docs/rides.md) and its badge, and the
// page's settings (a json_script block).
window.Live = (() => {
  const round = (v, digits = 0) => v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
  const hms = (s) => {
    if (s === null || s === undefined) return "–";
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
  };
  const ago = (ms) => {  // how long since the epoch ms time ``ms``: "12 s", "4:05", "1:02:03"
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return s < 60 ? `${s} s` : hms(s).replace(/^0:/, "");
  };
  const config = (id = "page-config") => JSON.parse(document.getElementById(id).textContent);

  // Coggan's power zones (of FTP) and heart-rate zones (of max HR): [upper bound, name].
  const POWER_ZONES = [[.55, "Z1"], [.75, "Z2"], [.90, "Z3"], [1.05, "Z4"], [1.20, "Z5"], [1.50, "Z6"], [Infinity, "Z7"]];
  const HR_ZONES = [[.60, "Z1"], [.70, "Z2"], [.80, "Z3"], [.90, "Z4"], [Infinity, "Z5"]];
  const zoneOf = (zones, fraction) => fraction === null ? null : zones.find(([upper]) => fraction < upper)[1];
  const fraction = (value, of) => value === null || value === undefined || !of ? null : value / of;
  const powerZone = (m) => zoneOf(POWER_ZONES, fraction(m.power_3s, m.ftp));
  const hrZone = (m) => zoneOf(HR_ZONES, fraction(m.heart_rate, m.max_heart_rate));
  const percentFtp = (m) => { const f = fraction(m.power_3s, m.ftp); return f === null ? null : f * 100; };
  const wattsPerKg = (m) => fraction(m.power_3s, m.weight_kg);

  // A ride's state is the server's (docs/rides.md: one definition, the snapshot's and the rides
  // list's "state"); the page adds only "lost", its own connection or the server's Redis down.
  const STATE_TEXT = { waiting: "waiting for data", live: "live", stale: "no data", ended: "ended", deleted: "deleted", lost: "connection lost" };
  const lastEntryMs = (m) => m.last_entry_ms ?? (m.last_id ? Number(m.last_id.split("-")[0]) : null);
  const rideState = (m) => m.connected === false ? "lost" : m.state || "waiting";
  const endedText = (reason) => reason === "idle" ? "ended (idle)" : reason === "owner" ? "ended by the rider" : "ended";
  const stateText = (state, m = {}) => {
    if (state === "ended") return endedText(m.ended_reason);
    if (state === "stale") {
      const last = lastEntryMs(m);
      return last ? `no data for ${ago(last)}` : "no data";
    }
    return STATE_TEXT[state] || state;
  };

  // The badge: its text, and data-state / class for styles and tests.
  const showState = (el, key, text) => { el.textContent = text ?? STATE_TEXT[key] ?? key; el.dataset.state = key; el.className = "state " + key; };

  return { round, hms, ago, config, powerZone, hrZone, percentFtp, wattsPerKg, lastEntryMs, rideState, stateText, showState };
})();
