"""The report on a hand-built data set; every expected figure is worked out by hand in the comments."""

from __future__ import annotations

from datetime import timedelta

from relance.report import build_report
from relance.store.tables import Cost, Deal, Enrollment, Event, Handoff, Lead, Outbox, ScenarioVersion, StageChange, StepLog


def _data(session, t0):
    h = lambda n: t0 + timedelta(hours=n)  # noqa: E731
    leads = {name: Lead(email=f"{name}@x.example", source=src, stage=stage, created_at=t0, updated_at=t0)
             for name, src, stage in (("a", "salon", "customer"), ("b", "salon", "mql"), ("c", "webinar", "nurturing"), ("d", "webinar", "lead"))}
    session.add_all(leads.values())
    session.flush()
    L = {k: v.id for k, v in leads.items()}
    for lead, frm, to, at in (("a", "lead", "mql", 10), ("a", "mql", "sql-pending", 20), ("a", "sql-pending", "sql", 30),
                              ("a", "sql", "customer", 50), ("b", "lead", "mql", 4), ("c", "lead", "mql", 6),
                              ("c", "mql", "sql-pending", 8), ("c", "sql-pending", "nurturing", 13)):
        session.add(StageChange(lead_id=L[lead], from_stage=frm, to_stage=to, at=h(at)))
    def handoff(lead, opened, answered=None, status="open", reason=None, missed=None):
        session.add(Handoff(lead_id=L[lead], owner="o@x.example", opened_at=h(opened), target_at=h(opened + 2),
                            deadline_at=h(opened + 48), answered_at=h(answered) if answered is not None else None,
                            status=status, reason=reason, deadline_missed_at=h(missed) if missed is not None else None, bant={}))
    handoff("a", 20, answered=21, status="accepted")                    # within target and deadline
    handoff("c", 8, answered=13, status="rejected", reason="no-budget")  # within deadline only
    handoff("d", 0, missed=48)                                           # open, deadline missed
    session.add_all([Cost(source="salon", amount=1000, margin=5000, created_at=t0), Cost(source="webinar", amount=400, created_at=t0)])
    session.add(Deal(lead_id=L["a"], outcome="won", amount=8000, margin=0, by="o@x.example", closed_at=h(50), recorded_at=h(50)))
    version = ScenarioVersion(scenario="s", hash="h", definition={}, created_at=t0)
    session.add(version)
    session.flush()
    # a waits at b; b went through c and left there
    enrollments = [Enrollment(lead_id=L["a"], scenario="s", version_id=version.id, entered_at=t0, state={}, step_id="b",
                              waiting={"step_id": "b", "kind": "wait"}),
                   Enrollment(lead_id=L["b"], scenario="s", version_id=version.id, entered_at=t0, state={}, step_id="c",
                              status="completed", left_at=t0)]
    session.add_all(enrollments)
    session.flush()
    for e, status in ((0, "sent"), (1, "skipped")):  # a's email left, b's was suppressed: 1 sent at step a
        session.add(Outbox(enrollment_id=enrollments[e].id, lead_id=enrollments[e].lead_id, scenario="s", step_id="a",
                           template="t", to_address="x@x.example", status=status, created_at=t0))
    for e, step, kind, outcome in ((0, "a", "enter", "entered"), (0, "a", "send", "sent"), (0, "b", "if", "then"),
                                   (1, "a", "enter", "entered"), (1, "a", "send", "sent"), (1, "b", "if", "else"), (1, "c", "end", "left")):
        session.add(StepLog(enrollment_id=enrollments[e].id, lead_id=enrollments[e].lead_id, scenario="s", version_id=version.id,
                            step_id=step, kind=kind, outcome=outcome, at=t0, detail={}))
    for lead, type_, key in (("a", "email_opened", "o1"), ("a", "email_opened", "o2"), ("b", "email_clicked", "c1")):
        session.add(Event(lead_id=L[lead], type=type_, occurred_at=t0, received_at=t0, idempotency_key=key,
                          properties={"scenario": "s", "step_id": "a"}))
    session.commit()


def test_the_report_matches_figures_worked_out_by_hand(session, clock):
    _data(session, clock.now())
    report = build_report(session, now=clock.now(), orders={"s": ("a", "b", "c")})

    funnel = report["funnel"]
    assert funnel["counts"] == {"lead": 4, "mql": 3, "sql": 1, "customer": 1}
    assert funnel["rates"] == {"lead_to_mql": 0.75, "mql_to_sql": 0.3333, "sql_to_customer": 1.0, "lead_to_customer": 0.25}
    assert funnel["median_hours_to_mql"] == 6.0   # 10, 4, 6 hours
    assert funnel["median_hours_to_sql"] == 30.0

    sla = report["sla"]
    assert (sla["handoffs"], sla["open"], sla["measured"], sla["breaches"]) == (3, 1, 3, 1)
    assert (sla["within_target"], sla["within_deadline"]) == (0.3333, 0.6667)
    assert sla["rejection_reasons"] == {"no-budget": 1} and sla["answers"] == {"accepted": 1, "rejected": 1}

    money = report["economics"]
    assert money["by_source"]["salon"] == {"leads": 2, "customers": 1, "deals_won": 1, "deals_lost": 0, "revenue": 8000,
                                           "cost": 1000, "gross_margin": 5000, "cost_per_lead": 500.0,
                                           "cost_per_acquisition": 1000.0, "roi": 4.0}
    assert money["by_source"]["webinar"]["roi"] == -1.0 and money["by_source"]["webinar"]["cost_per_acquisition"] is None
    assert money["total"] == {"leads": 4, "customers": 1, "deals_won": 1, "deals_lost": 0, "revenue": 8000, "cost": 1400,
                              "gross_margin": 5000, "cost_per_lead": 350.0, "cost_per_acquisition": 1400.0,
                              "roi": 2.5714}   # (5000 - 1400) / 1400

    a, b, c = report["scenarios"]["s"]
    assert (a["step"], a["reached"], a["entered"], a["sent"], a["opened"], a["clicked"]) == ("a", 2, 2, 1, 1, 1)
    assert (b["step"], b["outcomes"], b["now"], b["waiting"], b["left"]) == ("b", {"then": 1, "else": 1}, 1, 1, 0)
    assert (c["step"], c["left"], c["now"]) == ("c", 1, 0)
    assert report["leads_by_stage"] == {"customer": 1, "mql": 1, "nurturing": 1, "lead": 1}


def test_the_report_can_be_narrowed_to_one_scenario(session, clock):
    _data(session, clock.now())
    assert list(build_report(session, now=clock.now(), scenario="s")["scenarios"]) == ["s"]
    assert build_report(session, now=clock.now(), scenario="other")["scenarios"] == {}


def test_the_report_counts_the_outbox_and_names_messages_cut_off_mid_send(session, clock):
    from relance.store.tables import Outbox

    lead = Lead(email="a@x.example", created_at=clock.now(), updated_at=clock.now())
    session.add(lead)
    session.flush()
    def row(status, hours_ago, step):
        session.add(Outbox(lead_id=lead.id, template="t", to_address=lead.email, status=status, step_id=step, scenario="s",
                           created_at=clock.now() - timedelta(hours=hours_ago)))
    row("sent", 5, "a"), row("sending", 3, "b"), row("sending", 0.1, "c"), row("pending", 0, "d"), row("unknown", 1, "e")
    session.commit()
    delivery = build_report(session, now=clock.now())["delivery"]
    assert delivery["by_status"] == {"sent": 1, "sending": 2, "pending": 1, "unknown": 1}
    # "b" was cut off mid-send (sending for 3 h), "e" had no answer; "c" (6 min) may still be on its way
    assert [r["step_id"] for r in delivery["unknown"]] == ["b", "e"]
