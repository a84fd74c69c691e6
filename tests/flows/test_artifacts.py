"""What a tick tells the operator: the artifact key, the per-step table, the log line."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from relance.tasks.artifacts import artifact_key, figures_key, figures_link, step_rows
from relance.tick_figures import TickReport, summary
from tests.flows.test_tick_flow import NOW, _leads, settings  # noqa: F401 - the flow test's folder, leads and fixture


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


def test_a_tick_publishes_who_is_where_and_the_account_each_version_titled_by_its_time(settings) -> None:
    """Read back through the Prefect client: the tick's table, who is where in its scenario, the account overview;
    two ticks give each key two versions, told apart by their titles."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from relance.flows.tick import tick

    _leads(settings, 3)
    runs = {tick(scenario="welcome", now=at.isoformat(), return_state=True).state_details.flow_run_id
            for at in (NOW, NOW + timedelta(hours=1))}

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["tick-welcome", "report-welcome", "account-overview"])), sort=ArtifactSort.CREATED_DESC)
    # this test's versions: other tests of the session publish under these keys too (account-overview above all)
    versions = {key: [a for a in found if a.key == key and a.flow_run_id in runs]
                for key in ("tick-welcome", "report-welcome", "account-overview")}
    assert [len(v) for v in versions.values()] == [2, 2, 2]
    assert [a.description.split(":")[0] for a in versions["tick-welcome"]] == [
        "welcome, tick of 2026-03-02 10", "welcome, tick of 2026-03-02 09"]  # newest first, each named by its tick
    assert versions["tick-welcome"][1].description.startswith("welcome, tick of 2026-03-02 09:00 UTC: 3 entered")
    who, account = versions["report-welcome"][0], versions["account-overview"][0]
    assert who.type == "markdown" and who.description == (
        "welcome at 2026-03-02 10:00 UTC: 3 in the scenario now, 3 waiting, 0 due within 1 h, 3 entered since the start")
    assert "| pause | 3 | " + "█" * 20 + " | 3 | 0 | 2026-03-04 09:00 UTC | 2026-03-04 09:00 UTC |" in who.data
    assert "| hello | 3 | " + "█" * 20 + " | 3 (100.0 %) | - | 0 | 0 | 0 |" in who.data
    assert account.type == "markdown" and account.description == (
        "Account at 2026-03-02 10:00 UTC: 3 leads, 0 MQL and 0 SQL reached this week, 0 hand-offs waiting, 0 SLA breaches")
    assert "| lead | 3 (100.0 %) | " + "█" * 20 + " |" in account.data
    assert "| 3 | 0 (0.00 %) | 0 (0.00 %) | 0 (0.00 %) | 0 (0.00 %) |" in account.data  # 3 emails sent, none bounced
