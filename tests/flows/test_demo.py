"""`relance demo` on a short horizon: real Prefect tick runs, a real outbox of MIME files."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from rich.console import Console
from sqlalchemy import text as sql
from sqlmodel import Session

from relance.demo.run import START, run_demo
from relance.report import build_report
from relance.settings import get_settings
from relance.store.db import make_engine
from relance.workspace import load_workspace
from test_report_figures import assert_report_matches  # noqa: E402  (tests/test_report_figures.py)

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_sends_well_formed_multipart_emails_through_prefect_ticks(prefect_home, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(ROOT / "templates" / "emails"))
    for name in ("RELANCE_DATABASE_URL", "RELANCE_OUTBOX_DIR", "RELANCE_TRANSPORT"):
        monkeypatch.setenv(name, "")  # the demo sets them for its own folder
    console = Console(record=True, width=160)
    summary = run_demo(tmp_path / "demo", console=console, days=6)
    workspace = load_workspace(get_settings())
    get_settings.cache_clear()

    assert summary["ticks"] >= 6
    files = sorted((tmp_path / "demo" / "outbox").glob("*.eml"))
    assert len(files) == summary["outbox"]["sent"] >= 40
    staff = {*workspace.scoring.sales.owners, workspace.scoring.sales.manager}
    to_leads = [m for m in (message_from_bytes(p.read_bytes(), policy=default) for p in files) if m["To"] not in staff]
    assert len(to_leads) >= 40
    for message in to_leads[:25]:
        assert message.get_content_type() == "multipart/alternative"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Unsubscribe"].startswith("<http")
        parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
        assert set(parts) == {"text/plain", "text/html"}
        for text in (*parts.values(), message["Subject"]):
            assert "{{" not in text and "{%" not in text
    output = console.export_text()
    assert "Per-step summary" in output and "send-guide" in output
    printed = "".join(capfd.readouterr())  # what Prefect's loggers wrote to the terminal (nothing under xdist)
    assert "Task run '" not in printed  # the flows' lines, not a line per task run

    # the report the demo printed is what its database says, read again by plain SQL
    engine, as_of = make_engine(f"sqlite:///{tmp_path / 'demo' / 'relance.db'}"), START + timedelta(days=6)
    orders = {name: plan.order for name, plan in workspace.plans.items()}
    with Session(engine) as session:
        report = build_report(session, now=as_of, orders=orders)
    with engine.connect() as connection:
        assert_report_matches(report, connection, as_of, orders)
        clicks = dict(connection.execute(sql("select type, count(*) from event where type like 'email_clicked%' group by type")).all())
    engine.dispose()
    assert clicks.get("email_clicked", 0) > 0 and "email_clicked_by_machine" not in clicks  # its leads click as people do
    sla = report["sla"]
    assert sla["breaches"] == sla["measured"] - sla["met_deadline"]

    # customers come from won deals, their margins with them: no cost row fakes them
    from sqlalchemy import select

    from relance.store.tables import Cost, Deal, Lead

    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'relance.db'}")
    with Session(engine) as session:
        customers = set(session.exec(select(Lead.id).where(Lead.stage == "customer")).scalars())
        won = set(session.exec(select(Deal.lead_id).where(Deal.outcome == "won", Deal.margin > 0)).scalars())
        margins = session.exec(select(Cost.margin)).scalars().all()
    engine.dispose()
    assert customers and customers == won, summary["stages"]
    assert set(margins) == {0.0}
    assert "Economics" in output


def test_the_demo_keeps_prefects_task_runs_quiet_even_when_prefect_sets_its_loggers_up_again():
    """Prefect configures its loggers again from logging.yml and the environment during a run (setup_logging)."""
    import logging

    from prefect.logging.configuration import setup_logging

    from relance.prefect_adapter import quiet_task_runs

    task_runs, flow_runs = logging.getLogger("prefect.task_runs"), logging.getLogger("prefect.flow_runs")
    setup_logging(incremental=True)
    before = task_runs.getEffectiveLevel(), flow_runs.getEffectiveLevel()
    with quiet_task_runs():
        setup_logging(incremental=True)
        assert not task_runs.isEnabledFor(logging.INFO) and task_runs.isEnabledFor(logging.WARNING)
        assert flow_runs.getEffectiveLevel() == before[1]  # the flows' own lines are left as they were
    setup_logging(incremental=True)
    assert (task_runs.getEffectiveLevel(), flow_runs.getEffectiveLevel()) == before
