"""SES answers lost after SES accepted the message: nobody gets the email twice, and the tick says so."""

from __future__ import annotations

import json
import sys
import uuid
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance.policy import NO_POLICY
from relance.delivery import deliver_pending
from relance.email.templates import TemplateLibrary
from relance.email.transports import make_transport
from relance.plans import sync_scenarios
from relance.store.tables import Outbox
from relance.tick import TickError, run_tick_inline
from relance.workspace import load_workspace

from harness import FULL, add_leads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faults import FaultProxy  # noqa: E402  (tests/faults.py)
from tests.units import committed

LEADS = 2_000 if FULL else 200
SENDER = "marketing@example.com"


@pytest.fixture
def moto(moto_server, verify_sender):
    verify_sender(SENDER)
    return moto_server


def _accepted(moto_url: str, prefix: str) -> Counter:
    """Emails SES (moto) accepted, per recipient: its own record, not what relance believes."""
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json") as response:
        return Counter(to for m in json.load(response)["ses"]["Message"] for to in m["destinations"]["ToAddresses"]
                   if to.startswith(prefix))  # moto is shared by the process's tests: only ours


def test_lost_answers_are_unknown_never_resent(engine, settings, clock, moto):
    url, port = moto
    # a lost answer is a closed connection, not a wait: the timeout only has to let a slow genuine answer
    # through on a loaded machine (2 s once made a 21st message unknown while every core was busy)
    settings = settings.model_copy(update={"transport": "ses", "ses_region": "eu-west-1", "ses_timeout": 15.0})
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    prefix = f"lost-{uuid.uuid4().hex[:8]}-"
    emails = add_leads(engine, clock.now(), LEADS, prefix=prefix)
    lost = lambda n: "lose_answer" if n % 10 == 3 else "pass"  # one answer in ten never comes back
    with FaultProxy(("127.0.0.1", port), lost, lifetime=600) as proxy:
        ses = make_transport(settings.model_copy(update={"ses_endpoint_url": proxy.url}))
        report = run_tick_inline(engine, settings, scenario="drip", now=clock.now(), workspace=workspace, transport=ses, templates=TemplateLibrary(settings.templates_dir))
        assert report.sent + report.unknown == LEADS and report.unknown == LEADS // 10, report.as_dict()
        # the next tick and the leftovers pass find nothing to resend
        later = clock.now() + timedelta(hours=1)
        run_tick_inline(engine, settings, scenario="drip", now=later, workspace=workspace, transport=ses, templates=TemplateLibrary(settings.templates_dir))
        deliver_pending(engine, settings, now=later, transport=ses, templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)
    accepted = _accepted(url, prefix)
    assert set(accepted) == set(emails) and set(accepted.values()) == {1}  # all left once, the lost ones too
    with Session(engine) as session:
        statuses = Counter(session.execute(select(Outbox.status).where(Outbox.step_id == "first")).scalars())
    assert statuses == {"sent": LEADS - LEADS // 10, "unknown": LEADS // 10}


def test_a_hanging_endpoint_leaves_the_rest_of_the_batch_pending_not_unknown(engine, settings, clock, moto):
    _, port = moto
    settings = settings.model_copy(update={"transport": "ses", "ses_region": "eu-west-1", "ses_timeout": 0.5})
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    add_leads(engine, clock.now(), 20)
    with FaultProxy(("127.0.0.1", port), "hang", lifetime=60) as proxy:
        ses = make_transport(settings.model_copy(update={"ses_endpoint_url": proxy.url}))
        # the batch stops after 3 sends without an answer; the leftovers pass tries the 17 left pending, stops after 3
        with pytest.raises(TickError, match=r"batch 1 \(20 emails of step first 20\): 17 message\(s\) could not be delivered yet"):
            run_tick_inline(engine, settings, scenario="drip", now=clock.now(), workspace=workspace, transport=ses, templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        statuses = Counter(session.execute(select(Outbox.status)).scalars())
    assert statuses == {"unknown": 6, "pending": 14}  # each pass stopped feeding it, nothing else was handed over
