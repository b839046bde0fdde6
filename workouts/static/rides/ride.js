// /ride/: the athlete's publisher. Bluetooth sensors give the current values (gatt.js decodes
// their measurements); once a second (config.sample_ms of page time) they become one entry
// with the sample's own time ``t`` (Unix seconds, ms), put in the outbox (ride_queue.js) and
// sent, oldest first, over the stream's WebSocket in array frames of up to 1,000 entries. One
// frame is in flight at a time; its entries leave the outbox only when the server
// acknowledged it ({"ids": [...]}). After every (re)connect the stream's last stored ``t`` is
// read first and whatever is not after it leaves the outbox unsent (an ack lost with the
// connection): nothing is sent twice.
(() => {
  const config = Live.config();
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "streamsite.ride.token", STREAM_KEY = "streamsite.ride.stream";
  const ENDING_KEY = "streamsite.ride.ending";  // the stream whose end waits (kept over a reload)
  const OUTBOX_LIMIT = 6 * 3600;  // 6 hours at one sample a second
  const BATCH = 1000;  // entries per frame: one publish
  const FRESH_MS = 5000;  // a sensor value older than this is not sent
  const STOPPED_MS = 3000;  // no crank or wheel event for this long: 0 rpm, 0 m/s
  const WHEEL_M = 2.105;  // wheel circumference, 700x25c
  const BACKOFF_MS = [1000, 2000, 5000, 10000, 30000];
  const SENSOR_RETRY_MS = 3000;
  const FINAL_CLOSES = new Set([4400, 4401, 4403, 4404]);  // refusals a retry does not mend
  const SPEEDUP = 1000 / config.sample_ms;  // ride seconds per second of page time: 1 but in tests

  // ---------- who publishes: the session, or an API token kept in this browser ----------
  const token = () => (config.session ? null : localStorage.getItem(TOKEN_KEY));
  const say = (text) => { $("message").textContent = text; $("message").hidden = !text; };
  const samplesText = (n) => `${n} sample${n === 1 ? "" : "s"}`;
  const detailOf = (answer) => answer.data.detail || `the server answered ${answer.status}`;
  const streamUrl = (name) => config.stream_url.replace("NAME", encodeURIComponent(name));

  const api = async (method, path, body, bearer = token()) => {
    const headers = { Accept: "application/json" };
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    else if (method !== "GET") headers["X-CSRFToken"] = config.csrf_token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, data: await response.json().catch(() => ({})) };
  };

  const showWho = () => {
    if (config.session) return;
    $("token-missing").hidden = Boolean(token());
    $("token-saved").hidden = !token();
  };

  const useToken = async (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    const answer = await api("GET", "/api/streams?limit=1", undefined, value);
    if (answer.status === 401) return say("That API token is not valid.");
    localStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    say("");
    showWho();
  };

  // ---------- sensors: the latest value of each channel from each source ----------
  // Which sensor a channel takes when several give it: the dedicated one first.
  const SOURCES = {
    power: ["power", "trainer"], cadence: ["power", "csc", "trainer"],
    heart_rate: ["heart", "trainer"], speed: ["csc", "trainer", "power"],
  };
  const values = {};  // "channel/source" → {value, at}
  const lastRevolutions = {};  // "source/crank|wheel" → {reading, at}: the last revolution event

  const setValue = (channel, source, value) => { values[`${channel}/${source}`] = { value, at: Date.now() }; };

  const current = (channel) => {
    for (const source of SOURCES[channel]) {
      const v = values[`${channel}/${source}`];
      if (v && Date.now() - v.at < FRESH_MS) return v.value;
    }
    return null;
  };

  // A cumulative crank or wheel counter → ``channel`` = revolutions a second × ``perRev``; 0
  // once no new revolution event came for STOPPED_MS (coasting, stopped).
  const fromRevolutions = (source, kind, reading, channel, perRev) => {
    if (!reading) return;
    const key = `${source}/${kind}`, last = lastRevolutions[key];
    const rate = Gatt.revolutionRate(last?.reading, reading);
    if (rate !== null || !last) lastRevolutions[key] = { reading, at: Date.now() };
    if (rate !== null) setValue(channel, source, rate * perRev);
    else if (last && Date.now() - last.at > STOPPED_MS) setValue(channel, source, 0);
  };

  const readPower = (view) => {
    const m = Gatt.cyclingPower(view);
    setValue("power", "power", m.power);
    fromRevolutions("power", "crank", m.crank, "cadence", 60);
    fromRevolutions("power", "wheel", m.wheel, "speed", WHEEL_M);
  };
  const readHeart = (view) => setValue("heart_rate", "heart", Gatt.heartRate(view).heart_rate);
  const readTrainer = (view) => {
    for (const [channel, value] of Object.entries(Gatt.indoorBikeData(view))) setValue(channel, "trainer", value);
  };
  const readCsc = (view) => {
    const m = Gatt.cscMeasurement(view);
    fromRevolutions("csc", "wheel", m.wheel, "speed", WHEEL_M);
    fromRevolutions("csc", "crank", m.crank, "cadence", 60);
  };

  const SENSORS = {  // GATT service, its measurement characteristic, the reader of its notifications
    power: { service: 0x1818, characteristic: 0x2a63, read: readPower },
    heart: { service: 0x180d, characteristic: 0x2a37, read: readHeart },
    trainer: { service: 0x1826, characteristic: 0x2ad2, read: readTrainer },
    csc: { service: 0x1816, characteristic: 0x2a5b, read: readCsc },
  };

  const sensorRow = (key) => document.querySelector(`[data-sensor="${key}"]`);
  const showSensor = (key, state, text) => {
    const row = sensorRow(key);
    row.dataset.state = state;
    row.querySelector(".sensor-state").textContent = text;
  };

  // Notifications of ``key``'s measurement from ``device``, its GATT server (re)connected.
  const subscribe = async (key, device) => {
    const { service, characteristic, read } = SENSORS[key];
    const gatt = await device.gatt.connect();
    const measurement = await (await gatt.getPrimaryService(service)).getCharacteristic(characteristic);
    measurement.addEventListener("characteristicvaluechanged", (event) => read(event.target.value));
    await measurement.startNotifications();
    showSensor(key, "connected", device.name || "connected");
  };

  // A sensor that drops out (out of range, asleep) is connected again, every SENSOR_RETRY_MS.
  const resubscribe = (key, device) => {
    showSensor(key, "lost", `${device.name || "the device"} disconnected: reconnecting…`);
    setTimeout(() => subscribe(key, device).catch(() => resubscribe(key, device)), SENSOR_RETRY_MS);
  };

  const connectSensor = async (key) => {
    try {
      showSensor(key, "connecting", "choose the device…");
      const device = await navigator.bluetooth.requestDevice({ filters: [{ services: [SENSORS[key].service] }] });
      showSensor(key, "connecting", `connecting to ${device.name || "the device"}…`);
      device.addEventListener("gattserverdisconnected", () => resubscribe(key, device));
      await subscribe(key, device);
    } catch (err) {
      showSensor(key, "error", err.name === "NotFoundError" ? "no device chosen" : `failed: ${err.message}`);
    }
  };

  // ---------- the ride: a sample a second into the outbox ----------
  // {name, queue, startedMs, firstT, lastT, distance, sent, ended, ending, endPending, finishing,
  //  endRetry (the timer of an end tried again), holdUntil (no frame before: a refusal's pause)}
  let ride = null;

  const rideTime = () => Math.round(ride.startedMs + (Date.now() - ride.startedMs) * SPEEDUP) / 1000;
  const ROUNDING = { power: 0, cadence: 1, heart_rate: 0, speed: 3 };
  const roundTo = (value, digits) => Number(value.toFixed(digits));

  // The entry of this second: its time and the channels a sensor gives now; null without any.
  const takeSample = () => {
    const entry = { t: rideTime() };
    for (const channel of Object.keys(SOURCES)) {
      const value = current(channel);
      if (value !== null) entry[channel] = roundTo(value, ROUNDING[channel]);
    }
    if (Object.keys(entry).length === 1) return null;
    if (entry.speed !== undefined && ride.lastT !== null) ride.distance += entry.speed * (entry.t - ride.lastT);
    if (entry.speed !== undefined) entry.distance = roundTo(ride.distance, 1);
    ride.firstT ??= entry.t;
    ride.lastT = entry.t;
    return entry;
  };

  const showValues = () => {
    const shown = (channel, scale = 1, digits = 0) => {
      const value = current(channel);
      $(channel).textContent = value === null ? "–" : (value * scale).toFixed(digits);
    };
    shown("power"); shown("cadence"); shown("heart_rate"); shown("speed", 3.6, 1);
    if (ride?.lastT != null) {
      $("distance").textContent = (ride.distance / 1000).toFixed(2);
      $("elapsed").textContent = Live.hms(ride.lastT - ride.firstT);
    }
  };

  const tick = async () => {
    showValues();
    if (!ride || ride.ended || ride.ending) return;
    const entry = takeSample();
    if (!entry) return;
    const taking = ride, item = await taking.queue.add(entry);
    if (taking.ended) return taking.queue.remove([item]);  // the ride stopped meanwhile: not part of it
    $("last-entry").textContent = JSON.stringify(entry);
    showQueue();
    pump();
  };

  // ---------- the connection: the stream's WebSocket, one frame in flight ----------
  let socket = null, ready = null, inFlight = null, attempts = 0, retryTimer = null, refusal = null;
  const CONNECTION_TEXT = {
    idle: "not riding", connecting: "connecting…", syncing: "catching up…", live: "live",
    reconnecting: "reconnecting…", offline: "offline", refused: "refused", ended: "ended",
  };

  const showConnection = (state) => {
    Live.showState($("state"), state, CONNECTION_TEXT[state]);
    $("connection").textContent = CONNECTION_TEXT[state];
  };

  const showQueue = () => {
    $("queued").textContent = ride.queue.size + (ride.queue.dropped ? ` (${ride.queue.dropped} oldest dropped)` : "");
    $("sent").textContent = ride.sent;
  };

  // The stream's socket. Its owner reads the stream too, so the server echoes the entries:
  // ``rate=0.01`` keeps that to one frame in 100 s (a phone's data plan). A session proves
  // its CSRF token, as a REST write does.
  const socketUrl = (name) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ rate: "0.01" });
    if (!token()) query.set("csrf", config.csrf_token);
    return `${scheme}//${location.host}${config.ws_path.replace("NAME", encodeURIComponent(name))}?${query}`;
  };

  const connect = () => {
    clearTimeout(retryTimer);
    if (!ride || ride.ended) return;
    if (!navigator.onLine) return showConnection("offline");  // the "online" event connects
    showConnection(attempts ? "reconnecting" : "connecting");
    refusal = null;
    const ws = token() ? new WebSocket(socketUrl(ride.name), ["streamsite.token", token()]) : new WebSocket(socketUrl(ride.name));
    socket = ws;
    ws.onopen = () => synchronize(ws);
    ws.onmessage = (event) => onFrame(ws, JSON.parse(event.data));
    ws.onclose = (event) => onClosed(ws, event);
  };

  const onClosed = (ws, event) => {
    if (ws !== socket) return;
    if (FINAL_CLOSES.has(event.code) && ride && !ride.ended) return rideRefused(refusal || `the connection closed with code ${event.code}`);
    connectionLost();
  };

  // The socket is gone (closed, or the network with it): forget it, try again after a backoff.
  const connectionLost = () => {
    socket = ready = inFlight = null;
    if (!ride || ride.ended) return;
    attempts += 1;
    showConnection(navigator.onLine ? "reconnecting" : "offline");
    retryTimer = setTimeout(connect, BACKOFF_MS[Math.min(attempts, BACKOFF_MS.length) - 1]);
  };

  // Offline: the socket cannot deliver, whether or not its close completes; queue meanwhile.
  const wentOffline = () => {
    const ws = socket;
    if (!ws) return;
    connectionLost();
    ws.close();
  };

  // The ``t`` of the stream's last sample (-Infinity for an empty stream). The last entry may
  // be a marker without ``t``: then the greatest ``t`` of the minute before it.
  const lastStoredTime = async (name) => {
    const info = await api("GET", streamUrl(name));
    if (info.status !== 200) throw new Error(detailOf(info));
    if (!info.data.last_id) return -Infinity;
    const last = await readTimes(name, info.data.last_id, 1);
    if (last.length) return last[0];
    const before = Number(info.data.last_id.split("-")[0]) - 60000;
    return Math.max(-Infinity, ...(await readTimes(name, String(Math.max(0, before)), 1000)));
  };

  const readTimes = async (name, start, count) => {
    const answer = await api("GET", `${streamUrl(name)}/events?start=${start}&count=${count}`);
    if (answer.status !== 200) throw new Error(detailOf(answer));
    return answer.data.events.map((e) => Number(e.data.t)).filter((t) => !Number.isNaN(t));
  };

  const synchronize = async (ws) => {
    showConnection("syncing");
    try {
      ride.queue.dropUpTo(await lastStoredTime(ride.name));
    } catch (err) {
      say(`Could not read the stream's last entry (${err.message}): trying again.`);
      ws.close();
      return;
    }
    if (ws !== socket) return;
    ready = ws;
    attempts = 0;
    showConnection("live");
    showQueue();
    if (ride.endPending && !ride.queue.size) return endWhenDrained();  // what it waited for was stored already
    pump();
  };

  const pump = () => {
    if (!ride || !ready || ready !== socket || inFlight || !ride.queue.size || Date.now() < ride.holdUntil) return;
    const [items, text] = nextFrame();
    inFlight = items;
    socket.send(text);
  };

  // The oldest entries as one frame: at most BATCH, and halved until the frame fits the
  // server's limit (STREAMS_MAX_BODY, the page's max_frame_bytes), so a long back-fill is never
  // refused for its size.
  const nextFrame = () => {
    let items = ride.queue.head(BATCH), text = JSON.stringify(items.map((item) => item.entry));
    while (items.length > 1 && new Blob([text]).size > config.max_frame_bytes) {
      items = items.slice(0, Math.ceil(items.length / 2));
      text = JSON.stringify(items.map((item) => item.entry));
    }
    return [items, text];
  };

  const acknowledged = () => {
    ride.queue.remove(inFlight);
    ride.sent += inFlight.length;
    inFlight = null;
    showQueue();
    if (ride.endPending && !ride.queue.size) return endWhenDrained();  // the end waited for these
    pump();
  };

  // An error frame: the frame in flight was not stored; it goes again after a pause, unless
  // the server says sending it again cannot mend it (``final``).
  const refused = (frame) => {
    say(frame.error);
    if (!ready) refusal = frame.error;  // a refusal at connect: this frame, then a 44xx close
    const publishing = inFlight !== null;
    inFlight = null;
    if (frame.state === "ended") {  // ended elsewhere, or by the server after RIDE_IDLE_END without data
      const unsent = ride.queue.size;
      rideEnded();
      if (unsent) say(`${frame.error} — ${samplesText(unsent)} not stored yet could not be stored.`);
      return;
    }
    if (frame.final) return rideRefused(frame.error);
    if (!publishing) return;  // at connect: the close that follows says what to do
    const pause = 1000 * (frame.retry_after || 5);
    ride.holdUntil = Date.now() + pause;
    setTimeout(pump, pause);
  };

  const onFrame = (ws, frame) => {
    if (ws !== socket || Array.isArray(frame) || frame.id) return;  // an entry echoed (socketUrl)
    if (frame.ids && inFlight) {  // stored (an error beside it: stored, not yet replicated)
      if (frame.error) say(frame.error);
      return acknowledged();
    }
    if (frame.error) return refused(frame);
    if (frame.event === "forbidden" || frame.event === "deleted") refusal = frame.detail;  // then a 4403 or 1000 close
  };

  // ---------- start and end ----------
  const ensureStream = async (name) => {
    const info = await api("GET", streamUrl(name));
    if (info.status === 200) return;  // a stream of someone else's: the first publish says so
    if (info.status !== 404) throw new Error(detailOf(info));
    const created = await api("PUT", streamUrl(name), { visibility: "private" });
    if (created.status !== 201 && created.status !== 200) throw new Error(detailOf(created));
  };

  const startRide = async (event) => {
    event.preventDefault();
    if (!config.session && !token()) return say("Sign in, or paste an API token, to publish.");
    const name = $("stream-name").value.trim();
    $("start").disabled = true;
    try {
      await ensureStream(name);
    } catch (err) {
      $("start").disabled = false;
      return say(`Cannot ride on ${name}: ${err.message}`);
    }
    say("");
    localStorage.setItem(STREAM_KEY, name);
    await beginRide(name, false);
    $("end").disabled = false;
    keepAwake();
    connect();
  };

  // The ride on ``name`` with what its outbox kept; ``ending``: its end waits (after a reload).
  const beginRide = async (name, ending) => {
    const queue = await RideQueue.open(name, OUTBOX_LIMIT);
    ride = { name, queue, startedMs: Date.now(), firstT: null, lastT: null, distance: 0, sent: 0, ended: false, ending, endPending: ending, finishing: false, endRetry: null, holdUntil: 0 };
    $("start").disabled = true;
    $("stream-name").value = name;
    $("stream-name").disabled = true;
    $("watch").href = config.live_url.replace("NAME", encodeURIComponent(name));
    $("watch").hidden = false;
    showQueue();
  };

  // A reload (or a new visit) while an end waited: no sampling, the outbox goes, then the end.
  const resumeEnd = async () => {
    const name = localStorage.getItem(ENDING_KEY);
    if (!name || name !== localStorage.getItem(STREAM_KEY) || (!config.session && !token())) return;
    await beginRide(name, true);
    say(`The end of ${name} was waiting: ` + (ride.queue.size ? `${samplesText(ride.queue.size)} go first, then the ride ends.` : "the ride ends."));
    showEndButton();
    connect();
  };

  // A phone that dims its screen also slows the page's timers: hold a screen wake lock while
  // riding (where the browser has one), again whenever the page is shown.
  const keepAwake = () => {
    if (ride && !ride.ended && document.visibilityState === "visible") navigator.wakeLock?.request("screen").catch(() => {});
  };

  // Until what was taken is stored: the frame in flight and, while connected, the rest of the
  // outbox (at most ``ms``).
  const drained = async (ms = 5000) => {
    const until = Date.now() + ms;
    while ((inFlight || (ready && ready === socket && ride.queue.size)) && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  // "end ride": no sample after the click, and the ride ends once what was taken is stored.
  // When the outbox cannot drain now (offline) the end waits and happens by itself (``endWhenDrained``,
  // on every acknowledgement and reconnect); "end now, without them" drops what waits. An end
  // the server cannot be reached for is tried again; sampling stays stopped meanwhile.
  const endRide = async () => {
    if (ride.endPending) return endNow();
    ride.ending = true;
    $("end").disabled = true;  // no second click while the outbox drains
    await drained();
    if (!ride.queue.size) return finishEnd();
    endWaits();
    say(`${samplesText(ride.queue.size)} wait for the connection: the ride ends once they are stored. ` +
        `Press "end now, without them" to end without them.`);
    // The other choice shows a second later: a double tap does not drop the samples.
    setTimeout(showEndButton, 1000);
  };

  const endWaits = () => {
    ride.endPending = true;
    localStorage.setItem(ENDING_KEY, ride.name);
  };

  const showEndButton = () => {
    if (!ride || ride.ended || ride.finishing) return;
    $("end").textContent = ride.endPending && ride.queue.size ? "end now, without them" : "end ride";
    $("end").disabled = false;
  };

  const endNow = () => {
    ride.queue.remove(ride.queue.head(ride.queue.size));
    showQueue();
    return finishEnd();
  };

  const endWhenDrained = () => {
    if (ride && ride.endPending && !ride.ended && !ride.queue.size && !inFlight) finishEnd();
  };

  const finishEnd = async () => {
    if (ride.finishing || ride.ended) return;
    ride.finishing = true;
    $("end").disabled = true;
    clearTimeout(ride.endRetry);
    const answer = await api("POST", `${streamUrl(ride.name)}/end`)
      .catch((err) => ({ status: 0, data: { detail: `no connection (${err.message})` } }));
    ride.finishing = false;
    if (answer.status === 200) {
      say("Ride ended: it becomes a workout.");
      return rideEnded();
    }
    if (answer.status === 0 || answer.status === 429 || answer.status >= 500) {  // try again
      endWaits();
      ride.endRetry = setTimeout(endWhenDrained, 5000);
      showEndButton();
      return say(`The ride ends once the server is reached (${detailOf(answer)}); samples are no longer taken.`);
    }
    ride.ending = ride.endPending = false;  // refused: riding on, sampling again
    localStorage.removeItem(ENDING_KEY);
    showEndButton();
    return say(`Could not end the ride: ${detailOf(answer)}`);
  };

  const rideEnded = () => {
    ride.ended = true;
    clearTimeout(ride.endRetry);
    ride.queue.remove(ride.queue.head(ride.queue.size));
    localStorage.removeItem(STREAM_KEY);
    localStorage.removeItem(ENDING_KEY);
    socket?.close();
    showConnection("ended");
    showQueue();
    $("end").disabled = true;
    $("end").textContent = "end ride";
    $("start").disabled = false;
    $("stream-name").disabled = false;
    $("stream-name").value = freshName();
  };

  // A refusal that trying again cannot mend (a 44xx close at connect, or an error frame marked
  // ``final``: someone else's stream, a token without the publish scope): sampling stops and
  // nothing is tried again. The outbox stays in this browser under the stream's name: a ride
  // started on it again (with a token that may publish there) sends what waits first.
  const rideRefused = (message) => {
    const waiting = ride.queue.size, name = ride.name, ws = socket;
    ride.ended = true;
    clearTimeout(ride.endRetry);
    localStorage.removeItem(ENDING_KEY);
    socket = ready = inFlight = null;
    ws?.close();
    showConnection("refused");
    $("end").disabled = true;
    $("end").textContent = "end ride";
    $("start").disabled = false;
    $("stream-name").disabled = false;
    showQueue();
    say(`Refused by the server: ${message}. The ride stopped on this page` +
        (waiting ? `; ${samplesText(waiting)} taken wait in this browser and go first if you ride on ${name} again.` : ".") +
        " Check the stream's name and your sign-in (after signing in again elsewhere, reload this page).");
  };

  const freshName = () => {
    const d = new Date(), two = (n) => String(n).padStart(2, "0");
    return `ride-${d.getFullYear()}${two(d.getMonth() + 1)}${two(d.getDate())}-${two(d.getHours())}${two(d.getMinutes())}`;
  };

  // ---------- wiring ----------
  showWho();
  showConnection("idle");
  $("token-form")?.addEventListener("submit", useToken);
  $("forget-token")?.addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); showWho(); });
  $("stream-name").value = localStorage.getItem(STREAM_KEY) || freshName();
  $("ride-form").addEventListener("submit", startRide);
  $("end").addEventListener("click", endRide);
  $("no-bluetooth").hidden = Boolean(navigator.bluetooth);
  for (const key of Object.keys(SENSORS)) {
    const button = sensorRow(key).querySelector("button");
    button.disabled = !navigator.bluetooth;
    button.addEventListener("click", () => connectSensor(key));
  }
  window.addEventListener("offline", wentOffline);
  document.addEventListener("visibilitychange", keepAwake);
  window.addEventListener("online", () => { if (!socket) connect(); });
  setInterval(tick, config.sample_ms);
  resumeEnd();
})();
