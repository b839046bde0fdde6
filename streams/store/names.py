"""Stream names, ids and entry data: validation shared by every interface."""

from __future__ import annotations

import json
import math
import re

from django.conf import settings

from streams.core.errors import EntryTooLarge, InvalidInput

# Whole-string patterns, matched with fullmatch: "$" alone also matches before a trailing
# newline ("a-priv\n" was a second stream listed as "a-priv"), and "\d" matches any Unicode digit.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# A full or partial stream id as XRANGE accepts it, optionally exclusive with "(".
RANGE_ID_RE = re.compile(r"\(?[0-9]{1,20}(-[0-9]{1,20})?")
# A concrete entry id ("ms-seq") as used for resume positions.
ENTRY_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

MAX_FIELDS = 100
MAX_ENTRIES = 1000  # per publish call
MAX_FIELD_NAME = 256
# Field names starting with "_" are the service's own (docs/rides.md): a publish may not carry
# them. The end marker of a ride is the entry {END_FIELD: reason}; a marker (a lap boundary a
# rider or coach set) is the entry {MARKER_FIELD: label, RIDE_S_FIELD: ride second}.
RESERVED_PREFIX = "_"
END_FIELD = "_end"
MARKER_FIELD = "_marker"
RIDE_S_FIELD = "_ride_s"
# A sample's own time (seconds): ride seconds or Unix seconds up to the year 2286; any other
# value of the field is a 400 (``_check_time``).
TIME_FIELD = "t"
MAX_SAMPLE_TIME = 10_000_000_000
MAX_MARKERS = 500  # per stream: the metadata keeps their list, the live snapshot carries it
MAX_MARKER_LABEL = 80


def is_service_entry(fields) -> bool:
    """An entry the service wrote (an end marker, a marker): never a sample."""
    return END_FIELD in fields or MARKER_FIELD in fields


def parse_json(data: bytes | str, *, what: str = "request body") -> object:
    """JSON from a client. Malformed or too deeply nested input (``[`` × 50,000 makes the
    decoder raise RecursionError) is an InvalidInput."""
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def validate_stream_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid stream name {name!r}: use 1-128 characters from A-Z a-z 0-9 _ . : -, "
            "starting with a letter or digit"
        )
    return name


MAX_ID_PART = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit integer


def _parts_fit(value: str) -> bool:
    """20 digits can exceed 2^64-1; Redis then answers with an error (it was a 500)."""
    return all(int(part) <= MAX_ID_PART for part in value.lstrip("(").split("-"))


MAX_ID = f"{MAX_ID_PART}-{MAX_ID_PART}"  # no entry id comes after it


def validate_range_id(value: str, *, which: str) -> str:
    if not (value in ("-", "+") or (RANGE_ID_RE.fullmatch(value) and _parts_fit(value))):
        raise InvalidInput(f"invalid {which} id {value!r}: use -, +, <ms> or <ms>-<seq> (each at most 2^64-1)")
    # Exclusive bounds Redis cannot step past (it answers "invalid start/end ID for the interval").
    if value.startswith("("):
        parts = [int(part) for part in value[1:].split("-")]
        if which == "start" and parts == [MAX_ID_PART, MAX_ID_PART]:
            raise InvalidInput(f"invalid start id {value!r}: {MAX_ID} is the maximum id, nothing comes after it")
        if which == "end" and parts == [0, 0]:
            raise InvalidInput(f"invalid end id {value!r}: 0-0 is the minimum id, nothing comes before it")
    return value


def validate_entry_id(value: str, *, which: str = "id") -> str:
    if not (ENTRY_ID_RE.fullmatch(value) and _parts_fit(value)):
        raise InvalidInput(f"invalid {which} {value!r}: expected a stream id like 1700000000000-0")
    return value


def validate_resume_id(value: str, *, which: str) -> str:
    """A position to resume after (Last-Event-ID): an entry id below the maximum."""
    validate_entry_id(value, which=which)
    if [int(part) for part in value.split("-")] == [MAX_ID_PART, MAX_ID_PART]:
        raise InvalidInput(f"invalid {which} {value!r}: {MAX_ID} is the maximum id, nothing comes after it")
    return value


def encode_entry(data: object, *, index: int | None = None) -> dict[str, str]:
    """A flat JSON object of string/number/boolean values → Redis field/value strings."""
    where = "" if index is None else f"entry {index}: "
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}an entry must be a JSON object of fields")
    if not data:
        raise InvalidInput(f"{where}an entry needs at least one field")
    if len(data) > MAX_FIELDS:
        raise InvalidInput(f"{where}{len(data)} fields is more than the limit of {MAX_FIELDS}")
    fields: dict[str, str] = {}
    size = 0
    for key, value in data.items():
        if not key or len(key) > MAX_FIELD_NAME:
            raise InvalidInput(f"{where}field names must be 1-{MAX_FIELD_NAME} characters")
        if key.startswith(RESERVED_PREFIX):
            raise InvalidInput(f"{where}field {key!r}: names starting with {RESERVED_PREFIX!r} are reserved")
        fields[key] = encoded = _encode_value(value, f"{where}field {key!r}")
        if key == TIME_FIELD:
            _check_time(value, f"{where}field {key!r}")
        size += len(key.encode("utf-8", "surrogatepass")) + len(encoded.encode("utf-8", "surrogatepass"))
    limit = settings.STREAM_MAX_ENTRY_BYTES
    if size > limit:
        raise EntryTooLarge(f"{where}{size} bytes is more than STREAM_MAX_ENTRY_BYTES ({limit} bytes) per entry")
    return fields


def _check_time(value: object, what: str) -> None:
    """``t``, a sample's own time: seconds, a finite number from 0 to MAX_SAMPLE_TIME (ride
    seconds or Unix seconds), as a JSON number or a string of one. It decides the ride time of
    the live metrics and the archive (docs/api.md), so anything else is refused, not ignored."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: the sample's time must be a number of seconds, not a boolean")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: the sample's time must be a number of seconds, not {value!r}") from None
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SAMPLE_TIME):
        raise InvalidInput(f"{what}: the sample's time must be 0 to {MAX_SAMPLE_TIME:.0f} seconds, not {value!r}")


def _encode_value(value: object, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{what}: {value} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return value
    raise InvalidInput(f"{what}: values must be strings, numbers or booleans")


def encode_entries(payload: object) -> list[dict[str, str]]:
    """One entry object or an array of up to MAX_ENTRIES of them → encoded entries."""
    if isinstance(payload, dict):
        return [encode_entry(payload)]
    if isinstance(payload, list):
        if not payload:
            raise InvalidInput("an empty array publishes nothing: send at least one entry")
        if len(payload) > MAX_ENTRIES:
            raise InvalidInput(f"{len(payload)} entries is more than the limit of {MAX_ENTRIES}")
        return [encode_entry(item, index=i) for i, item in enumerate(payload)]
    raise InvalidInput("send a JSON object or an array of objects")


def entry_fields(fields) -> dict[str, str]:
    """An entry's fields as Redis sends them (XREAD, XRANGE: a flat list; a map under RESP3)
    as a dict: the one decoding of entry data read back."""
    if isinstance(fields, dict):
        return fields
    if not fields:
        return {}
    return dict(zip(fields[::2], fields[1::2]))
