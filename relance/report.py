"""`relance report`: funnel, per-step counts, conversion, SLA compliance, rejection reasons, CPL / CPA / ROI,
deliverability (bounce, complaint and unsubscribe rates per scenario and sending day).

Every figure is computed from the stored rows (leads, stage history, step log, events, handoffs,
costs), so the same numbers come out of the CLI, the JSON and the tick artifacts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone
from fractions import Fraction
from statistics import median
from typing import Any

from sqlalchemy import and_, func, literal_column, or_, select
from sqlmodel import Session

from relance.clock import ensure_utc
from relance.deals import Period, parse_period, quarter_of_month
from relance.outbox import CUT_OFF_AFTER
from relance.suppression import reason_of_event
from relance.store.tables import Cost, Deal, Enrollment, Event, Handoff, Lead, Outbox, ScenarioVersion, StageChange, StepLog

FUNNEL = ("lead", "mql", "sql", "customer")
REACHES = {"mql": {"mql", "sql-pending", "sql", "customer"}, "sql": {"sql", "customer"}, "customer": {"customer"}}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _hours(values: list[float]) -> float | None:
    return round(median(values), 2) if values else None


def funnel(session: Session) -> dict[str, Any]:
    """Leads that ever reached each stage (current stage or history), and the rates between them."""
    leads = session.exec(select(Lead.id, Lead.stage, Lead.created_at)).all()
    reached: dict[str, set[int]] = {stage: set() for stage in FUNNEL}
    first_at: dict[tuple[int, str], datetime] = {}
    for lead_id, stage, _created in leads:
        reached["lead"].add(lead_id)
        for target, stages in REACHES.items():
            if stage in stages:
                reached[target].add(lead_id)
    for change in session.exec(select(StageChange).order_by(StageChange.at, StageChange.id)).scalars():
        for target, stages in REACHES.items():
            if change.to_stage in stages:
                reached[target].add(change.lead_id)
                first_at.setdefault((change.lead_id, target), change.at)
    created = {lead_id: created for lead_id, _stage, created in leads}
    counts = {stage: len(ids) for stage, ids in reached.items()}
    return {
        "counts": counts,
        "rates": {
            "lead_to_mql": _rate(counts["mql"], counts["lead"]),
            "mql_to_sql": _rate(counts["sql"], counts["mql"]),
            "sql_to_customer": _rate(counts["customer"], counts["sql"]),
            "lead_to_customer": _rate(counts["customer"], counts["lead"]),
        },
        "median_hours_to_mql": _hours([(at - created[lid]).total_seconds() / 3600 for (lid, t), at in first_at.items() if t == "mql"]),
        "median_hours_to_sql": _hours([(at - created[lid]).total_seconds() / 3600 for (lid, t), at in first_at.items() if t == "sql"]),
    }


def whereabouts(session: Session, scenario: str | None = None, *, now: datetime | None = None,
                within: timedelta = timedelta(hours=1)) -> dict[tuple[str, str], dict[str, Any]]:
    """Where the active enrollments are right now, per (scenario, step): `now` (at this step), `waiting` (of which in a
    wait), `due` (of which due by `now` + `within`: 0 without `now`), `first_due` and `last_due` (their earliest and
    latest due time, None if none is set)."""
    horizon = ensure_utc(now) + within if now is not None else None
    due = func.count(Enrollment.id).filter(Enrollment.due_at <= horizon) if horizon is not None else literal_column("0")
    rows = session.exec(
        select(Enrollment.scenario, Enrollment.step_id, func.count(), func.count(Enrollment.waiting), due,
               func.min(Enrollment.due_at), func.max(Enrollment.due_at))
        .where(Enrollment.status == "active", Enrollment.step_id.is_not(None), *([Enrollment.scenario == scenario] if scenario else []))
        .group_by(Enrollment.scenario, Enrollment.step_id)
    ).all()
    return {(name, step_id): {"now": n, "waiting": waiting, "due": int(n_due or 0),
                              "first_due": ensure_utc(first) if first else None, "last_due": ensure_utc(last) if last else None}
            for name, step_id, n, waiting, n_due, first, last in rows}


def standing(session: Session, scenario: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """Where the active enrollments are right now: (scenario, step) -> (at this step, of which in a wait)."""
    return {key: (here["now"], here["waiting"]) for key, here in whereabouts(session, scenario).items()}


def steps(session: Session, scenario: str | None = None, orders: dict[str, tuple[str, ...]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per scenario and step, since the scenario started: reached and entered (step log), now here and waiting
    (active enrollments), sent (outbox rows that left), delivered, opened and clicked (distinct leads whose
    `email_delivered`, `email_opened`, `email_clicked` event names the step), left here
    (enrollments that ended at this step: completed, exited, failed, moved on), and the step log's outcomes."""
    of = (lambda column: [column == scenario]) if scenario else (lambda column: [])
    rows = session.exec(select(StepLog.scenario, StepLog.step_id, StepLog.outcome, func.count()).where(*of(StepLog.scenario))
                        .group_by(StepLog.scenario, StepLog.step_id, StepLog.outcome)).all()
    table: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(key: tuple[str, str]) -> dict[str, Any]:
        return table.setdefault(key, {"step": key[1], "reached": 0, "entered": 0, "now": 0, "waiting": 0, "sent": 0,
                                      "delivered": 0, "opened": 0, "clicked": 0, "left": 0, "outcomes": {}})

    for name, step_id, outcome, n in rows:
        entry((name, step_id))["outcomes"][outcome] = n
    for name, step_id, n in session.exec(
        select(StepLog.scenario, StepLog.step_id, func.count(func.distinct(StepLog.enrollment_id)))
        .where(*of(StepLog.scenario)).group_by(StepLog.scenario, StepLog.step_id)
    ).all():
        entry((name, step_id))["reached"] = n
    for key, (n, waiting) in standing(session, scenario).items():
        entry(key).update(now=n, waiting=waiting)
    for name, step_id, n in session.exec(  # where each enrollment that is over stopped, whatever ended it
        select(Enrollment.scenario, Enrollment.step_id, func.count())
        .where(Enrollment.status != "active", Enrollment.step_id.is_not(None), *of(Enrollment.scenario))
        .group_by(Enrollment.scenario, Enrollment.step_id)
    ).all():
        entry((name, step_id))["left"] = n
    for name, step_id, n in session.exec(  # the messages of the scenario's steps that left (not hand-off emails)
        select(Outbox.scenario, Outbox.step_id, func.count())
        .where(Outbox.status == "sent", Outbox.enrollment_id.is_not(None), Outbox.step_id.is_not(None), *of(Outbox.scenario))
        .group_by(Outbox.scenario, Outbox.step_id)
    ).all():
        entry((name, step_id))["sent"] = n
    # distinct leads whose email of each step was delivered (the mail service said so: SES), opened, clicked, counted by
    # the database (JSON properties on both backends)
    of_scenario, of_step = Event.properties["scenario"].as_string(), Event.properties["step_id"].as_string()
    engaged = dict(((name, step_id, kind), n) for name, step_id, kind, n in session.exec(
        select(of_scenario, of_step, Event.type, func.count(func.distinct(Event.lead_id)))
        .where(Event.type.in_(("email_delivered", "email_opened", "email_clicked")), *of(of_scenario))
        .group_by(of_scenario, of_step, Event.type)
    ).all())
    for (name, step_id), row in table.items():
        row["delivered"] = engaged.get((name, step_id, "email_delivered"), 0)
        row["opened"] = engaged.get((name, step_id, "email_opened"), 0)
        row["clicked"] = engaged.get((name, step_id, "email_clicked"), 0)
        row["entered"] = row["outcomes"].get("entered", 0)
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    orders = orders or {}

    def place(key: tuple[str, str]) -> tuple[str, int, str]:
        order = orders.get(key[0], ())
        return key[0], order.index(key[1]) if key[1] in order else len(order), key[1]

    for key in sorted(table, key=place):
        by_scenario[key[0]].append(table[key])
    return dict(by_scenario)


ANSWERED = ("accepted", "rejected", "later")  # sales' answers; `withdrawn` is relance closing it (the lead left)


def sla(session: Session, *, now: datetime) -> dict[str, Any]:
    """The hand-offs against their SLA as of `now`. A hand-off's outcome is known (`measured`) once sales
    answered it, or once its deadline passed unanswered (still open, or withdrawn after it), whether the SLA
    flow has flagged it or not. `within_target` / `within_deadline` are shares of the measured ones answered
    by then; a breach is a measured one that was not: answered late, or unanswered past its deadline."""
    handoffs = session.exec(select(Handoff)).scalars().all()

    def unanswered_past_deadline(h: Handoff) -> bool:
        if h.status == "open":
            return h.deadline_missed_at is not None or h.deadline_at <= now
        return h.status == "withdrawn" and h.answered_at is not None and h.answered_at > h.deadline_at

    answered = [h for h in handoffs if h.status in ANSWERED and h.answered_at is not None]
    overdue = [h for h in handoffs if unanswered_past_deadline(h)]
    measured = len(answered) + len(overdue)
    met_target = sum(1 for h in answered if h.answered_at <= h.target_at)
    met_deadline = sum(1 for h in answered if h.answered_at <= h.deadline_at)
    return {
        "handoffs": len(handoffs), "open": sum(1 for h in handoffs if h.status == "open"), "measured": measured,
        "met_target": met_target, "met_deadline": met_deadline,
        "within_target": _rate(met_target, measured), "within_deadline": _rate(met_deadline, measured),
        "breaches": measured - met_deadline, "late_answers": len(answered) - met_deadline,
        "unanswered_past_deadline": len(overdue),
        "answers": dict(Counter(h.status for h in handoffs if h.status != "open")),
        "rejection_reasons": dict(Counter(h.reason for h in handoffs if h.status == "rejected")),
    }


def _month(session: Session, column):
    """The month of a stored time as year * 12 + month - 1, in UTC, computed by the database (inline literals:
    PostgreSQL groups by the same expression only if it has no parameters)."""
    utc = func.timezone(literal_column("'UTC'"), column) if session.get_bind().dialect.name == "postgresql" else column
    return func.extract("year", utc) * literal_column("12") + func.extract("month", utc) - literal_column("1")


def _economics_rows(session: Session) -> tuple[dict, list]:
    """Per (source, month): leads created, customers won (first won deal), deals won and lost, revenue, deal
    margins; and the costs as (source, period name, amount, margin) per period."""
    cells: dict[tuple[str, int], Counter] = defaultdict(Counter)
    created = _month(session, Lead.created_at)
    for source, month, n in session.exec(select(Lead.source, created, func.count()).group_by(Lead.source, created)).all():
        cells[(source, int(month))]["leads"] += n
    first = select(Deal.lead_id, func.min(Deal.closed_at).label("at")).where(Deal.outcome == "won").group_by(Deal.lead_id).subquery()
    won_month = _month(session, first.c.at)
    for source, month, n in session.exec(select(Lead.source, won_month, func.count()).join(first, first.c.lead_id == Lead.id)
                                         .group_by(Lead.source, won_month)).all():
        cells[(source, int(month))]["customers"] += n
    closed = _month(session, Deal.closed_at)
    for source, month, outcome, n, amount, margin in session.exec(
        select(Lead.source, closed, Deal.outcome, func.count(), func.sum(Deal.amount), func.sum(Deal.margin))
        .join(Lead, Lead.id == Deal.lead_id).group_by(Lead.source, closed, Deal.outcome)
    ).all():
        cell = cells[(source, int(month))]
        cell[f"deals_{outcome}"] += n
        if outcome == "won":
            cell["revenue"] += amount or 0.0
            cell["margin"] += margin or 0.0
    costs = session.exec(select(Cost.source, Cost.period, func.sum(Cost.amount), func.sum(Cost.margin))
                         .group_by(Cost.source, Cost.period)).all()
    return cells, costs


def _money_figures(cell: Counter) -> dict[str, Any]:
    amount, margin, leads, customers = cell["cost"], cell["margin"], cell["leads"], cell["customers"]
    return {
        "leads": leads, "customers": customers, "deals_won": cell["deals_won"], "deals_lost": cell["deals_lost"],
        "revenue": round(float(cell["revenue"]), 2), "cost": round(float(amount), 2), "gross_margin": round(float(margin), 2),
        "cost_per_lead": round(amount / leads, 2) if leads and amount else None,
        "cost_per_acquisition": round(amount / customers, 2) if customers and amount else None,
        "roi": round((margin - amount) / amount, 4) if amount else None,
    }


def _economics_of(cells: dict, costs: list, period: Period | None) -> dict[str, Any]:
    """By source and in all, over `period` (None: all time): leads and deals of its months, costs of periods inside it."""
    by_source: dict[str, Counter] = defaultdict(Counter)
    for (source, month), cell in cells.items():
        if period is None or period.holds_month(month):
            by_source[source].update(cell)
    for source, name, amount, margin in costs:
        if period is None or (_period_or_none(name) is not None and period.holds(_period_or_none(name))):
            by_source[source]["cost"] += amount or 0.0
            by_source[source]["margin"] += margin or 0.0
    total: Counter = Counter()
    for cell in by_source.values():
        total.update(cell)
    return {"by_source": {source or "(none)": _money_figures(by_source[source]) for source in sorted(by_source)},
            "total": _money_figures(total)}


def _period_or_none(name: str) -> Period | None:
    try:
        return parse_period(name)
    except ValueError:
        return None  # a cost recorded before periods were checked: counted in the all-time figures only


def economics(session: Session, period: Period | None = None) -> dict[str, Any]:
    """CPL / CPA / ROI per source and in all, over `period` (default: all time), and per period found in the data:
    those costs name, and the quarters leads were created or deals closed in (see docs/economics.md).

    customers: leads whose first won deal closed in the period; gross margin: the won deals' margins plus the
    margins recorded with costs; CPA = cost / customers; ROI = (gross margin - cost) / cost."""
    cells, costs = _economics_rows(session)
    periods = {p.name: p for p in (_period_or_none(name) for _s, name, _a, _m in costs) if p is not None}
    periods.update((q.name, q) for q in (quarter_of_month(month) for _source, month in cells))
    listed = sorted((p for p in periods.values() if period is None or period.holds(p)), key=lambda p: p.order)
    return {
        "period": period.name if period else None,
        **_economics_of(cells, costs, period),
        "by_period": {p.name: _economics_of(cells, costs, p) for p in listed},
    }


def delivery(session: Session, *, now: datetime) -> dict[str, Any]:
    """Outbox rows by status; the messages whose outcome is unknown (handed over, no answer; or cut off
    mid-send by a worker that died): relance never sends them again on its own, since it cannot know
    whether they left (check the transport's logs, then `relance outbox resolve`); and the enrollments
    that left their scenario on an error of their own, by scenario and step, with a sample reason."""
    since = func.coalesce(Outbox.attempted_at, Outbox.created_at)
    unsettled = session.exec(
        select(Outbox.id, Outbox.status, Outbox.to_address, Outbox.scenario, Outbox.step_id, Outbox.created_at, Outbox.error)
        .where(or_(Outbox.status == "unknown", and_(Outbox.status == "sending", since < now - CUT_OFF_AFTER))).order_by(Outbox.id)
    ).all()
    failed = session.exec(
        select(Enrollment.scenario, Enrollment.step_id, func.count(), func.min(Enrollment.exit_reason))
        .where(Enrollment.status == "failed").group_by(Enrollment.scenario, Enrollment.step_id)
        .order_by(Enrollment.scenario, Enrollment.step_id)
    ).all()
    return {
        "by_status": dict(session.exec(select(Outbox.status, func.count()).group_by(Outbox.status)).all()),
        "unknown": [{"outbox_id": r.id, "status": r.status, "to": r.to_address, "scenario": r.scenario, "step_id": r.step_id,
                     "written_at": r.created_at, "error": r.error} for r in unsettled],
        "failed_enrollments": [{"scenario": sc, "step_id": step, "count": n, "reason": reason} for sc, step, n, reason in failed],
    }


# Deliverability: what mailbox providers measure of a sender, per scenario and per sending day.
# Gmail's email sender guidelines (and Yahoo's sender best practices, both enforced for bulk senders from February
# 2024): keep the spam rate users report under 0.10 %, and never let it reach 0.30 %.
COMPLAINT_WATCH = Fraction(1, 1000)
COMPLAINT_LIMIT = Fraction(3, 1000)
# AWS SES (its "sending review" FAQ) asks for a bounce rate under 2 % (an account is put under review at 5 %);
# mailbox providers read many hard bounces as a list that was bought or left to age. Warned from 1 %.
HARD_BOUNCE_WATCH = Fraction(1, 100)
HARD_BOUNCE_LIMIT = Fraction(2, 100)
# Fewer emails than this in a day are too few to judge the day by (1 complaint in 3 emails is 33 %): the day's rates
# are shown, marked as a small sample, and raise no warning of their own; the scenario's whole window still may.
MIN_SENT = 500
DELIVERABILITY_DAYS = 14  # how many sending days `relance report` looks back over (--days)
MAX_DAYS = 3660  # ten years: more is surely a typing slip

# the outcome of an email an event says, counted once per email (a hard bounce outranks a soft one)
OUTCOMES = ("hard_bounces", "soft_bounces", "complaints", "unsubscribes")
_LEVELS = {"approaching": 1, "over": 2}


def outcome_of(event_type: str, properties: dict[str, Any]) -> str | None:
    """Which deliverability outcome an event is: a bounce is hard when it suppresses the address (relance.suppression:
    every bounce but one whose `bounce_type` is `transient`, as SES says of a soft one), soft otherwise."""
    if event_type == "email_complained":
        return "complaints"
    if event_type == "unsubscribed":
        return "unsubscribes"
    if event_type == "email_bounced":
        return "hard_bounces" if reason_of_event(event_type, properties) == "bounced" else "soft_bounces"
    return None


def _email_named(properties: dict[str, Any]) -> tuple[str, Any] | None:
    """The email an event names: its `outbox_id` (tracking links and matched SES events carry it), else its SES
    message id (`ses_message_id`, or `message_id` from another door) looked up in the outbox."""
    outbox_id = properties.get("outbox_id")
    if isinstance(outbox_id, int) and not isinstance(outbox_id, bool) and 0 < outbox_id < 2**63:  # a sender may put
        return ("id", outbox_id)  # anything in it: a number no database column holds names no email
    message_id = properties.get("ses_message_id") or properties.get("message_id")
    return ("message", message_id) if isinstance(message_id, str) and message_id else None


def rates_of(cell: Counter) -> dict[str, Any]:
    """A cell's counts and their rates (shares of `sent`, None when nothing was sent); `small_sample` below MIN_SENT."""
    sent = cell["sent"]
    figures: dict[str, Any] = {"sent": sent, **{k: cell[k] for k in OUTCOMES}}
    for k in OUTCOMES:
        figures[k[:-1] + "_rate"] = _rate(cell[k], sent)
    figures["small_sample"] = sent < MIN_SENT
    return figures


def tally(sent: list[tuple[int, str, date]], outcomes: dict[int, set[str]]) -> dict[str, dict[str, Any]]:
    """Per scenario, per sending day and in all: the emails sent (`sent`: (outbox id, scenario, day)) and, of them,
    those with each outcome (`outcomes`: outbox id -> its outcomes; a hard bounce and a soft one of the same email
    count as hard). Each email counts at most once per outcome, so every rate is between 0 and 1."""
    days: dict[str, dict[date, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for outbox_id, scenario, day in sent:
        cell = days[scenario][day]
        cell["sent"] += 1
        found = outcomes.get(outbox_id, set())
        for k in OUTCOMES:
            if k in found and not (k == "soft_bounces" and "hard_bounces" in found):
                cell[k] += 1
    result = {}
    for scenario in sorted(days):
        total: Counter = Counter()
        for cell in days[scenario].values():
            total.update(cell)
        result[scenario] = {"total": rates_of(total),
                            "by_day": [{"day": day.isoformat(), **rates_of(days[scenario][day])} for day in sorted(days[scenario])]}
    return result


def _level(count: int, sent: int, watch: Fraction, limit: Fraction) -> str | None:
    if not sent or sent < MIN_SENT:
        return None
    share = Fraction(count, sent)
    return "over" if share >= limit else "approaching" if share >= watch else None


def _pct_words(fraction: Fraction) -> str:
    return f"{float(fraction) * 100:.1f}".rstrip("0").rstrip(".") + " %"


def _warning(scenario: str, day: str | None, figure: str, level: str, count: int, sent: int, *, days: int) -> dict[str, Any]:
    """A warning in a marketer's words: where (a sending day, or None: the whole window), what, how bad, what to do."""
    when = day or f"last {days} days"
    share = f"{count / sent * 100:.2f} %"
    if figure == "complaints":
        what = f"{count} complaint{'s' if count != 1 else ''}"
        limit = f"the {_pct_words(COMPLAINT_LIMIT)} Gmail and Yahoo accept"
        judged = (f"over {limit}" if level == "over" else
                  f"approaching {limit} (keep it under {_pct_words(COMPLAINT_WATCH)})")
        advice = "check who is mailed and how they opted in, and that the unsubscribe link is easy to find"
    else:
        what = f"{count} hard bounce{'s' if count != 1 else ''}"
        judged = (f"over {_pct_words(HARD_BOUNCE_LIMIT)}, where mailbox providers start to distrust a sender"
                  if level == "over" else f"above {_pct_words(HARD_BOUNCE_WATCH)}, approaching the "
                  f"{_pct_words(HARD_BOUNCE_LIMIT)} mailbox providers tolerate")
        advice = ("check where these addresses come from (old, bought or mistyped addresses bounce); "
                  "those that bounced are never mailed again")
    return {"scenario": scenario, "day": day, "figure": figure, "level": level,
            "count": count, "sent": sent, "rate": round(count / sent, 4),
            "message": f"{scenario}, {when}: {what} in {sent} emails ({share}): {judged}; {advice}"}


def warnings_of(scenarios: dict[str, dict[str, Any]], *, days: int) -> list[dict[str, Any]]:
    """The warnings the figures call for: each sending day of at least MIN_SENT emails whose complaints or hard
    bounces reach their watch level (`approaching`) or limit (`over`); then each scenario's whole window, when it
    reaches a level none of its days raised (days each too small to judge, that add up)."""
    found: list[dict[str, Any]] = []
    checks = (("complaints", COMPLAINT_WATCH, COMPLAINT_LIMIT), ("hard_bounces", HARD_BOUNCE_WATCH, HARD_BOUNCE_LIMIT))
    for scenario, figures in scenarios.items():
        for figure, watch, limit in checks:
            raised = 0
            for day in figures["by_day"]:
                if level := _level(day[figure], day["sent"], watch, limit):
                    found.append(_warning(scenario, day["day"], figure, level, day[figure], day["sent"], days=days))
                    raised = max(raised, _LEVELS[level])
            total = figures["total"]
            if (level := _level(total[figure], total["sent"], watch, limit)) and _LEVELS[level] > raised:
                found.append(_warning(scenario, None, figure, level, total[figure], total["sent"], days=days))
    return sorted(found, key=lambda w: (-_LEVELS[w["level"]], w["scenario"], w["day"] or "", w["figure"]))


def deliverability(session: Session, *, now: datetime, days: int = DELIVERABILITY_DAYS,
                   scenario: str | None = None) -> dict[str, Any]:
    """Bounces, complaints and unsubscribes of the emails to leads that left (outbox `kind` lead, status `sent`) on
    the last `days` UTC days up to `now`'s, per scenario and per sending day: sent, hard and soft bounces, complaints,
    unsubscribes, each also as a share of sent; and the warnings they call for (`warnings_of`, docs/ticks.md).

    An event counts against the email it names (`outbox_id`, else its SES message id): on that email's scenario and
    the day it was sent, whenever the event came. An event that names no email relance sent to a lead (typed by hand
    with `relance event`, an SES event for a message not in the outbox) is in no rate, having no emails to be a share
    of: it is counted under `unattributed`, by outcome, on the day it happened if that day is in the window (with
    `scenario`, only if the event's own `scenario` property names it)."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}, got {days}")
    now = ensure_utc(now)
    last = now.date()
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=timezone.utc)
    sent = [(outbox_id, name, ensure_utc(at).date()) for outbox_id, name, at in session.execute(
        select(Outbox.id, Outbox.scenario, Outbox.sent_at)
        .where(Outbox.status == "sent", Outbox.kind == "lead", Outbox.sent_at >= start, Outbox.sent_at <= now,
               *([Outbox.scenario == scenario] if scenario else []))
    ).all()]
    # what comes back for an email comes after it left: events from the window's first day on (a day of slack for a
    # provider's clock behind ours) are all that can be about its emails
    events = session.execute(select(Event.type, Event.properties, Event.occurred_at).where(
        Event.type.in_(("email_bounced", "email_complained", "unsubscribed")), Event.occurred_at >= start - timedelta(days=1))
    ).all()
    named = [_email_named(properties or {}) for _type, properties, _at in events]
    ids = {ref[1] for ref in named if ref and ref[0] == "id"}
    messages = {ref[1] for ref in named if ref and ref[0] == "message"}
    emails: dict[tuple[str, Any], int] = {}  # what an event names -> the sent lead email it is
    good = (Outbox.status == "sent", Outbox.kind == "lead")
    for chunk in _chunks(sorted(ids)):
        emails.update((("id", i), i) for (i,) in session.execute(select(Outbox.id).where(Outbox.id.in_(chunk), *good)).all())
    for chunk in _chunks(sorted(messages)):
        emails.update((("message", m), i) for i, m in session.execute(
            select(Outbox.id, Outbox.message_id).where(Outbox.message_id.in_(chunk), *good)).all())
    outcomes: dict[int, set[str]] = defaultdict(set)
    unattributed: Counter = Counter()
    for (type_, properties, at), ref in zip(events, named):
        kind = outcome_of(type_, properties or {})
        if ref is not None and ref in emails:
            outcomes[emails[ref]].add(kind)
        elif first <= ensure_utc(at).date() <= last and (scenario is None or (properties or {}).get("scenario") == scenario):
            unattributed[kind] += 1
    scenarios = tally(sent, outcomes)
    return {
        "days": days, "first_day": first.isoformat(), "last_day": last.isoformat(), "min_sent": MIN_SENT,
        "thresholds": {"complaint_watch": float(COMPLAINT_WATCH), "complaint_limit": float(COMPLAINT_LIMIT),
                       "hard_bounce_watch": float(HARD_BOUNCE_WATCH), "hard_bounce_limit": float(HARD_BOUNCE_LIMIT)},
        "scenarios": scenarios,
        "unattributed": {k: unattributed[k] for k in OUTCOMES},
        "warnings": warnings_of(scenarios, days=days),
    }


def _chunks(values: list, size: int = 1000):
    for i in range(0, len(values), size):
        yield values[i:i + size]


def scenarios_on_record(session: Session) -> set[str]:
    """The scenarios the database has rows of (registered versions, enrollments), in the folder still or not."""
    return set(session.exec(select(ScenarioVersion.scenario).distinct()).scalars()) | set(
        session.exec(select(Enrollment.scenario).distinct()).scalars())


def held_back(session: Session, *, scenario: str | None = None) -> dict[str, Any]:
    """The emails sending.yaml held back, by scenario (relance.gate): `deferred` (sent later, or `waiting` still),
    `skipped` (their scenario skips what is held), and `reasons`: the last reason each was held for, by kind
    (cap, quiet hours, quiet day, blackout, priority)."""
    query = select(Outbox.scenario, Outbox.status, Outbox.held, func.count()).where(Outbox.held.is_not(None))
    if scenario is not None:
        query = query.where(Outbox.scenario == scenario)
    figures: dict[str, Any] = {}
    for name, status, reason, n in session.execute(query.group_by(Outbox.scenario, Outbox.status, Outbox.held)).all():
        entry = figures.setdefault(name, {"deferred": 0, "waiting": 0, "skipped": 0, "reasons": {}})
        entry["skipped" if status == "skipped" else "deferred"] += n
        entry["waiting"] += n if status == "pending" else 0
        kind = reason.split(":", 1)[0]
        entry["reasons"][kind] = entry["reasons"].get(kind, 0) + n
    return dict(sorted(figures.items()))


def leads_by_stage(session: Session) -> dict[str, int]:
    """How many leads are at each stage now (stages no lead is at are absent)."""
    return dict(session.exec(select(Lead.stage, func.count()).group_by(Lead.stage)).all())


def build_report(session: Session, *, now: datetime, scenario: str | None = None,
                 orders: dict[str, tuple[str, ...]] | None = None, period: Period | None = None,
                 days: int = DELIVERABILITY_DAYS) -> dict[str, Any]:
    """Every figure of `relance report` as of `now`; `orders` puts each scenario's steps in plan order;
    `period` narrows the economics to it; `days` is how many sending days the deliverability looks back over."""
    return {
        "as_of": now,
        "leads_by_stage": leads_by_stage(session),
        "funnel": funnel(session),
        "scenarios": steps(session, scenario, orders),
        "sla": sla(session, now=now),
        "economics": economics(session, period),
        "delivery": delivery(session, now=now),
        "deliverability": deliverability(session, now=now, days=days, scenario=scenario),
        "held_back": held_back(session, scenario=scenario),
    }

