"""The one place relance reaches Prefect: running the tick flow from the CLI and the demo.

With no PREFECT_API_URL, flow runs go to relance's own local Prefect API (`relance.prefect_api`):
one child process per relance process, reused by every run, that dies with its parent, instead of
the ephemeral server Prefect would start and leave behind when relance is killed.

Imports are lazy so that `relance` imports, runs and tests without Prefect loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from relance.prefect_api import PrefectAPIError

__all__ = ["Announcer", "PrefectAPIError", "flow_api", "quiet_task_runs", "run_flow", "run_tick", "stop_local_api"]


@contextmanager
def flow_api(load: Callable[[], Any] = lambda: None) -> Iterator[Any]:
    """Prefect pointed at an API for the flow runs inside: PREFECT_API_URL if set, else this process's local API.

    `load` (e.g. importing the flow's module) runs while the local API starts; its result is yielded.
    Raises PrefectAPIError (one sentence, what to do) when the local API cannot start or stops.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, PREFECT_UI_URL, temporary_settings

    from relance import prefect_api as local

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        local.drop_early()  # started by `start_early` before a profile's API URL was known
        yield load()  # a server of the operator's, or no local API wanted: Prefect's own behaviour
        return

    api = local.shared()
    local.claim_early()
    loaded = load()
    updates: dict = {PREFECT_API_URL: api.wait_ready()}
    if not PREFECT_UI_URL.value():
        updates[PREFECT_UI_URL] = ""  # as in ephemeral mode: the API serves no UI, runs and artifacts link nowhere
    with temporary_settings(updates=updates):
        try:
            yield loaded
        except Exception:
            api.check()  # the API died under the run: say so rather than the client's connection error
            raise


@contextmanager
def quiet_task_runs() -> Iterator[None]:
    """Inside, Prefect's "Task run ... Finished in state Completed()" lines are not printed (warnings and errors
    are): `relance demo` runs some hundred task runs, and its reader wants the flows' own lines and the report.
    Prefect sets its loggers up again from logging.yml and the environment (PREFECT_LOGGING_...) on the way, so the
    level is said in the environment too."""
    name, logger = _TASK_RUNS_LEVEL, logging.getLogger("prefect.task_runs")
    before, level = os.environ.get(name), logger.level
    os.environ[name] = "WARNING"
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
        logger.setLevel(level)


_TASK_RUNS_LEVEL = "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL"  # logging.yml's loggers: prefect.task_runs: level


def run_tick(scenario: str, *, now: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """One Prefect flow run of `flows/tick.py:tick` for one scenario; returns its counts."""
    with flow_api(_tick_flow) as tick:
        return tick(scenario=scenario, now=now, batch_size=batch_size)


def run_flow(module: str, name: str, **parameters: Any) -> Any:
    """One flow run of `flows/housekeeping.py:<name>` (`module` is "relance.flows.housekeeping", the one it may name)."""
    if module != "relance.flows.housekeeping":
        raise ValueError(f"run_flow runs the housekeeping flows, not {module}")
    with flow_api(lambda: getattr(_housekeeping_flows(), name)) as flow:
        return flow(**parameters)


def _tick_flow() -> Any:
    """The tick flow, imported here (not at the top) so that `relance` imports without Prefect."""
    from relance.flows.tick import tick

    return tick


def _housekeeping_flows() -> Any:
    """The housekeeping flows' module, imported here for the same reason."""
    from relance.flows import housekeeping

    return housekeeping


def stop_local_api() -> None:
    """Hand what Prefect still holds (logs, events) to this process's local API, then stop it.

    For a process that goes on without it (the tests' session end); at exit it stops by itself.
    """
    from relance import prefect_api as local

    api = local.current()
    if api is None or api.process is None:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)
    api.stop()


ANNOUNCE_TIMEOUT_S = 5.0  # a server slower than that: the schedule does it


class Announcer:
    """Tells the Prefect server which scenarios have work due now (an event they wait for, a lead they enroll), as
    the Prefect event `relance.scenario.due` per scenario: each tick deployment's trigger (relance.deployments) turns
    it into a run within seconds. Off without a server (no PREFECT_API_URL): nothing to trigger, ticks are run by
    hand or on schedule. A server out of reach costs a warning, never the event: the schedule is the safety net.

    `in_background`: the call returns at once and a thread posts (the HTTP API answers without waiting)."""

    def __init__(self, *, api_url: str | None = None, in_background: bool = False, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("relance.announce")
        self._api_url = api_url  # the server to tell; None: Prefect's setting, read at the first announcement
        self._pool = None
        if in_background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relance-announce")

    @property
    def api_url(self) -> str | None:
        """The Prefect server's API: the one given, else the environment's or the profile's PREFECT_API_URL (read once)."""
        if self._api_url is None:
            from prefect.settings import PREFECT_API_URL

            self._api_url = PREFECT_API_URL.value() or ""
        return self._api_url or None

    def __call__(self, due: dict[str, int], *, channel: str) -> None:
        """Announce `due` ({scenario: enrollments due now}); nothing when it is empty or there is no server."""
        if not due:
            return
        if self._pool is not None:
            self._pool.submit(self._post, dict(due), channel)
        else:
            self._post(due, channel)

    def _post(self, due: dict[str, int], channel: str) -> None:
        if not self.api_url:
            return
        import httpx
        from prefect.events import Event
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

        from relance.deployments import DUE_EVENT, scenario_resource

        events = [Event(event=DUE_EVENT, resource={"prefect.resource.id": scenario_resource(name), "prefect.resource.name": name},
                        payload={"due": count, "channel": channel}).model_dump(mode="json")
                  for name, count in sorted(due.items())]
        key, basic = PREFECT_API_KEY.value(), PREFECT_API_AUTH_STRING.value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        auth = tuple(basic.split(":", 1)) if basic and ":" in basic else None  # as Prefect's client sends it
        try:  # Prefect's POST /events: the server's triggers read them as they come
            httpx.post(f"{self.api_url.rstrip('/')}/events", json=events, headers=headers, auth=auth,
                       timeout=ANNOUNCE_TIMEOUT_S).raise_for_status()
        except Exception as exc:  # noqa: BLE001 - the events are stored; the scheduled tick will run them
            self.logger.warning("could not ask Prefect at %s to tick %s now (%s): the next scheduled tick will do the work",
                                self.api_url, ", ".join(sorted(due)), type(exc).__name__ + (f": {exc}" if str(exc) else ""))

    def close(self) -> None:
        """Wait for the posts in flight (a process about to exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
