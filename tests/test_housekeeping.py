"""SLA breaches and re-engagement of "later" leads on an injected clock, both backends."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance.housekeeping import run_reengage, run_sla
from relance.plans import sync_scenarios
from relance.sales import Answer, answer, open_handoff
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Handoff, Outbox
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(db_url):
    return load_workspace(Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails"))


def _handed(engine, workspace, clock, n=2):
    with Session(engine) as session:
        for i in range(n):
            lead = upsert_lead(session, email=f"l{i}@acme.example", now=clock.now())
            open_handoff(session, lead, scoring=workspace.scoring, now=clock.now(), source="test")
        session.commit()


def _sla_mails(engine):
    with Session(engine) as session:
        return sorted(o.to_address for o in session.exec(select(Outbox).where(Outbox.step_id.like("sla:%"))).scalars())


def test_sla_flags_target_then_deadline_once_and_tells_owner_and_manager(engine, workspace, clock):
    _handed(engine, workspace, clock)
    with Session(engine) as session:
        answer(session, email="l1@acme.example", reply=Answer("accept", "karim@example.com"), scoring=workspace.scoring,
               now=clock.now() + timedelta(hours=1))
        session.commit()
    assert committed(engine, run_sla, workspace=workspace, now=clock.advance(timedelta(hours=1))).target_missed == 0
    report = committed(engine, run_sla, workspace=workspace, now=clock.advance(timedelta(hours=2)))
    assert (report.open, report.target_missed, report.deadline_missed) == (1, 1, 0)
    assert _sla_mails(engine) == []
    report = committed(engine, run_sla, workspace=workspace, now=clock.advance(timedelta(hours=46)))
    assert (report.target_missed, report.deadline_missed) == (0, 1)
    assert _sla_mails(engine) == ["claire@example.com", "direction.ventes@example.com"]
    assert committed(engine, run_sla, workspace=workspace, now=clock.advance(timedelta(hours=5))).deadline_missed == 0
    assert len(_sla_mails(engine)) == 2


def test_reengage_enrolls_later_leads_on_their_date_once(engine, workspace, clock, db_url):
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    _handed(engine, workspace, clock)
    with Session(engine) as session:
        for i, days in enumerate((7, 30)):
            answer(session, email=f"l{i}@acme.example", reply=Answer("later", "claire@example.com", until=clock.now() + timedelta(days=days)),
                   scoring=workspace.scoring, now=clock.now())
        session.commit()
    assert committed(engine, run_reengage, workspace=workspace, now=clock.advance(timedelta(days=6))) == 0
    assert committed(engine, run_reengage, workspace=workspace, now=clock.advance(timedelta(days=1))) == 1
    assert committed(engine, run_reengage, workspace=workspace, now=clock.now()) == 0  # twice the same day: once
    with Session(engine) as session:
        [enrollment] = session.exec(select(Enrollment)).scalars().all()
        reengaged = [h.reengaged_at for h in session.exec(select(Handoff).order_by(Handoff.id)).scalars()]
    assert enrollment.scenario == "re-engagement" and reengaged[1] is None and reengaged[0] is not None


def test_reengage_with_its_scenario_broken_says_so_and_the_later_leads_wait(engine, clock, db_url, tmp_path):
    import shutil

    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    settings = Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=ROOT / "templates" / "emails")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    _handed(engine, workspace, clock, n=1)
    with Session(engine) as session:
        answer(session, email="l0@acme.example", reply=Answer("later", "claire@example.com", until=clock.now() + timedelta(days=7)),
               scoring=workspace.scoring, now=clock.now())
        session.commit()
    reengagement = tmp_path / "scenarios" / "re-engagement.yaml"
    reengagement.write_text(reengagement.read_text(encoding="utf-8").replace("steps:", "stepz:"), encoding="utf-8")
    broken = load_workspace(settings)

    with pytest.raises(LookupError, match=r"the re-engagement scenario re-engagement is broken .*relance validate .*"
                                          r"re-engagement.yaml.*the \"later\" leads wait"):
        committed(engine, run_reengage, workspace=broken, now=clock.advance(timedelta(days=8)))
    with Session(engine) as session:
        assert session.exec(select(Handoff.reengaged_at)).scalars().all() == [None]  # still owed a re-engagement
    reengagement.write_text(reengagement.read_text(encoding="utf-8").replace("stepz:", "steps:"), encoding="utf-8")
    assert committed(engine, run_reengage, workspace=load_workspace(settings), now=clock.now()) == 1
