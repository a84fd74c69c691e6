"""One tick sequence: the inline tick follows the flow's failure rules, and every effect has its `apply_` function."""

from __future__ import annotations

import logging
import re
import typing
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance import effects
from relance.email.message import OutgoingEmail
from relance.email.templates import TemplateLibrary
from relance.email.transports import DeliveryError
from relance.engine.types import Effect
import relance.flows.tick
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Outbox
from relance.tick import TickError, TickSteps, run_tick, run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import professional

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""

WELCOME = """\
scenario: welcome
trigger: {segment: {stage_in: [lead]}}
steps:
  - id: hello
    send: hello
    subject: "Bonjour {{ lead.first_name }}"
  - id: done
    end: true
"""


class Greylisting:
    """Refuses one address for now (a retry may help), delivers the others."""

    def __init__(self, refused: str) -> None:
        self.refused, self.sent = refused, []

    def send(self, email: OutgoingEmail) -> str:
        if email.to == self.refused:
            raise DeliveryError(f"{email.to}: 451 greylisted, try again later", retryable=True)
        self.sent.append(email.to)
        return f"sent-{len(self.sent)}"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    for folder in ("scenarios", "templates"):
        (tmp_path / folder).mkdir()
    (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "scenarios" / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    return Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    transport="null", batch_size=2)


def test_a_batch_refused_for_now_stays_pending_and_the_tick_goes_on_to_the_next_batches(engine, settings, clock, caplog):
    emails = [f"lead{i}@acme.example" for i in range(5)]
    with Session(engine) as session:
        for email in emails:
            upsert_lead(session, email=email, now=clock.now(), first_name="Léa", fields=professional())
        session.commit()
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    transport = Greylisting(refused=emails[0])  # in the first batch of two

    with caplog.at_level(logging.INFO, logger="relance.tick"):
        with pytest.raises(TickError, match=re.escape(
                "welcome: emails not delivered yet, they stay pending for the next tick: batch 1 (2 emails of step hello 2): "
                "1 message(s) could not be delivered yet")):
            run_tick_inline(engine, settings, scenario="welcome", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))

    assert sorted(transport.sent) == emails[1:]  # the next batches left, and the refused batch's other email
    with Session(engine) as session:
        pending = session.execute(select(Outbox.to_address).where(Outbox.status == "pending")).scalars().all()
    assert pending == [emails[0]]  # nothing lost: the next tick tries it again
    said = caplog.text
    assert "welcome: 5 entered, 5 due, 3 batches, 4 sent" in said  # the refused batch's other email left: it counts
    assert "1 still pending (they go with the next tick)" in said
    assert "1 batch not delivered after every retry" in said
    assert "other pending messages (hand-off and SLA emails, what earlier runs left): 0 sent, 0 failed or expired, " \
           "1 still pending (outbox 1 to lead0@acme.example: lead0@acme.example: 451 greylisted" in said


class SendsThenRefuses:
    """Sends the first `n` messages, then refuses every later one: for now (a retry may help) or for good."""

    def __init__(self, n: int, *, retryable: bool) -> None:
        self.n, self.retryable, self.sent = n, retryable, []

    def send(self, email: OutgoingEmail) -> str:
        if len(self.sent) >= self.n:
            raise DeliveryError(f"{email.to}: 421 too many messages, try later" if self.retryable else
                                f"{email.to}: 554 transaction failed", retryable=self.retryable)
        self.sent.append(email.to)
        return f"sent-{len(self.sent)}"


@pytest.mark.parametrize("retryable, rest", [(True, "pending"), (False, "failed")], ids=["for-now", "for-good"])
def test_what_left_before_the_transport_gave_up_counts_as_sent_and_the_rest_as_the_outbox_holds_it(
        engine, settings, clock, caplog, retryable, rest):
    with Session(engine) as session:
        for i in range(5):
            upsert_lead(session, email=f"lead{i}@acme.example", now=clock.now(), first_name="Léa", fields=professional())
        session.commit()
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, workspace=workspace, now=clock.now())
    transport = SendsThenRefuses(3, retryable=retryable)  # one batch of five: three leave, then the transport gives up

    with caplog.at_level(logging.INFO, logger="relance.tick"):
        try:
            report = run_tick_inline(engine, settings, scenario="welcome", now=clock.now(), workspace=workspace,
                                     transport=transport, templates=TemplateLibrary(settings.templates_dir), batch_size=10)
        except TickError as exc:  # refused for now: the batch is not delivered, the tick says so once its figures are in
            assert retryable and "batch 1 (5 emails of step hello 5)" in str(exc)
            report = exc.report

    with Session(engine) as session:
        rows = Counter(session.execute(select(Outbox.status)).scalars())
    assert rows == {"sent": 3, rest: 2}
    assert (report.sent, report.pending, report.failed) == (rows["sent"], rows["pending"], rows["failed"]) == \
           (3, 2 if retryable else 0, 0 if retryable else 2)
    assert f"welcome: 5 entered, 5 due, 1 batch, 3 sent, 0 waiting, 2 {'still pending' if retryable else 'failed'}" in caplog.text


def test_the_flow_runs_the_same_sequence_with_its_tasks():
    assert isinstance(relance.flows.tick.TASKS, TickSteps)
    assert relance.flows.tick.TASKS.deliver.retries == 3  # the inline tick has no retries: the rest is the same sequence
    assert "run_tick(" in Path(relance.flows.tick.__file__).read_text(encoding="utf-8")
    assert run_tick.__module__ == "relance.tick"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.mark.parametrize("kind", typing.get_args(Effect), ids=lambda kind: kind.__name__)
def test_every_effect_is_applied_by_its_own_function(kind, monkeypatch):
    applied = []
    name = "apply_" + _snake(kind.__name__)
    assert callable(getattr(effects, name, None)), f"relance.effects has no {name} for {kind.__name__}"
    for other in typing.get_args(Effect):
        monkeypatch.setattr(effects, "apply_" + _snake(other.__name__),
                            lambda effect, at, other=other: applied.append(other))
    effects.apply_effect(object.__new__(kind), at=None)
    assert applied == [kind]


def test_an_effect_of_no_known_kind_is_refused():
    with pytest.raises(AssertionError):
        effects.apply_effect(object(), at=None)
