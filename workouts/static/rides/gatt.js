// The GATT measurements /ride/ reads from Bluetooth sensors, decoded: pure functions of a
// DataView (little-endian, per the Bluetooth SIG's GATT specifications), no state, no DOM.
// Cumulative revolution counters become rates in ``revolutionRate`` from two readings.
// Loaded as a classic script (window.Gatt) and by Node (module.exports) alike.
(function (root) {
  // Cycling Power Measurement (service 0x1818, characteristic 0x2A63): flags (16 bits),
  // instantaneous power (sint16, W), then the optional fields the flags announce, in order.
  const CP_FIELDS_BEFORE_CRANK = [  // [flag bit, bytes] of the fields that may precede crank data
    [0x0001, 1],  // pedal power balance
    [0x0004, 2],  // accumulated torque
  ];
  const cyclingPower = (view) => {
    const flags = view.getUint16(0, true);
    const out = { power: view.getInt16(2, true), wheel: null, crank: null };
    let at = 4;
    for (const [bit, size] of CP_FIELDS_BEFORE_CRANK) if (flags & bit) at += size;
    if (flags & 0x0010) {  // wheel revolution data: uint32 revolutions, uint16 time in 1/2048 s
      out.wheel = { revs: view.getUint32(at, true), time: view.getUint16(at + 4, true), bits: 32, unit: 2048 };
      at += 6;
    }
    if (flags & 0x0020) {  // crank revolution data: uint16 revolutions, uint16 time in 1/1024 s
      out.crank = { revs: view.getUint16(at, true), time: view.getUint16(at + 2, true), bits: 16, unit: 1024 };
    }
    return out;
  };

  // Heart Rate Measurement (0x180D, 0x2A37): flags (8 bits); bit 0 says whether the value is
  // a uint8 or a uint16 (bpm).
  const heartRate = (view) => {
    const flags = view.getUint8(0);
    return { heart_rate: flags & 0x01 ? view.getUint16(1, true) : view.getUint8(1) };
  };

  // CSC Measurement (0x1816, 0x2A5B): flags (8 bits); bit 0 wheel revolution data (uint32
  // revolutions, uint16 time in 1/1024 s), bit 1 crank revolution data (uint16, uint16).
  const cscMeasurement = (view) => {
    const flags = view.getUint8(0);
    const out = { wheel: null, crank: null };
    let at = 1;
    if (flags & 0x01) {
      out.wheel = { revs: view.getUint32(at, true), time: view.getUint16(at + 4, true), bits: 32, unit: 1024 };
      at += 6;
    }
    if (flags & 0x02) {
      out.crank = { revs: view.getUint16(at, true), time: view.getUint16(at + 2, true), bits: 16, unit: 1024 };
    }
    return out;
  };

  // Fitness Machine Indoor Bike Data (0x1826, 0x2AD2): flags (16 bits), then the fields the
  // flags announce, in order. Bit 0 is "more data": the instantaneous speed (uint16, 0.01
  // km/h) is present when it is 0. [flag bit, bytes, name, decode] in the specification's order.
  const FTMS_FIELDS = [
    [0x0002, 2, null],                       // average speed
    [0x0004, 2, "cadence", (v, at) => v.getUint16(at, true) / 2],  // instantaneous cadence, 0.5 rpm
    [0x0008, 2, null],                       // average cadence
    [0x0010, 3, null],                       // total distance
    [0x0020, 2, null],                       // resistance level
    [0x0040, 2, "power", (v, at) => v.getInt16(at, true)],  // instantaneous power, W
    [0x0080, 2, null],                       // average power
    [0x0100, 5, null],                       // expended energy: total, per hour, per minute
    [0x0200, 1, "heart_rate", (v, at) => v.getUint8(at)],
  ];
  const indoorBikeData = (view) => {
    const flags = view.getUint16(0, true);
    const out = {};
    let at = 2;
    if (!(flags & 0x0001)) {
      out.speed = view.getUint16(at, true) / 100 / 3.6;  // km/h → m/s
      at += 2;
    }
    for (const [bit, size, name, decode] of FTMS_FIELDS) {
      if (!(flags & bit)) continue;
      if (name) out[name] = decode(view, at);
      at += size;
    }
    return out;
  };

  // Revolutions per second between two readings of a cumulative counter ({revs, time, bits,
  // unit}: the counter's width and the event time's ticks per second); both counters roll
  // over (the time at 16 bits). null when no new revolution event came (same event time).
  const revolutionRate = (previous, current) => {
    if (!previous || !current) return null;
    const ticks = (current.time - previous.time + 0x10000) % 0x10000;
    if (ticks === 0) return null;
    const revs = (current.revs - previous.revs + 2 ** current.bits) % 2 ** current.bits;
    return revs / (ticks / current.unit);
  };

  root.Gatt = { cyclingPower, heartRate, cscMeasurement, indoorBikeData, revolutionRate };
  if (typeof module !== "undefined") module.exports = root.Gatt;
})(typeof window !== "undefined" ? window : globalThis);
