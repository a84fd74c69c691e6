"""The SES pace: never above the configured rate, throttled calls tried again at the pace."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from relance.email.message import OutgoingEmail
from relance.email.pacing import Pacer
from relance.email.transports import DeliveryError, SesTransport


class FakeTime:
    """A monotonic clock that moves only when slept on (or told to)."""

    def __init__(self) -> None:
        self.now, self.calls = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_n_calls_never_take_less_than_n_over_rate_seconds() -> None:
    t = FakeTime()
    pacer = Pacer(50, clock=t.clock, sleep=t.sleep)
    started = t.now
    for _ in range(100):
        pacer.wait()
        t.calls.append(t.now)
    assert t.now - started == pytest.approx(100 / 50)
    assert min(b - a for a, b in zip(t.calls, t.calls[1:])) == pytest.approx(1 / 50)


def test_slow_work_between_calls_is_not_slept_on_again_and_idle_time_gives_no_burst() -> None:
    t = FakeTime()
    pacer = Pacer(10, clock=t.clock, sleep=t.sleep)
    pacer.wait()
    t.now += 0.15  # the caller worked longer than one interval: go at once
    before = t.now
    pacer.wait()
    assert t.now == before
    t.now += 60  # a minute idle: the next calls are spaced again, not sent in a burst
    pacer.wait()
    first = t.now
    pacer.wait()
    assert t.now - first == pytest.approx(0.1)


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Pacer(0)


class FlakySes:
    """Refuses the first `refusals` calls with SES's throttling error, then accepts."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.calls = refusals, 0

    def send_email(self, **_):
        self.calls += 1
        if self.calls <= self.refusals:
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Maximum sending rate exceeded."},
                               "ResponseMetadata": {"HTTPStatusCode": 429}}, "SendEmail")
        return {"MessageId": f"m{self.calls}"}


def _email() -> OutgoingEmail:
    return OutgoingEmail(to="lea@acme.example", from_="m@relance.example", reply_to=None, subject="s", html="<p>x</p>", text="x")


def test_a_throttled_call_is_tried_again_through_the_pacer() -> None:
    t = FakeTime()
    ses = FlakySes(refusals=2)
    transport = SesTransport(ses, pacer=Pacer(10, clock=t.clock, sleep=t.sleep), throttle_retries=3)
    started = t.now

    assert transport.send(_email()) == "m3"
    assert ses.calls == 3 and t.now - started == pytest.approx(0.3)  # three calls, three slots


def test_still_throttled_after_every_retry_is_handed_back_as_retryable() -> None:
    ses = FlakySes(refusals=10)
    with pytest.raises(DeliveryError) as refused:
        SesTransport(ses, throttle_retries=2).send(_email())
    assert refused.value.retryable is True and ses.calls == 3
