"""What a tick tells the operator: the artifact key, the per-step table, the log line."""

from __future__ import annotations

from collections import Counter

from relance.tasks.artifacts import artifact_key, figures_key, figures_link, step_rows
from relance.tick_figures import TickReport, summary


def test_the_artifact_key_keeps_only_what_prefect_accepts() -> None:
    assert artifact_key("whitepaper-nurture") == "tick-whitepaper-nurture"
    assert artifact_key("Relance_Salon 2026") == "tick-relance-salon-2026"


def test_step_rows_follow_the_scenario_order_and_escape_markdown() -> None:
    """Every step of the scenario, in its order, then a step of an older version still holding leads: who is there
    now (from the enrollments) beside what this tick did there (from its step log)."""
    counts = Counter({("wait|2", "waiting"): 4, ("send-guide", "sent"): 5, ("opened?", "else"): 1, ("opened?", "then"): 3})
    standing = {"wait|2": (9, 9), "old-step": (2, 0)}

    rows = step_rows(counts, order=("send-guide", "wait|2", "opened?", "bye"), standing=standing)

    assert rows == [
        {"step": "send-guide", "now here": 0, "waiting": 0, "this tick": "sent 5"},
        {"step": "wait\\|2", "now here": 9, "waiting": 9, "this tick": "waiting 4"},
        {"step": "opened?", "now here": 0, "waiting": 0, "this tick": "else 1, then 3"},
        {"step": "bye", "now here": 0, "waiting": 0, "this tick": ""},
        {"step": "old-step", "now here": 2, "waiting": 0, "this tick": ""},
    ]


def test_the_summary_reads_like_an_operator_report() -> None:
    report = TickReport(scenario="whitepaper-nurture", entered=12, advanced=212, batches=3, sent=198, skipped=2, leftovers=4,
                        waiting=31)
    report.counts.update({("pause", "waiting"): 14, ("send-guide", "sent"): 198})  # waiting: all of them, not this tick's 14

    assert summary(report, undelivered_batches=1) == (
        "whitepaper-nurture: 12 entered, 212 due, 3 batches, 198 sent, 31 waiting, 2 skipped (suppressed), "
        "4 other pending messages sent (hand-off and SLA emails, what earlier runs left), 1 batch not delivered after "
        "every retry (their emails stay pending for the next tick)"
    )


def test_the_figures_artifact_is_linked_absolutely_when_the_ui_address_is_known() -> None:
    assert figures_key("Relance_Salon 2026") == "report-relance-salon-2026"
    assert figures_link("welcome", "http://prefect.internal:4200/") == (
        "[report-welcome](http://prefect.internal:4200/artifacts/key/report-welcome)"
    )
    assert figures_link("welcome", None) == "[report-welcome](/artifacts/key/report-welcome)"
