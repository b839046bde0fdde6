// The front page (/): the rides the viewer may read (GET /api/rides, again every 10 s), their
// live numbers from one multi-stream metrics SSE, and the hand-off to the group view.
(() => {
  const L = window.Live, cfg = L.config();
  const $ = (id) => document.getElementById(id);
  const body = $("rides").querySelector("tbody");
  const LIST_EVERY_MS = 10000;
  let rides = [], metrics = {}, picked = new Set(), source = null, followed = "";

  async function fetchRides() {
    const response = await fetch(cfg.rides_url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`rides list: ${response.status}`);
    return (await response.json()).rides;
  }

  // What a row shows: the live snapshot when there is one, else the list's own fields.
  function view(ride) {
    const m = metrics[ride.name], v = { ...ride, ...(m || {}), name: ride.name, owner: ride.owner, ftp: m?.ftp ?? ride.ftp };
    return v;
  }
  const elapsed = (v) => v.elapsed_s ?? (v.started_ms && v.last_entry_ms ? (v.last_entry_ms - v.started_ms) / 1000 : null);

  function cell(tr, cls, label, text) {
    const td = document.createElement("td");
    td.className = cls;
    if (label) td.dataset.label = label;  // the phone layout's caption
    if (text !== undefined) td.textContent = text;
    tr.append(td);
    return td;
  }

  function row(ride) {
    const tr = document.createElement("tr");
    tr.dataset.stream = ride.name;
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = ride.name; box.checked = picked.has(ride.name);
    box.setAttribute("aria-label", `pick ${ride.name}`);
    cell(tr, "pick").append(box);
    cell(tr, "rider", "rider", ride.owner || "—");
    const link = document.createElement("a");
    link.href = cfg.live_url.replace("NAME", encodeURIComponent(ride.name)); link.textContent = ride.name;
    cell(tr, "stream", "stream").append(link);
    const status = cell(tr, "status", "state");
    status.append(document.createElement("span"));
    if (ride.workout_id) {  // an ended ride, archived: its workout
      const workout = document.createElement("a");
      workout.className = "workout"; workout.href = `/workouts/${ride.workout_id}`; workout.textContent = "workout";
      status.append(" ", workout);
    }
    cell(tr, "num elapsed", "elapsed");
    cell(tr, "num power p3s big", "3 s power (W)");
    cell(tr, "num pftp", "% FTP");
    fill(tr, ride);
    return tr;
  }

  function fill(tr, ride) {
    const v = view(ride), state = L.rideState(v);
    tr.className = "ride " + state;
    L.showState(tr.querySelector(".status span"), state, L.stateText(state, v));
    tr.querySelector(".elapsed").textContent = L.hms(elapsed(v));
    const live = state === "live";
    tr.querySelector(".p3s").textContent = live ? L.round(v.power_3s) : "–";
    const pftp = tr.querySelector(".pftp");
    pftp.textContent = live ? L.round(L.percentFtp(v)) : "–";
    pftp.dataset.zone = (live && L.powerZone(v)) || "";
  }

  function render() {
    const rows = rides.map(row);
    body.replaceChildren(...rows);
    $("rides").hidden = rides.length === 0;
    $("empty").hidden = rides.length !== 0;
    for (const name of [...picked]) if (!rides.some((r) => r.name === name)) picked.delete(name);
    showPicked();
  }

  function showPicked() {
    const n = picked.size;
    $("open-group").disabled = n === 0;
    $("picked").textContent = n ? `${n} picked` : "tick riders to follow them side by side";
  }

  // One metrics connection for the listed rides still going on (at most SSE_MAX_STREAMS).
  function follow() {
    const names = rides.filter((r) => r.state !== "ended").map((r) => r.name).slice(0, cfg.max_streams).join(",");
    if (names === followed) return;
    if (source) source.close();
    source = null; followed = names;
    if (!names) return;
    source = new EventSource(`${cfg.metrics_url}?streams=${encodeURIComponent(names)}`);
    source.addEventListener("metrics", (ev) => {
      const m = JSON.parse(ev.data);
      metrics[m.name] = m;
      const ride = rides.find((r) => r.name === m.name), tr = body.querySelector(`tr[data-stream="${CSS.escape(m.name)}"]`);
      if (ride && tr) fill(tr, ride);
    });
    source.onerror = () => source && source.readyState !== EventSource.CLOSED && L.showState($("state"), "lost", "connection lost, reconnecting…");
    source.onopen = () => showListed();
  }

  function showListed() {
    const going = rides.filter((r) => r.state !== "ended").length;
    L.showState($("state"), "live", going ? `${going} going on` : "up to date");
  }

  async function relist() {
    try {
      rides = await fetchRides();
      render();
      follow();
      showListed();
    } catch (err) {
      L.showState($("state"), "lost", "connection lost, retrying…");
    }
  }

  body.addEventListener("change", (ev) => {
    if (ev.target.type !== "checkbox") return;
    ev.target.checked ? picked.add(ev.target.value) : picked.delete(ev.target.value);
    showPicked();
  });
  $("group-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!picked.size) return;
    window.location.href = `${cfg.group_url}?streams=${[...picked].map(encodeURIComponent).join(",")}`;
  });
  relist();
  setInterval(relist, LIST_EVERY_MS);
  setInterval(() => { for (const tr of body.rows) { const ride = rides.find((r) => r.name === tr.dataset.stream); if (ride) fill(tr, ride); } }, 1000);
})();
