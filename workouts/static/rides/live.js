// What the live page (/live/<name>) and the group view (/live/?streams=) share: how numbers
// and durations are shown, and the connection-state badge.
window.Live = (() => {
  const round = (v, digits = 0) => v === null || v === undefined ? "–" : Number(v).toFixed(digits);
  const hms = (s) => {
    if (s === null || s === undefined) return "–";
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
  };
  // The badge (#state): its text, and data-state / class for styles and tests.
  const showState = (el, key, text) => { el.textContent = text; el.dataset.state = key; el.className = "state " + key; };
  return { round, hms, showState };
})();
