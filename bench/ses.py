"""SES pacing: achieved send rate vs the configured maximum, against a local moto server; and exactly-once
delivery when 30 % of the calls are answered by a throttling error (injected at the HTTP boundary)."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import urllib.request
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from relance.advancing import advance_due
from relance.delivery import RetryableDelivery, deliver
from relance.email.pacing import Pacer
from relance.email.transports import SesTransport

from relance.bench.common import NOW, SCENARIO, Stopwatch, database, open_world, seed, sent_rows

SENDER = "marketing@relance.example"


@contextmanager
def moto_ses():
    """A moto server on a free loopback port, and an sesv2 client that never retries by itself."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        os.environ.setdefault(key, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps its backends per process, not per server: start from an empty SES
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()
    try:
        client = boto3.client("sesv2", region_name="eu-west-1", endpoint_url=url,
                              config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        client.create_email_identity(EmailIdentity=SENDER)
        yield client, url
    finally:
        server.stop()


class Throttler:
    """Answers a share of SendEmail calls with SES's 429 TooManyRequestsException before they leave."""

    def __init__(self, share: float, seed: int = 7) -> None:
        self.share, self.random, self.refused = share, random.Random(seed), 0

    def __call__(self, request, **_) -> AWSResponse | None:
        if not request.url.endswith("/v2/email/outbound-emails") or self.random.random() >= self.share:
            return None
        self.refused += 1
        body = json.dumps({"message": "Maximum sending rate exceeded."}).encode()
        return AWSResponse(request.url, 429, {"x-amzn-ErrorType": "TooManyRequestsException",
                                              "Content-Type": "application/json"}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def _recorded(url: str) -> Counter:
    """Recipients of the emails the moto server accepted for the benchmark's leads."""
    with urllib.request.urlopen(f"{url}/moto-api/data.json") as response:
        messages = json.load(response)["ses"]["Message"]
    return Counter(to for m in messages if (to := m["destinations"]["ToAddresses"][0]).endswith("@bench.example"))


def _send_all(world, transport, at) -> tuple[int, float]:
    """A tick's advance + deliver at `at`, delivery retried (as the Prefect task is) until nothing is pending;
    returns the outbox rows now sent and the seconds spent delivering."""
    outbox: list[int] = []
    while (batch := advance_due(world.engine, world.settings, scenario=SCENARIO, now=at, workspace=world.workspace)).advanced:
        outbox += batch.outbox_ids
    seconds = 0.0
    for _ in range(20):
        with Stopwatch() as watch:
            try:
                deliver(world.engine, world.settings, outbox_ids=outbox, now=at, transport=transport, templates=world.templates, manager=None,
                        policy=world.workspace.sending)
                done = True
            except RetryableDelivery:
                done = False  # rows handed back as pending; the next attempt takes them
        seconds += watch.seconds
        if done:
            break
    return sent_rows(world), seconds


def ses_pacing(work: Path, n: int, per_second: float, throttled_share: float = 0.3) -> dict:
    """n emails at the pace, then n more with `throttled_share` of the calls refused; every one must reach SES once."""
    later = NOW + timedelta(hours=1)
    with moto_ses() as (client, url), database("sqlite", work) as db:
        world = open_world(db, work)
        world.settings.from_ = f"Relance <{SENDER}>"
        seed(world, due={NOW: n, later: n})
        sent, seconds = _send_all(world, SesTransport(client, pacer=Pacer(per_second)), NOW)
        assert sent == n, f"paced run: {sent} sent, wanted {n}"
        throttler = Throttler(throttled_share)
        client.meta.events.register("before-send.sesv2.SendEmail", throttler)
        rows, throttled_seconds = _send_all(world, SesTransport(client, pacer=Pacer(per_second)), later)
        client.meta.events.unregister("before-send.sesv2.SendEmail", throttler)
        recorded = _recorded(url)
        world.engine.dispose()
    throttled_sent = rows - sent
    assert throttled_sent == n and len(recorded) == 2 * n, f"throttled run: {throttled_sent} sent, {len(recorded)} at SES"
    assert set(recorded.values()) == {1}, "an email reached SES twice"
    achieved = n / seconds
    return {"configured_per_s": per_second, "achieved_per_s": round(achieved, 2), "ratio": round(achieved / per_second, 4),
            "throttled": {"emails": n, "refused_calls": throttler.refused, "sent_once": throttled_sent,
                          "seconds": round(throttled_seconds, 2)}}
