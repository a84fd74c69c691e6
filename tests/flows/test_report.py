"""What a tick tells the operator: the artifact key, the per-step table, the log line."""

from __future__ import annotations

from collections import Counter

from relance.runner import TickReport
from tasks.report import artifact_key, step_rows, summary


def test_the_artifact_key_keeps_only_what_prefect_accepts() -> None:
    assert artifact_key("whitepaper-nurture") == "tick-whitepaper-nurture"
    assert artifact_key("Relance_Salon 2026") == "tick-relance-salon-2026"


def test_step_rows_follow_the_scenario_order_and_escape_markdown() -> None:
    counts = Counter({("wait|2", "waiting"): 4, ("send-guide", "sent"): 5, ("opened?", "else"): 1, ("opened?", "then"): 3})

    rows = step_rows(counts, order=("send-guide", "wait|2", "opened?"))

    assert rows == [
        {"step": "send-guide", "outcome": "sent", "count": 5},
        {"step": "wait\\|2", "outcome": "waiting", "count": 4},
        {"step": "opened?", "outcome": "else", "count": 1},
        {"step": "opened?", "outcome": "then", "count": 3},
    ]


def test_the_summary_reads_like_an_operator_report() -> None:
    report = TickReport(scenario="whitepaper-nurture", entered=12, advanced=212, batches=3, sent=198, skipped=2)
    report.counts.update({("pause", "waiting"): 14, ("send-guide", "sent"): 198})

    assert summary(report, undelivered_batches=1) == (
        "whitepaper-nurture: 12 entered, 212 due, 3 batches, 198 sent, 14 waiting, 2 skipped (suppressed), "
        "1 batch not delivered after every retry (their emails stay pending)"
    )
