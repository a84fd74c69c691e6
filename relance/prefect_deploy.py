"""`relance deploy`: make the Prefect server's deployments match the scenarios folder (relance.deployments says which).

Idempotent: a deployment already as wanted is left alone (its scheduled runs stay), one that differs is updated and
the fields that changed are named, one that is missing is created; the tick of a scenario whose file is gone is paused
and its trigger removed, never deleted (its runs and artifacts stay in the UI). `dry_run` reads and changes nothing.

Prefect is imported lazily: `relance` imports without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from relance.scenario.model import format_duration
from relance.deployments import POOL, QUEUE, TICK_ENTRYPOINT, Deployment, trigger_of


class DeployError(RuntimeError):
    """`relance deploy` cannot go on; the message says what to do."""


@dataclass
class Change:
    """What `relance deploy` did (or would do) to one deployment: create, update, unchanged, pause, paused."""

    name: str
    action: str
    details: list[str] = field(default_factory=list)


def project_folder(folder: Path) -> Path:
    """The folder the worker runs the flows from: it must hold the entrypoints (flows/tick.py)."""
    folder = folder.resolve()
    if not (folder / TICK_ENTRYPOINT.split(":")[0]).is_file():
        raise DeployError(f"{folder} holds no {TICK_ENTRYPOINT.split(':')[0]}: run `relance deploy` from the project "
                          "folder (the one holding flows/ and prefect.yaml), where the worker will run the flows")
    return folder


def apply(deployments: list[Deployment], *, folder: Path, dry_run: bool = False) -> list[Change]:
    """Bring the server (PREFECT_API_URL) in line with `deployments`; returns what changed, in order."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise DeployError("PREFECT_API_URL is not set: point it at the Prefect server, e.g. "
                          "export PREFECT_API_URL=http://127.0.0.1:4200/api (see infra/README.md)")
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(project_folder(folder))}}]
    try:
        with get_client(sync_client=True) as client:
            changes = [_pool(client, dry_run)]
            changes += [_one(client, d, pull, dry_run) for d in deployments]
            changes += _retire(client, {d.name for d in deployments if d.flow == "tick"}, dry_run)
    except DeployError:
        raise
    except Exception as exc:  # noqa: BLE001 - a server out of reach or refusing: one sentence, not a traceback
        raise DeployError(f"the Prefect server at {PREFECT_API_URL.value()} could not be updated: {_why(exc)}") from exc
    return [c for c in changes if c is not None]


def _why(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        return f"{response.status_code} {response.text[:300]}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _pool(client, dry_run: bool) -> Change | None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_work_pool(POOL)
        return None
    except ObjectNotFound:
        if not dry_run:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        return Change(f"work pool {POOL}", "create", ["type process"])


def _schedule_create(schedule: dict[str, Any]):
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if "interval" in schedule:
        spec = IntervalSchedule(interval=schedule["interval"])
    else:
        spec = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    return DeploymentScheduleCreate(schedule=spec, active=schedule["active"])


def _schedule_now(schedules) -> list[dict[str, Any]]:
    """The deployment's schedules on the server, in relance.deployments' shape."""
    found = []
    for s in schedules or []:
        interval = getattr(s.schedule, "interval", None)
        if interval is not None:
            found.append({"interval": int(interval.total_seconds()), "active": s.active})
        else:
            found.append({"cron": getattr(s.schedule, "cron", None), "timezone": getattr(s.schedule, "timezone", None),
                          "active": s.active})
    return found


def _trigger_now(client, deployment_id) -> list[dict[str, Any]]:
    """The triggers of the deployment's own automations, in prefect.yaml's shape."""
    found = []
    for automation in client.read_resource_related_automations(f"prefect.deployment.{deployment_id}"):
        if not any(getattr(a, "deployment_id", None) == deployment_id for a in automation.actions):
            continue  # related (it names the deployment) but not one that runs it
        t = automation.trigger
        match = getattr(t, "match", None)
        found.append({"type": "event", "enabled": automation.enabled, "name": automation.name,
                      "match": dict(getattr(match, "root", match) or {}), "expect": sorted(getattr(t, "expect", ()) or ()),
                      "posture": str(getattr(getattr(t, "posture", ""), "value", getattr(t, "posture", ""))),
                      "threshold": getattr(t, "threshold", None),
                      "within": int(getattr(t, "within").total_seconds()) if getattr(t, "within", None) is not None else None})
    return found


def _wanted_trigger(d: Deployment) -> list[dict[str, Any]]:
    trigger = trigger_of(d)
    return [] if trigger is None else [dict(trigger, expect=sorted(trigger["expect"]))]


def _differences(existing, client, d: Deployment, pull: list[dict]) -> list[str]:
    """The fields of the deployment on the server that differ from what relance wants, in words."""
    limit = existing.global_concurrency_limit.limit if existing.global_concurrency_limit else None
    strategy = getattr(getattr(existing.concurrency_options, "collision_strategy", None), "value", None)
    now = {"entrypoint": existing.entrypoint, "description": existing.description, "tags": sorted(existing.tags),
           "parameters": existing.parameters, "work pool": (existing.work_pool_name, existing.work_queue_name),
           "pull steps": existing.pull_steps, "schedule": _schedule_now(existing.schedules),
           "one at a time": (limit, strategy), "paused": existing.paused,
           "trigger": _trigger_now(client, existing.id)}
    want = {"entrypoint": d.entrypoint, "description": d.description, "tags": sorted(d.tags), "parameters": d.parameters,
            "work pool": (POOL, QUEUE), "pull steps": pull, "schedule": [d.schedule],
            "one at a time": (1, "ENQUEUE") if d.one_at_a_time else (None, None), "paused": False,
            "trigger": _wanted_trigger(d)}
    words = {"schedule": lambda found: " + ".join(map(_schedule_words, found)) or "none",
             "trigger": lambda found: ", ".join(t["name"] for t in found) or "none"}
    return [f"{key}: {words.get(key, _shown)(now[key])} -> {words.get(key, _shown)(want[key])}"
            for key in want if now[key] != want[key]]


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parameter_schema(d: Deployment, folder: Path) -> dict[str, Any]:
    """The schema of the flow's parameters (the UI's run form), read from its source without importing it."""
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    path, function = d.entrypoint.split(":")
    return parameter_schema_from_entrypoint(f"{folder / path}:{function}").model_dump_for_openapi()


def _one(client, d: Deployment, pull: list[dict], dry_run: bool) -> Change:
    """Create or update one deployment if it differs from `d`; its trigger too."""
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_deployment_by_name(d.full_name)
    except ObjectNotFound:
        existing = None
    if existing is not None:
        details = _differences(existing, client, d, pull)
        if not details:
            return Change(d.full_name, "unchanged")
    else:
        details = [_schedule_words(d.schedule)] + (["runs within seconds of its scenario's events"] if d.trigger else [])
    if dry_run:
        return Change(d.full_name, "update" if existing else "create", details)
    folder = Path(pull[0]["prefect.deployments.steps.set_working_directory"]["directory"])
    deployment_id = client.create_deployment(  # creates, or updates the deployment of that flow and name
        flow_id=client.create_flow_from_name(d.flow), name=d.name, entrypoint=d.entrypoint, description=d.description,
        tags=list(d.tags), parameters=d.parameters, work_pool_name=POOL, work_queue_name=QUEUE, pull_steps=pull,
        schedules=[_schedule_create(d.schedule)], paused=False, job_variables={},
        parameter_openapi_schema=_parameter_schema(d, folder), enforce_parameter_schema=True,
        concurrency_limit=1 if d.one_at_a_time else None,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE) if d.one_at_a_time else None,
    )
    if existing is None or any(line.startswith("trigger:") for line in details):
        _set_trigger(client, deployment_id, d)
    return Change(d.full_name, "update" if existing else "create", details)


def _set_trigger(client, deployment_id, d: Deployment) -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
    if (spec := trigger_of(d)) is not None:  # read as `prefect deploy` reads prefect.yaml's `triggers:`
        trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(spec)
        trigger.set_deployment_id(deployment_id)
        client.create_automation(trigger.as_automation())


def _schedule_words(schedule: dict[str, Any]) -> str:
    shown = (f"every {format_duration(timedelta(seconds=schedule['interval']))}" if "interval" in schedule
             else f"cron {schedule['cron']} ({schedule['timezone']})")
    return shown + ("" if schedule["active"] else ", schedule off")


def _retire(client, scenarios: set[str], dry_run: bool) -> list[Change]:
    """Pause the ticks of scenarios the folder no longer has, and remove their triggers."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    changes = []
    for existing in client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=["tick"]))):
        if existing.name in scenarios:
            continue
        name = f"tick/{existing.name}"
        if existing.paused and not _trigger_now(client, existing.id):
            changes.append(Change(name, "paused", ["its scenario is not in the folder"]))
            continue
        if not dry_run:
            client.pause_deployment(existing.id)
            client.delete_resource_owned_automations(f"prefect.deployment.{existing.id}")
        changes.append(Change(name, "pause", ["its scenario is not in the folder any more: paused, its runs kept"]))
    return changes
