"""One clock for every command: what a command records happens at its `--now`, so a scripted day holds together."""

from __future__ import annotations

import json

import pytest
import typer.main
from typer.testing import CliRunner

from relance.cli import app


# Commands that record and read no instant of their own: everything else must take --now.
TIMELESS = {
    "validate", "schema", "preview", "serve",  # serve is a live server: the wall clock is its clock
    "simulate", "bench", "demo",  # these run on a virtual clock of their own
    "lead show", "lead export", "suppress list", "outbox resolve", "outbox resend", "outbox list",
    "deploy", "prefect-server", "worker",  # they set up the Prefect server: its scheduler runs on the wall clock
}


def relance(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _commands(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_command_that_records_or_reads_time_takes_now():
    missing = [name for name, command in _commands(typer.main.get_command(app))
               if name not in TIMELESS and not any("--now" in p.opts for p in command.params)]
    assert missing == []


def test_a_scripted_day_on_a_virtual_clock_holds_together(env):
    """The README's own sequence: import, an event, then a tick, all in March 2026 while the wall clock says otherwise."""
    csv = env / "leads.csv"
    csv.write_text("email,first_name,company,country\nlea.martin@acme.example,Léa,ACME,FR\n", encoding="utf-8")
    assert relance("import", str(csv), "--basis", "legitimate_interest", "--now", "2026-03-02T09:00:00+01:00").exit_code == 0
    stored = relance("event", "downloaded", "--lead", "lea.martin@acme.example", "--prop", "asset=livre-blanc-leads",
                     "--now", "2026-03-02T10:00:00+01:00")
    assert stored.exit_code == 0 and "entered 1 scenario(s)" in stored.output, stored.output

    ticked = relance("tick", "whitepaper-nurture", "--now", "2026-03-02T10:05:00+01:00")
    assert ticked.exit_code == 0, ticked.output

    lead = json.loads(relance("lead", "show", "lea.martin@acme.example", "--json").output)
    (enrollment,) = lead["enrollments"]
    assert enrollment["entered_at"].startswith("2026-03-02T09:00:00")  # UTC
    assert [c["at"][:10] for c in lead["score_ledger"]] == ["2026-03-02"]
    assert [o["status"] for o in lead["emails"]] == ["sent"]  # due on the virtual day, sent by the virtual tick
    assert lead["emails"][0]["sent_at"].startswith("2026-03-02T09:05:00")

    assert relance("tick", "whitepaper-nurture", "--now", "2026-03-05T10:05:00+01:00").exit_code == 0
    lead = json.loads(relance("lead", "show", "lea.martin@acme.example", "--json").output)
    assert sorted((o["template"], o["status"]) for o in lead["emails"]) == [
        ("whitepaper-followup", "sent"), ("whitepaper-reminder", "sent")]  # three days later, unopened: the reminder


@pytest.mark.parametrize("args, option", [
    (["event", "downloaded", "--lead", "x@acme.example", "--at", "tomorrow"], "--at"),
    (["event", "downloaded", "--lead", "x@acme.example", "--now", "banana"], "--now"),
    (["import", "leads.csv", "--now", "2026-13-01"], "--now"),
    (["suppress", "add", "x@acme.example", "--now", "soon"], "--now"),
    (["sales", "later", "x@acme.example", "--until", "banana"], "--until"),
    (["flow", "sla", "--now", "banana"], "--now"),
])
def test_a_bad_instant_is_refused_naming_the_option_that_was_typed(env, args, option):
    (env / "leads.csv").write_text("email\nx@acme.example\n", encoding="utf-8")
    result = CliRunner().invoke(app, [a.replace("leads.csv", str(env / "leads.csv")) for a in args])

    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in result.output and "is not an ISO date/time" in result.output
    assert "Traceback" not in result.output
