"""The file descriptor budget (streams/core/descriptors.py): its arithmetic, the FD_RESERVE
setting, the estimate of open descriptors, and what answers when they run short — a follow's
503 (WebSocket 1013), EMFILE as a 503, one log line per interval. The real process under a low
limit: tests/test_descriptor_reserve.py."""

import errno
import logging

import pytest
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError
from django.test import RequestFactory

from streams.core import descriptors as fd
from streams.core.descriptors import (
    DescriptorBudget,
    OpenDescriptors,
    Tally,
    is_out_of_descriptors,
    reserve_setting,
)
from streams.live.capacity import connections
from streamsite.log_filters import CollapseOutOfDescriptors
from tests.helpers import asgi_response, http_scope
from tests.streams.sse_client import SSEClient

# --- the arithmetic ---------------------------------------------------------------------------

def test_the_default_reserve_is_64_or_a_quarter_of_a_small_limit():
    assert reserve_setting(None, 1024) == 64
    assert reserve_setting("", 65536) == 64
    assert reserve_setting(" ", 256) == 64
    assert reserve_setting(None, 200) == 50
    assert reserve_setting(None, 64) == 16


def test_a_reserve_is_a_whole_number_under_half_the_limit():
    assert reserve_setting("0", 1024) == 0  # no reserve: nothing is refused before the kernel does
    assert reserve_setting("511", 1024) == 511
    with pytest.raises(ImproperlyConfigured, match=r"FD_RESERVE=512 must be under half the file descriptor limit \(1024"):
        reserve_setting("512", 1024)
    with pytest.raises(ImproperlyConfigured, match="FD_RESERVE='many' is not a valid integer"):
        reserve_setting("many", 1024)
    with pytest.raises(ImproperlyConfigured, match="FD_RESERVE='-3' must be >= 0"):
        reserve_setting("-3", 1024)


def test_follows_stop_at_the_reserve_and_requests_at_half_of_it():
    budget = DescriptorBudget(limit=1024, reserve=64)
    assert (budget.follows, budget.requests, budget.bounded) == (960, 992, True)
    assert not DescriptorBudget(limit=1024, reserve=0).bounded
    assert not DescriptorBudget(limit=fd.UNLIMITED, reserve=64).bounded


class FakeProcess:
    def __init__(self, open_fds: int) -> None:
        self.open, self.now, self.counts = open_fds, 0.0, 0

    def count(self) -> int:
        self.counts += 1
        return self.open

    def clock(self) -> float:
        return self.now


def test_the_estimate_counts_once_a_second_far_from_a_threshold():
    proc = FakeProcess(100)
    opened = OpenDescriptors(count=proc.count, clock=proc.clock)
    assert not opened.reaches(500) and proc.counts == 1
    for _ in range(50):
        proc.now += 0.01
        assert not opened.reaches(500)
    assert proc.counts == 1  # half a second later: no listing of /proc/self/fd
    proc.now += 0.6
    opened.reaches(500)
    assert proc.counts == 2


def test_connections_let_in_count_until_the_next_count_and_near_a_threshold_it_recounts():
    proc = FakeProcess(100)
    opened = OpenDescriptors(count=proc.count, clock=proc.clock)
    opened.reaches(110)
    for _ in range(10):
        opened.let_in()
    proc.open = 105  # some of them already closed again
    assert opened.reaches(110)  # too soon to count again (10 ms): the estimate, never too low
    assert proc.counts == 1
    proc.now += 0.01
    assert not opened.reaches(110) and proc.counts == 2  # counted: 105


def test_no_reserve_refuses_nothing_and_counts_only_for_an_error():
    proc = FakeProcess(1024)
    budget = fd.ProcessDescriptors(DescriptorBudget(limit=1024, reserve=0), OpenDescriptors(count=proc.count))
    assert budget.follow_fits() and budget.request_fits()
    assert proc.counts == 0
    assert budget.exhausted()  # an error answered at the limit is for want of a descriptor
    proc.open = 1000
    assert not budget.exhausted()
    assert not fd.ProcessDescriptors(DescriptorBudget(limit=fd.UNLIMITED, reserve=64)).exhausted()


def test_counting_the_real_process():
    assert 3 <= fd.count_open() < fd.soft_limit()


def test_out_of_descriptors_is_recognised_through_the_causes():
    assert is_out_of_descriptors(OSError(errno.EMFILE, "Too many open files"))
    assert is_out_of_descriptors(OSError(errno.ENFILE, "Too many open files in system"))
    assert not is_out_of_descriptors(OSError(errno.ECONNREFUSED, "refused"))
    assert not is_out_of_descriptors(None)
    try:
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError as exc:
            raise OperationalError("unable to open database file") from exc
    except OperationalError as exc:
        assert is_out_of_descriptors(exc)
    assert is_out_of_descriptors(OperationalError('connection failed: could not create socket: Too many open files'))


def test_a_tally_says_once_per_interval_how_many():
    now = [0.0]
    tally = Tally(interval=10, clock=lambda: now[0])
    assert tally.due() == 1  # the first of a quiet spell: at once
    assert [tally.due() for _ in range(5)] == [0] * 5
    now[0] = 10.0
    assert tally.due() == 6


def test_out_of_descriptor_records_collapse_to_one_line_per_interval(monkeypatch):
    monkeypatch.setattr(CollapseOutOfDescriptors, "tally", Tally(interval=10))
    collapse = CollapseOutOfDescriptors()

    def record(exc=None, msg="Internal Server Error: /api/streams"):
        exc_info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("django.request", logging.ERROR, __file__, 1, msg, (), exc_info)

    emfile = OSError(errno.EMFILE, "Too many open files")
    first = record(emfile)
    assert collapse.filter(first)
    assert first.exc_info is None and "tracebacks left out" in first.getMessage()
    assert "Too many open files" in first.getMessage()
    assert collapse.filter(first)  # a handler's filter after the logger's: passes as it is
    assert not any(collapse.filter(record(emfile)) for _ in range(100))
    assert not collapse.filter(record(msg="socket.accept() out of system resource: [Errno 24] Too many open files"))
    other = record(ValueError("a bug"))
    assert collapse.filter(other) and other.exc_info is not None  # anything else untouched


# --- answers ----------------------------------------------------------------------------------

@pytest.fixture
def descriptors_short(monkeypatch):
    """This process as if its open descriptors had reached its limit less the reserve."""
    proc = FakeProcess(960)
    budget = fd.ProcessDescriptors(DescriptorBudget(limit=1024, reserve=64), OpenDescriptors(count=proc.count, clock=proc.clock))
    monkeypatch.setattr(fd, "_process", budget)
    return proc


@pytest.fixture
def public(settings):
    settings.STREAMS_PUBLIC_READ = True


@pytest.mark.django_db(transaction=True)
async def test_a_follow_past_the_reserve_is_503_with_retry_after_and_closes(r, public, descriptors_short):
    refused = await SSEClient("/api/streams/fd-a/sse").connect()
    try:
        assert refused.status == 503
        assert refused.response_headers["retry-after"] == "5"
        assert refused.response_headers["connection"] == "close"
        assert "FD_RESERVE=64" in (await refused.json_body())["detail"]
    finally:
        await refused.close()
    assert connections.stats()["connections"] == 0  # nothing held by the refusal
    descriptors_short.open = 959
    descriptors_short.now += 1
    admitted = await SSEClient("/api/streams/fd-a/sse").connect()
    try:
        assert admitted.status == 200
    finally:
        await admitted.close()


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_follow_past_the_reserve_is_closed_with_1013_try_again(r, public, descriptors_short):
    from streamsite.asgi import application

    ws = WebsocketCommunicator(application, "/ws/streams/fd-b/")
    try:
        assert (await ws.connect())[0]
        assert "FD_RESERVE" in (await ws.receive_json_from(5))["error"]
        assert await ws.receive_output(5) == {"type": "websocket.close", "code": 1013}
    finally:
        await ws.disconnect()


def emfile_from_the_database(*args, **kwargs):
    try:
        raise OSError(errno.EMFILE, "Too many open files")
    except OSError as exc:
        raise OperationalError("unable to open database file") from exc


@pytest.mark.django_db(transaction=True)
async def test_a_token_reload_that_gets_emfile_is_503_not_500(r, monkeypatch):
    from streams.access import identity

    monkeypatch.setattr(identity, "_load_token", emfile_from_the_database)
    status, headers, body = await asgi_response(
        http_scope("/api/streams", headers=[(b"authorization", b"Bearer sst_not-cached")])
    )
    assert status == 503, body
    assert headers["retry-after"] == "5" and headers["connection"] == "close"
    assert b"out of file descriptors" in body


def test_a_view_that_gets_emfile_is_503_and_other_errors_stay_500():
    from streamsite.middleware import ApiShapeMiddleware

    middleware = ApiShapeMiddleware(lambda request: None)
    request = RequestFactory().get("/health/")
    response = middleware.process_exception(request, OSError(errno.EMFILE, "Too many open files"))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert middleware.process_exception(request, ValueError("a bug")) is None


def test_the_500_handler_answers_503_while_descriptors_are_exhausted(monkeypatch, descriptors_short):
    from streamsite.views import server_error_json

    request = RequestFactory().get("/api/streams")
    assert server_error_json(request).status_code == 500  # 960: within the reserve's first half
    descriptors_short.open = 1000
    response = server_error_json(request)
    assert response.status_code == 503 and response["Connection"] == "close"
