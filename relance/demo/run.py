"""`relance demo`: a month of nurturing on embedded defaults, in one command.

A fresh SQLite database and outbox in the demo folder, the shipped sample leads, a virtual
clock that walks 30 days, synthetic engagement (downloads, opens, clicks, pricing visits,
sales saying "later"), and every tick through the real Prefect tick flow.
"""

from __future__ import annotations

import os
import secrets
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import Session

from relance.ingest import IncomingEvent, ingest_events
from relance.store.tables import Cost, Enrollment, Lead, Outbox, StepLog

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)  # a Monday morning
DAYS = 30
TICK_HOUR = timedelta(hours=9)  # 09:00 UTC each day = 10:00 in Paris


@dataclass(frozen=True)
class DemoRates:
    downloads_per_day: int = 9  # new white-paper downloads a day during the first three weeks
    open: float = 0.45
    click: float = 0.35  # of opens
    case_study: float = 0.5  # of clicks on the case-study invite: download the case study
    pricing_visit: float = 0.5  # of clickers: visit /tarifs
    demo_request: float = 0.3  # of pricing visitors
    accept: float = 0.45  # sales' answers to a handoff
    reject: float = 0.3  # (the rest: "later", re-engaged a week on)
    win: float = 0.15  # an SQL signs, each day
    unsubscribe: float = 0.01  # of emails


DEMO_CONSENT = {"consent_source": "page livre blanc", "consent_wording": "J'accepte de recevoir les contenus et offres de Relance."}

def _use_demo_settings(directory: Path) -> None:
    """Point every RELANCE_* setting at the demo folder, for this process and its flows."""
    from relance.settings import get_settings

    os.environ["RELANCE_DATABASE_URL"] = f"sqlite:///{(directory / 'relance.db').resolve()}"
    os.environ["RELANCE_OUTBOX_DIR"] = str((directory / "outbox").resolve())
    os.environ["RELANCE_TRANSPORT"] = "file"
    get_settings.cache_clear()
    if _weak_signing_key():  # the demo's links go nowhere real: a key of its own, never the guessable default
        os.environ["RELANCE_SECRET_KEY"] = secrets.token_urlsafe(32)
        os.environ.pop("RELANCE_SECRET_KEYS_OLD", None)
        get_settings.cache_clear()


def _weak_signing_key() -> bool:
    from relance.settings import SettingError, get_settings, require_signing_keys

    try:
        require_signing_keys(get_settings())
    except SettingError:
        return True
    return False


def sample_leads_csv() -> str:
    return resources.files("relance.demo").joinpath("leads.csv").read_text(encoding="utf-8")


def run_demo(directory: Path, *, console: Console, days: int = DAYS, seed: int = 7, rates: DemoRates = DemoRates()) -> dict:
    """Run the demo and print what happened; returns the summary figures."""
    from relance.importer import import_leads, parse_leads_csv
    from relance.leads import grade_all
    from relance.workspace import load_workspace
    from relance.plans import open_store, sync_scenarios
    from relance.prefect_adapter import quiet_task_runs, run_flow, run_tick
    from relance.settings import get_settings

    started = time.monotonic()
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "outbox").mkdir(parents=True)
    _use_demo_settings(directory)
    settings = get_settings()
    workspace = load_workspace(settings)
    engine = open_store(settings)
    with Session(engine) as session:
        sync_scenarios(session, workspace=workspace, now=START)
        session.commit()
    # professional contacts from the campaigns: mailed on legitimate interest, until their form's consent replaces it
    parsed = parse_leads_csv(sample_leads_csv(), source=None, basis="legitimate_interest")
    with Session(engine) as session:
        imported = import_leads(session, parsed, now=START)
        session.add_all(Cost(source=source, amount=amount, period="2026-03", note="campagne", created_at=START)
                        for source, amount in CAMPAIGN_COSTS.items())
        grade_all(session, workspace.scoring, now=START)
        session.commit()
    console.print(f"[bold]relance demo[/bold] in {directory}/: {imported.created} sample leads imported, "
                  f"scenarios: {', '.join(sorted(workspace.plans))}")

    rng = random.Random(seed)
    emails = list(dict.fromkeys(row.email for row in parsed.rows))  # the file's order: the same demo whatever ids the store gives
    not_yet = emails[:]
    rng.shuffle(not_yet)
    ticks = housekeeping = 0
    pending: list[IncomingEvent] = []
    with quiet_task_runs(), Progress(console=console, transient=True) as progress:
        bar = progress.add_task("simulating days", total=days)
        for day in range(days):
            now = START + timedelta(days=day) + TICK_HOUR
            if day < 21:
                for _ in range(min(rates.downloads_per_day, len(not_yet))):
                    email = not_yet.pop()
                    at = now - timedelta(hours=rng.uniform(1, 14))
                    pending.append(IncomingEvent("form_submitted", email, at, {"form": "livre-blanc", "source": "site-web", **DEMO_CONSENT}))
                    pending.append(IncomingEvent("downloaded", email, at + timedelta(seconds=30), {"asset": "livre-blanc-leads"}))
            if pending:
                with Session(engine) as session:
                    ingest_events(session, workspace=workspace, events=sorted(pending, key=lambda e: e.occurred_at), now=now,
                                  machine_click_seconds=settings.machine_click_seconds)
                    session.commit()
                pending = []
            if _later_due(engine, now):
                run_flow("relance.flows.housekeeping", "reengage", now=now.isoformat())
                housekeeping += 1
            for name in sorted(workspace.plans):
                if _worth_a_tick(engine, workspace, name, now, day):
                    run_tick(name, now=now.isoformat())
                    ticks += 1
            _sales_answer(engine, workspace, now, rng, rates)
            if day % 7 == 6:
                run_flow("relance.flows.housekeeping", "sla", now=now.isoformat())
                housekeeping += 1
            pending = _engagement_after(engine, now, rng, rates)
            progress.advance(bar)

    summary = _summarise(engine, directory, ticks, time.monotonic() - started)
    summary["housekeeping_runs"] = housekeeping
    _print_summary(console, engine, summary, {name: plan.order for name, plan in workspace.plans.items()})
    _print_sales_and_report(console, engine, workspace, START + timedelta(days=days))
    return summary


def _worth_a_tick(engine, workspace, name: str, now: datetime, day: int) -> bool:
    """Tick when something is due; segment scenarios also every Monday to catch new matches."""
    from relance.scenario.model import SegmentTrigger

    if isinstance(workspace.plans[name].scenario.trigger, SegmentTrigger) and day % 7 == 0:
        return True
    with Session(engine) as session:
        due = session.exec(
            select(func.count()).select_from(Enrollment).where(
                Enrollment.scenario == name, Enrollment.status == "active", Enrollment.due_at <= now
            )
        ).one()[0]
        # any tick sends what is pending (hand-off emails written by ingestion): the first scenario's does it
        waiting = name == min(workspace.plans) and session.exec(
            select(func.count()).select_from(Outbox).where(Outbox.status == "pending")).one()[0]
    return due > 0 or bool(waiting)


def _engagement_after(engine, now: datetime, rng: random.Random, rates: DemoRates) -> list[IncomingEvent]:
    """What leads do with today's emails, as events to ingest tomorrow morning."""
    events: list[IncomingEvent] = []
    with Session(engine) as session:
        sent = session.exec(
            select(Outbox, Lead).join(Lead, Lead.id == Outbox.lead_id).where(Outbox.status == "sent", Outbox.sent_at == now)
        ).all()
        for outbox, lead in sent:
            if outbox.kind == "internal":
                continue
            base = {"scenario": outbox.scenario, "step_id": outbox.step_id, "enrollment_id": outbox.enrollment_id,
                    "outbox_id": outbox.id}
            at = now + timedelta(hours=rng.uniform(0.5, 20))
            if rng.random() < rates.unsubscribe:
                events.append(IncomingEvent("unsubscribed", lead.email, at, base))
                continue
            fit_bonus = {"A": 0.15, "B": 0.08}.get(lead.grade, 0.0)
            if rng.random() >= rates.open + fit_bonus:
                continue
            events.append(IncomingEvent("email_opened", lead.email, at, base, f"open:{outbox.id}"))
            if rng.random() >= rates.click + fit_bonus:
                continue
            clicked_at = at + timedelta(minutes=rng.uniform(1, 30))
            events.append(IncomingEvent("email_clicked", lead.email, clicked_at, {**base, "link": "https://example.com/etude-de-cas"}, f"click:{outbox.id}"))
            if outbox.template == "case-study-invite" and rng.random() < rates.case_study:
                events.append(IncomingEvent("downloaded", lead.email, clicked_at + timedelta(minutes=2), {"asset": "etude-de-cas"}))
            if rng.random() < rates.pricing_visit:
                events.append(IncomingEvent("page_visited", lead.email, clicked_at + timedelta(minutes=5), {"path": "/tarifs"}))
                if rng.random() < rates.demo_request:
                    events.append(IncomingEvent("demo_requested", lead.email, clicked_at + timedelta(minutes=9), {}))
    return events


CAMPAIGN_COSTS = {"salon-vivatech": 12000.0, "webinar": 2500.0, "site-web": 1500.0, "linkedin-ads": 6000.0,
                  "import-crm": 0.0, "partenaire": 1800.0}
DEAL_AMOUNT, MARGIN_PER_DEAL = 40000.0, 18000.0


def _later_due(engine, now: datetime) -> bool:
    from relance.sales import later_due

    with Session(engine) as session:
        return bool(later_due(session, now=now))


def _sales_answer(engine, workspace, now: datetime, rng: random.Random, rates: DemoRates) -> None:
    """Sales answers the handoffs opened since yesterday: accept, reject or "later"; some SQLs sign (a won deal)."""
    from relance.deals import Closing, record_deal
    from relance.sales import REJECT_REASONS, Answer, answer
    from relance.store.tables import Handoff

    with Session(engine) as session:
        for handoff in session.exec(select(Handoff).where(Handoff.status == "open")).scalars().all():
            lead = session.get(Lead, handoff.lead_id)
            if rng.random() < 0.2:
                continue  # this one waits: the SLA flow will see it
            draw = rng.random()
            when = min(now + timedelta(hours=rng.uniform(0.5, 30)), handoff.opened_at + timedelta(hours=60))
            if draw < rates.accept:
                reply = Answer("accept", handoff.owner, bant={"budget": "validé", "authority": lead.job_title or "?",
                                                              "need": "scoring et nurturing", "timing": "ce trimestre"})
            elif draw < rates.accept + rates.reject:
                reply = Answer("reject", handoff.owner, reason=rng.choice(REJECT_REASONS[:5]), note="appel de qualification")
            else:
                reply = Answer("later", handoff.owner, reason="budget au prochain trimestre", until=now + timedelta(days=7))
            answer(session, email=lead.email, reply=reply, scoring=workspace.scoring, now=max(when, now))
        for lead in session.exec(select(Lead).where(Lead.stage == "sql")).scalars().all():
            if rng.random() < rates.win:
                record_deal(session, email=lead.email, scoring=workspace.scoring, now=now,
                            closing=Closing("won", "crm", amount=DEAL_AMOUNT, margin=MARGIN_PER_DEAL, note="contrat signé"))
        session.commit()


def _print_sales_and_report(console: Console, engine, workspace, now) -> None:
    from relance.report import build_report
    from relance.report_tables import print_report

    with Session(engine) as session:
        figures = build_report(session, now=now, orders={n: p.order for n, p in workspace.plans.items()})
    print_report(figures, console, Console(stderr=True))  # as `relance report` does: warnings on stderr


def _summarise(engine, directory: Path, ticks: int, seconds: float) -> dict:
    with Session(engine) as session:
        stages = dict(session.exec(select(Lead.stage, func.count()).group_by(Lead.stage)).all())
        outbox = dict(session.exec(select(Outbox.status, func.count()).group_by(Outbox.status)).all())
        enrollments = dict(session.exec(select(Enrollment.scenario, func.count()).group_by(Enrollment.scenario)).all())
    return {
        "seconds": round(seconds, 1), "ticks": ticks, "stages": stages, "outbox": outbox,
        "enrollments": enrollments, "eml_files": len(list((directory / "outbox").glob("*.eml"))),
    }


def _print_summary(console: Console, engine, summary: dict, orders: dict[str, tuple[str, ...]]) -> None:
    with Session(engine) as session:
        rows = session.exec(
            select(StepLog.scenario, StepLog.step_id, StepLog.outcome, func.count())
            .group_by(StepLog.scenario, StepLog.step_id, StepLog.outcome)
            .order_by(StepLog.scenario, StepLog.step_id)
        ).all()
    per_step: dict[tuple[str, str], Counter] = {}
    for scenario, step, outcome, n in rows:
        per_step.setdefault((scenario, step), Counter())[outcome] += n
    table = Table("scenario", "step", "outcomes", title="Per-step summary")
    def plan_order(key: tuple[str, str]) -> tuple[str, int]:
        order = orders.get(key[0], ())
        return key[0], order.index(key[1]) if key[1] in order else len(order)

    for (scenario, step), outcomes in sorted(per_step.items(), key=lambda item: plan_order(item[0])):
        table.add_row(scenario, step, ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    console.print(table)
    console.print(
        f"{summary['ticks']} Prefect tick flow runs; emails: {summary['outbox']}; "
        f"{summary['eml_files']} .eml files in the outbox; stages: {summary['stages']}; "
        f"{summary['seconds']} s"
    )
