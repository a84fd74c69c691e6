"""CPL / CPA / ROI per source, per period and in all, recomputed from the raw rows by plain SQL and date arithmetic
of this file (not the report's month grouping), on a data set of several periods, sources without costs, costs
without leads, several deals per customer and lost deals; both backends. Then the same through the command line."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from relance.cli import app
from relance.deals import parse_period
from relance.report import economics
from relance.store.tables import Cost, Deal, Lead

ROOT = Path(__file__).resolve().parents[1]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


LEADS = {  # name: (source, created)
    "l1": ("salon", "2025-11-15T10:00"), "l2": ("salon", "2026-01-10T10:00"), "l3": ("salon", "2026-02-20T10:00"),
    "l4": ("salon", "2026-03-31T23:30"),  # still March in UTC (April in Paris, or on a server set to UTC+14)
    "l5": ("salon", "2026-04-02T08:00"), "w1": ("webinar", "2026-01-05T08:00"), "w2": ("webinar", "2026-05-05T08:00"),
    "n1": ("", "2026-02-01T08:00"), "p1": ("partner", "2026-06-30T23:59:59"),
}
DEALS = [  # lead, outcome, amount, margin, closed
    ("l1", "won", 10000, 4000, "2026-01-20T15:00"), ("l1", "won", 5000, 2500, "2026-04-15T15:00"),  # an upsell in Q2
    ("l1", "lost", 0, 0, "2026-05-01T10:00"), ("l2", "lost", 0, 0, "2026-02-01T10:00"),
    ("l2", "won", 1000, 500, "2026-03-01T00:00"), ("l3", "won", 2000, 1000, "2026-03-31T23:59:59"),
    ("w1", "won", 3000, 1200, "2026-04-01T00:00"), ("n1", "lost", 0, 0, "2026-02-15T10:00"),
    ("p1", "won", 800, 100, "2026-07-01T00:00"),
]
COSTS = [  # source, period, amount, margin
    ("salon", "2026-Q1", 3000, 0), ("salon", "2026-Q4", 999, 0), ("salon", "2026-01", 500, 200), ("salon", "2026", 1200, 0),
    ("salon", "2025-Q4", 800, 0), ("linkedin", "2026-Q1", 600, 0), ("linkedin", "2026-02", 150, 50),
    ("partner", "2026-Q3", 400, 0),
    ("salon", "", 77, 0), ("salon", "Q1 2026", 33, 0),  # recorded before periods were checked: all-time figures only
]


@pytest.fixture
def data(session):
    leads = {name: Lead(email=f"{name}@x.example", source=source, created_at=_at(at), updated_at=_at(at))
             for name, (source, at) in LEADS.items()}
    session.add_all(leads.values())
    session.flush()
    session.add_all(Deal(lead_id=leads[name].id, outcome=outcome, amount=amount, margin=margin, closed_at=_at(at),
                         recorded_at=_at(at), reason="price" if outcome == "lost" else None) for name, outcome, amount, margin, at in DEALS)
    session.add_all(Cost(source=s, period=p, amount=a, margin=m, created_at=_at("2026-01-01T00:00")) for s, p, a, m in COSTS)
    session.commit()
    if session.get_bind().dialect.name == "postgresql":  # months must be counted in UTC whatever the server's zone
        session.execute(text("SET TIME ZONE 'Pacific/Kiritimati'"))
    return session


# The independent computation: raw rows by plain SQL, periods as date ranges.


def _utc(value) -> datetime:
    if isinstance(value, str):  # SQLite: naive UTC text
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _range(name: str) -> tuple[date, date] | None:
    """[start, end) of a period name, or None for a name that is no period."""
    parts = name.split("-")
    if not parts[0].isdigit() or len(parts[0]) != 4 or len(parts) > 2:
        return None
    year = int(parts[0])
    if len(parts) == 1:
        return date(year, 1, 1), date(year + 1, 1, 1)
    if parts[1] in ("Q1", "Q2", "Q3", "Q4"):
        first = 3 * int(parts[1][1]) - 2
        return date(year, first, 1), (date(year, first + 3, 1) if first < 10 else date(year + 1, 1, 1))
    if parts[1].isdigit() and len(parts[1]) == 2 and 1 <= int(parts[1]) <= 12:
        month = int(parts[1])
        return date(year, month, 1), (date(year, month + 1, 1) if month < 12 else date(year + 1, 1, 1))
    return None


def _quarter_name(day: date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def _raw(session):
    leads = {row[0]: (row[1], _utc(row[2]).date()) for row in session.execute(text("SELECT id, source, created_at FROM lead"))}
    deals = [(row[0], row[1], row[2], row[3], _utc(row[4]).date())
             for row in session.execute(text("SELECT lead_id, outcome, amount, margin, closed_at FROM deal"))]
    costs = [tuple(row) for row in session.execute(text("SELECT source, period, amount, margin FROM cost"))]
    return leads, deals, costs


def _figures(leads, customers, won, lost, revenue, cost, margin) -> dict:
    return {"leads": leads, "customers": customers, "deals_won": won, "deals_lost": lost, "revenue": round(revenue, 2),
            "cost": round(cost, 2), "gross_margin": round(margin, 2),
            "cost_per_lead": round(cost / leads, 2) if leads and cost else None,
            "cost_per_acquisition": round(cost / customers, 2) if customers and cost else None,
            "roi": round((margin - cost) / cost, 4) if cost else None}


def _expected_scope(raw, scope: tuple[date, date] | None) -> dict:
    leads, deals, costs = raw
    inside = (lambda day: True) if scope is None else (lambda day: scope[0] <= day < scope[1])
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for source, created in leads.values():
        if inside(created):
            sums[source]["leads"] += 1
    first_won: dict[int, date] = {}
    for lead_id, outcome, amount, margin, closed in deals:
        if outcome == "won":
            first_won[lead_id] = min(closed, first_won.get(lead_id, closed))
        if inside(closed):
            source = leads[lead_id][0]
            sums[source]["won" if outcome == "won" else "lost"] += 1
            if outcome == "won":
                sums[source]["revenue"] += amount
                sums[source]["margin"] += margin
    for lead_id, day in first_won.items():
        if inside(day):
            sums[leads[lead_id][0]]["customers"] += 1
    for source, period, amount, margin in costs:
        span = _range(period)
        if scope is None or (span is not None and scope[0] <= span[0] and span[1] <= scope[1]):
            sums[source]["cost"] += amount
            sums[source]["margin"] += margin

    def of(s):
        return _figures(int(s["leads"]), int(s["customers"]), int(s["won"]), int(s["lost"]), s["revenue"], s["cost"], s["margin"])

    total: dict[str, float] = defaultdict(float)
    for s in sums.values():
        for key, value in s.items():
            total[key] += value
    return {"by_source": {(source or "(none)"): of(sums[source]) for source in sorted(sums)}, "total": of(total)}


def _expected(raw, period: str | None = None) -> dict:
    leads, deals, costs = raw
    scope = _range(period) if period else None
    names = {p for _s, p, _a, _m in costs if _range(p)}
    names |= {_quarter_name(created) for _source, created in leads.values()}
    names |= {_quarter_name(closed) for *_rest, closed in deals}
    if scope:
        names = {n for n in names if scope[0] <= _range(n)[0] and _range(n)[1] <= scope[1]}
    ordered = sorted(names, key=lambda n: (_range(n)[0], -(_range(n)[1] - _range(n)[0]).days))
    return {"period": period, **_expected_scope(raw, scope), "by_period": {n: _expected_scope(raw, _range(n)) for n in ordered}}


def test_every_figure_matches_an_independent_computation_from_the_raw_rows(data):
    raw = _raw(data)
    assert economics(data) == _expected(raw)
    for period in ("2026-Q1", "2026", "2025", "2026-03", "2026-Q2", "2027"):
        assert economics(data, parse_period(period)) == _expected(raw, period), period


def test_the_figures_of_the_first_quarter_as_worked_out_by_hand(data):
    q1 = economics(data, parse_period("2026-Q1"))
    # leads l2 l3 l4; first wins of l1 (01-20), l2 (03-01), l3 (03-31 23:59:59); l2 lost on 02-01;
    # costs 2026-Q1 3000 + 2026-01 500 (not the year's 1200, nor Q4's 999); margins 4000 + 500 + 1000 + 200 (with a cost)
    assert q1["by_source"]["salon"] == {"leads": 3, "customers": 3, "deals_won": 3, "deals_lost": 1, "revenue": 13000.0,
                                        "cost": 3500.0, "gross_margin": 5700.0, "cost_per_lead": 1166.67,
                                        "cost_per_acquisition": 1166.67, "roi": 0.6286}
    assert q1["by_source"]["linkedin"]["cost"] == 750.0 and q1["by_source"]["linkedin"]["leads"] == 0   # costs, no leads
    assert q1["by_source"]["webinar"]["cost_per_lead"] is None                                          # leads, no costs
    assert list(q1["by_period"]) == ["2026-Q1", "2026-01", "2026-02"]
    # the Q2 upsell of l1 adds margin but no new customer
    q2 = economics(data, parse_period("2026-Q2"))["by_source"]["salon"]
    assert (q2["customers"], q2["deals_won"], q2["gross_margin"], q2["cost"]) == (0, 1, 2500.0, 0.0)
    everything = economics(data)
    assert everything["total"]["customers"] == 5 and everything["total"]["cost"] == 7759.0  # with the undated 77 and 33
    assert list(everything["by_period"])[:3] == ["2025-Q4", "2026", "2026-Q1"]


# The command line


@pytest.fixture
def env(env: Path) -> Path:
    """The shipped project (tests/conftest.py) with its leads imported."""
    tmp_path = env
    (tmp_path / "l.csv").write_text("email,first_name,source\na@x.example,A,salon\nb@x.example,B,salon\n", encoding="utf-8")
    assert CliRunner().invoke(app, ["import", str(tmp_path / "l.csv")]).exit_code == 0
    return tmp_path


def relance(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_cost_counts_in_its_own_period_only(env):
    assert relance("cost", "add", "salon", "1000", "--period", "2026-Q1", "--now", "2026-12-01").exit_code == 0
    assert relance("cost", "add", "salon", "4000", "--period", "2026-Q4", "--now", "2026-12-01").exit_code == 0
    assert relance("sales", "won", "a@x.example", "--amount", "9000", "--margin", "3000", "--on", "2026-02-01",
                   "--now", "2026-12-01").exit_code == 0
    q1 = json.loads(relance("report", "--json", "--period", "2026-Q1", "--now", "2026-12-01").output)["economics"]
    assert q1["period"] == "2026-Q1"
    assert (q1["total"]["cost"], q1["total"]["customers"], q1["total"]["cost_per_acquisition"], q1["total"]["roi"]) == (
        1000.0, 1, 1000.0, 2.0)
    assert list(q1["by_period"]) == ["2026-Q1"]
    everything = json.loads(relance("report", "--json").output)["economics"]
    assert everything["total"]["cost"] == 5000.0 and everything["by_period"]["2026-Q4"]["total"]["cost"] == 4000.0
    table = relance("report", "--period", "2026-Q1", "--now", "2026-12-01").output
    assert "Economics 2026-Q1" in table and "Economics by period" in table
    assert "…" not in table and " 2026-Q1 " in table and " 2.00" in table  # nothing cut in 80 columns


def test_cost_add_records_the_month_of_now_by_default_and_names_unknown_sources(env):
    result = relance("cost", "add", "salon", "250", "--now", "2026-03-15T10:00:00")
    assert result.exit_code == 0 and "salon: cost 250.00, margin 0.00 recorded for 2026-03" in result.output
    unknown = relance("cost", "add", "foire-de-lyon", "100", "--period", "2026")
    assert unknown.exit_code == 0 and "recorded for 2026" in unknown.output
    assert "no lead has source foire-de-lyon yet (the cost is kept and counts once leads come with it); known sources: salon" \
        in unknown.output
    typo = relance("cost", "add", "salons", "100", "--period", "2026")
    assert "no lead has source salons yet" in typo.output and "did you mean salon?" in typo.output
    costs = json.loads(relance("report", "--json").output)["economics"]["by_source"]
    assert costs["foire-de-lyon"]["cost"] == 100.0 and costs["salon"]["cost"] == 250.0


@pytest.mark.parametrize("args, message", [
    (["cost", "add", "salon", "10", "--period", "Q1-2026"], "error: --period 'Q1-2026' is not a period: use a year (2026), a quarter (2026-Q1) or a month (2026-03)"),
    (["cost", "add", "salon", "10", "--period", "2026-13"], "error: --period '2026-13' is not a period"),
    (["cost", "add", "salon", "--", "-10"], "error: AMOUNT must not be negative"),
    (["cost", "add", "salon", "10", "--margin", "-1"], "error: --margin must not be negative"),
    (["report", "--period", "2026-Q5"], "error: --period '2026-Q5' is not a period"),
])
def test_bad_periods_and_amounts_are_refused_naming_the_option(env, args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert json.loads(relance("report", "--json").output)["economics"]["total"]["cost"] == 0.0
