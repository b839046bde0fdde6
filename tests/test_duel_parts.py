"""The duel's pure parts (bench/duel/duel.py): percentiles, /proc parsing, payload parsing.
The duel itself is a benchmark (bench/duel/run.sh), not part of the suite."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("duel", Path(__file__).resolve().parent.parent / "bench/duel/duel.py")
duel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(duel)


def test_percentile_is_the_nearest_rank_of_sorted_values():
    values = sorted(float(v) for v in range(1, 101))  # 1..100
    assert duel.percentile(values, 0.50) == 51.0
    assert duel.percentile(values, 0.95) == 96.0
    assert duel.percentile(values, 0.99) == 100.0
    assert duel.percentile([], 0.5) is None
    assert duel.latency_summary([3.0, 1.0, 2.0])["max_ms"] == 3.0


def test_cpu_ticks_counts_fields_after_a_command_name_with_spaces_and_parentheses():
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    stat = "4242 (node (duel) x) S 1 2 3 4 5 6 7 8 9 10 111 22 0 0 20 0 1 0 99 1000 50"
    assert duel.cpu_ticks(stat) == 133


def test_rss_kb_reads_vmrss():
    assert duel.rss_kb("Name:\tnginx\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\n") == 4321


def test_parse_entry_reads_sse_and_socketio_payloads():
    assert duel.parse_entry(b'data: {"ts": "1733412345678.125", "n": "7", "power": "200"}\n') == (1733412345678.125, 7)
    frame = b'42["entry",{"ts":"1733412345678.500","n":"12","power":"200"},"1733412345678-0"]'
    assert duel.parse_entry(frame) == (1733412345678.5, 12)
    assert duel.SIO_OFFSET.search(frame).group(1) == b"1733412345678-0"
    assert duel.parse_entry(b": ping\n") is None


def test_expected_deliveries_follow_how_listeners_spread_over_streams():
    assert duel.per_stream(5, 3) == [2, 2, 1]
    assert duel.expected_deliveries({"a": 10, "b": 1}, ["a", "b", "c"], 5) == 22
