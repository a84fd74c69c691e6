"""Leads imported per second: a CRM export read, checked, upserted and graded, as `relance import` does it."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from relance.importer import import_leads, read_leads_csv
from relance.store.tables import Lead

from relance.bench.common import NOW, Stopwatch, count, database, open_world, rate


def crm_export(n: int, *, retitled_every: int = 0) -> bytes:
    """A CSV of n different leads (UTF-8, the shipped sample's columns and people, one address each);
    with `retitled_every`, every such row has a new job title (an export of the same leads, later)."""
    sample = list(csv.reader(io.StringIO(resources.files("relance.demo").joinpath("leads.csv").read_text(encoding="utf-8"))))
    header, people = sample[0], sample[1:]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i in range(n):
        row = list(people[i % len(people)])
        local, domain = row[0].split("@")
        row[0] = f"{local}.{i}@{domain}"
        if retitled_every and i % retitled_every == 0:
            row[3] = "Head of Demand Generation"  # a title no row of the sample has
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


def import_rows_per_s(work: Path, n: int) -> dict:
    """An export of n new leads into an empty database, then the same export again with one row in five changed,
    on each backend; the figure is the first import's rate on the slower backend."""
    first, again = crm_export(n), crm_export(n, retitled_every=5)
    details: dict = {"rows": n}
    for backend in ("sqlite", "postgresql"):
        with database(backend, work) as url:
            world = open_world(url, work)
            new = _timed(world, first, n)
            changed = _timed(world, again, n)
            leads = count(world, select(func.count()).select_from(Lead))
            graded = count(world, select(func.count()).select_from(Lead).where(Lead.fit > 0))
            world.engine.dispose()
        assert new["created"] == leads == n, f"import/{backend}: {new['created']} created, {leads} leads, of {n}"
        assert changed["updated"] == len(range(0, n, 5)) and changed["created"] == 0, f"import/{backend}: again: {changed}"
        assert graded > 0, f"import/{backend}: no lead graded"
        details[backend] = {"new": new, "again": changed}
    details["per_s"] = min(details[backend]["new"]["per_s"] for backend in ("sqlite", "postgresql"))
    return details


def _timed(world, data: bytes, n: int) -> dict:
    with Stopwatch() as watch:
        parsed = read_leads_csv(data, source="crm-export")
        with Session(world.engine) as session:
            summary = import_leads(session, parsed, now=NOW, scoring=world.workspace.scoring, commit=True)
    assert not parsed.problems and len(parsed.rows) == n, f"import: {parsed.problems[:3]}"
    return {"seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds), "created": summary.created,
            "updated": summary.updated}
