"""A minimal FIT file writer for tests: file_id, zones_target (FTP), timer events, records."""

from __future__ import annotations

import datetime as dt
import struct

from fitdecode.utils import compute_crc

FIT_EPOCH = dt.datetime(1989, 12, 31, tzinfo=dt.UTC)
UINT8, UINT16, UINT32, ENUM = 0x02, 0x84, 0x86, 0x00
RECORD_FIELDS = [  # (field number, size, base type, name, scale, offset)
    (253, 4, UINT32, "timestamp", 1, 0),
    (7, 2, UINT16, "power", 1, 0),
    (3, 1, UINT8, "heart_rate", 1, 0),
    (4, 1, UINT8, "cadence", 1, 0),
    (6, 2, UINT16, "speed", 1000, 0),
    (5, 4, UINT32, "distance", 100, 0),
    (2, 2, UINT16, "altitude", 5, 500),
]
INVALID = {UINT8: 0xFF, UINT16: 0xFFFF, UINT32: 0xFFFFFFFF}
FMT = {UINT8: "B", UINT16: "H", UINT32: "I", ENUM: "B"}


def _definition(local: int, global_num: int, fields) -> bytes:
    out = struct.pack("<BBBHB", 0x40 | local, 0, 0, global_num, len(fields))
    for num, size, base, *_ in fields:
        out += struct.pack("<BBB", num, size, base)
    return out


def _fit_ts(when: dt.datetime) -> int:
    return int((when - FIT_EPOCH).total_seconds())


def write_fit(start: dt.datetime, rows: list[dict], *, ftp: int | None = None, timer: list[tuple[str, float]] = ()) -> bytes:
    """rows: dicts with t (s offset) and any of power, heart_rate, cadence, speed, distance, altitude
    (None = missing). timer: ("start" | "stop", t offset) events."""
    body = _definition(0, 0, [(0, 1, ENUM)]) + struct.pack("<BB", 0, 4)  # file_id: activity
    if ftp is not None:
        body += _definition(1, 7, [(3, 2, UINT16)]) + struct.pack("<BH", 1, ftp)  # zones_target
    event_fields = [(253, 4, UINT32), (0, 1, ENUM), (1, 1, ENUM)]
    body += _definition(2, 21, event_fields)
    body += _definition(3, 20, RECORD_FIELDS)
    events = sorted(timer, key=lambda e: e[1])
    for row in rows:
        while events and events[0][1] <= row["t"]:
            kind, at = events.pop(0)
            body += struct.pack("<BIBB", 2, _fit_ts(start + dt.timedelta(seconds=at)), 0, 0 if kind == "start" else 4)
        values = []
        for _num, _size, base, name, scale, offset in RECORD_FIELDS:
            if name == "timestamp":
                values.append(_fit_ts(start + dt.timedelta(seconds=row["t"])))
                continue
            v = row.get(name)
            values.append(INVALID[base] if v is None else int(round((v + offset) * scale)))
        body += struct.pack("<B" + "".join(FMT[f[2]] for f in RECORD_FIELDS), 3, *values)
    for kind, at in events:
        body += struct.pack("<BIBB", 2, _fit_ts(start + dt.timedelta(seconds=at)), 0, 0 if kind == "start" else 4)
    header = struct.pack("<BBHI4s", 14, 0x20, 2132, len(body), b".FIT")
    header += struct.pack("<H", compute_crc(header))
    data = header + body
    return data + struct.pack("<H", compute_crc(data))
