"""Every benchmark in one run, on one machine, so each ratio compares figures measured side by side."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from relance.bench import emails, events, imports, naive, scaling, ses
from relance.bench.common import workdir


@dataclass(frozen=True)
class Sizes:
    floor: int
    engine: int
    naive: int
    tick_small: int
    tick_large: int
    tick_due: int
    memory_small: int
    memory_large: int
    ses_emails: int
    ses_rate: float
    events: int
    hot_events: int
    imports: int


FULL = Sizes(floor=5_000, engine=20_000, naive=30, tick_small=10_000, tick_large=1_000_000, tick_due=1_000, memory_small=10_000,
             memory_large=1_000_000, ses_emails=1_000, ses_rate=50, events=50_000, hot_events=20_000, imports=100_000)
QUICK = Sizes(floor=1_000, engine=2_000, naive=10, tick_small=10_000, tick_large=100_000, tick_due=1_000, memory_small=2_000,
              memory_large=20_000, ses_emails=300, ses_rate=50, events=20_000, hot_events=10_000, imports=10_000)
SMOKE = Sizes(floor=20, engine=60, naive=2, tick_small=100, tick_large=1_000, tick_due=10, memory_small=30, memory_large=60,
              ses_emails=10, ses_rate=200, events=200, hot_events=200, imports=200)

# name -> (goal in words, test); a figure without a goal is informative
GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "floor_ratio": (">= 0.6", lambda v: v >= 0.6),
    "vs_naive": (">= 3000", lambda v: v >= 3000),
    "tick_scaling": ("<= 1.5", lambda v: v <= 1.5),
    "memory_scaling": ("<= 1.2", lambda v: v <= 1.2),
    "ses_pacing": ("0.95 - 1.0", lambda v: 0.95 <= v <= 1.0),
    "events_per_s": (">= 5000", lambda v: v >= 5000),
    "hot_lead_events_per_s": (">= 5000", lambda v: v >= 5000),  # a hot lead no slower than the batches' mix of leads
    "import_rows_per_s": (">= 5000", lambda v: v >= 5000),
}


def machine() -> dict:
    return {"python": platform.python_version(), "system": f"{platform.system()} {platform.release()}",
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def run(sizes: Sizes, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Measure every figure; the headline keys first, then `details` (sizes, seconds, counts) and `goals`."""
    details: dict = {"sizes": sizes.__dict__, "machine": machine(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with workdir() as work:
        progress(f"rendering floor: {sizes.floor} emails")
        details["floor"] = emails.floor_emails_per_s(work, sizes.floor)
        for backend in ("sqlite", "postgresql"):
            progress(f"engine on {backend}: {sizes.engine} emails")
            details[f"engine_{backend}"] = emails.engine_emails_per_s(work, backend, sizes.engine)
        progress(f"tick scaling: {sizes.tick_due:,} due among {sizes.tick_small:,} then {sizes.tick_large:,} enrolled")
        details["tick"] = scaling.tick_scaling(work, sizes.tick_small, sizes.tick_large, sizes.tick_due)
        progress(f"memory scaling: advancing {sizes.memory_small:,} then {sizes.memory_large:,} enrollments")
        details["memory"] = scaling.memory_scaling(work, sizes.memory_small, sizes.memory_large)
        progress(f"SES pacing: {sizes.ses_emails} emails at {sizes.ses_rate:g}/s, then again with 30 % throttled")
        details["ses"] = ses.ses_pacing(work, sizes.ses_emails, sizes.ses_rate)
        progress(f"events: {sizes.events:,} events in batches, then {sizes.hot_events:,} of one hot lead")
        details["events"] = events.events_per_s(work, sizes.events)
        details["hot_lead"] = events.hot_lead_events_per_s(work, sizes.hot_events)
        progress(f"imports: a CSV of {sizes.imports:,} leads on each backend, then again with one row in five changed")
        details["imports"] = imports.import_rows_per_s(work, sizes.imports)
        # last: the in-process Prefect server it starts keeps running (and using CPU) until the process exits
        progress(f"naive: one Prefect flow run per lead, {sizes.naive} leads")
        details["naive"] = naive.naive_prefect_leads_per_s(work, sizes.naive)
    engine = details["engine_sqlite"]["per_s"]
    figures = {
        "floor_emails_per_s": details["floor"]["per_s"],
        "engine_emails_per_s_sqlite": engine,
        "engine_emails_per_s_postgres": details["engine_postgresql"]["per_s"],
        "floor_ratio": round(engine / details["floor"]["per_s"], 3),
        "naive_prefect_leads_per_s": details["naive"]["per_s"],
        "vs_naive": round(engine / details["naive"]["per_s"], 1),
        "tick_scaling": details["tick"]["ratio"],
        "memory_scaling": details["memory"]["ratio"],
        "ses_pacing": details["ses"]["ratio"],
        "events_per_s": details["events"]["per_s"],
        "hot_lead_events_per_s": details["hot_lead"]["per_s"],
        "import_rows_per_s": details["imports"]["per_s"],
    }
    figures["goals"] = {name: {"goal": goal, "met": test(figures[name])} for name, (goal, test) in GOALS.items()}
    figures["details"] = details
    return figures
