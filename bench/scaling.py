"""Does a tick cost what is due, not what is enrolled? Time and peak memory against the enrolled count."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from relance.email.transports import NullTransport
from relance.tick import run_tick_inline

from relance.bench.common import NOW, SCENARIO, Stopwatch, database, open_world, seed, sent_rows

DUE = 1_000
ROUNDS = 3  # three ticks, each with DUE leads due; the median is kept


def tick_seconds(work: Path, enrolled: int, due: int = DUE) -> dict:
    """Median time of a tick that finds `due` due among `enrolled` (the rest waits 60 days)."""
    instants = [NOW + timedelta(hours=h) for h in range(ROUNDS)]
    with database("sqlite", work) as url:
        world = open_world(url, work)
        seed(world, due={t: due for t in instants}, waiting=enrolled - due * ROUNDS)
        times = []
        for at in instants:
            transport = NullTransport()
            with Stopwatch() as watch:
                report = run_tick_inline(world.engine, world.settings, scenario=SCENARIO, now=at, workspace=world.workspace,
                                         transport=transport, templates=world.templates, standing=False)
            assert report.sent == transport.count == due, f"tick among {enrolled}: {report.sent} sent, wanted {due}"
            times.append(watch.seconds)
        assert sent_rows(world) == due * ROUNDS
        world.engine.dispose()
    return {"enrolled": enrolled, "due": due, "seconds": round(statistics.median(times), 4)}


def tick_scaling(work: Path, small: int, large: int, due: int = DUE) -> dict:
    a, b = tick_seconds(work, small, due), tick_seconds(work, large, due)
    return {"ratio": round(b["seconds"] / a["seconds"], 3), "small": a, "large": b}


def _advance_all(url: str, work: str) -> None:
    """In a child process: advance every due enrollment, then print sent count and peak RSS (KiB) as JSON."""
    world = open_world(url, Path(work))
    transport = NullTransport()
    report = run_tick_inline(world.engine, world.settings, scenario=SCENARIO, now=NOW, workspace=world.workspace,
                             transport=transport, templates=world.templates, standing=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"sent": report.sent, "rows": sent_rows(world), "peak_kib": peak}))


def peak_rss(work: Path, n: int) -> dict:
    """Peak RSS of a fresh process advancing n due enrollments (seeded beforehand, by this process)."""
    with database("sqlite", work) as url:
        world = open_world(url, work)
        seed(world, due={NOW: n})
        world.engine.dispose()
        with Stopwatch() as watch:
            child = subprocess.run([sys.executable, "-m", "relance.bench.scaling", url, str(work)], capture_output=True, text=True,
                                   cwd=Path(__file__).resolve().parents[1], check=False)
        if child.returncode != 0:
            raise RuntimeError(f"memory run over {n} enrollments failed:\n{child.stderr[-2000:]}")
        found = json.loads(child.stdout.strip().splitlines()[-1])
    assert found["sent"] == found["rows"] == n, f"memory run: {found} for {n} enrollments"
    return {"enrollments": n, "peak_mib": round(found["peak_kib"] / 1024, 1), "seconds": round(watch.seconds, 2)}


def memory_scaling(work: Path, small: int, large: int) -> dict:
    a, b = peak_rss(work, small), peak_rss(work, large)
    return {"ratio": round(b["peak_mib"] / a["peak_mib"], 3), "small": a, "large": b}


if __name__ == "__main__":
    _advance_all(sys.argv[1], sys.argv[2])
