"""The Prefect deployments the scenarios folder calls for: one tick per scenario file, the housekeeping flows, the
SES-events drain. Pure: `relance deploy` applies them to a server (relance.prefect_deploy), `relance deploy --write`
renders them as prefect.yaml, the readable record a test keeps in step with the folder.

Each tick deployment runs on its schedule (the scenario's `schedule:`, else every 10 minutes: the safety net) and
whenever relance announces the scenario has work due now (an event it waits for, a lead it enrolls): the Prefect
event `relance.scenario.due` on the resource `relance.scenario.<name>`, which the deployment's trigger turns into a
run within seconds. At most one tick of a scenario runs at a time; the next one waits its turn (ENQUEUE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from relance.scenario.model import CronSchedule
from relance.workspace import Workspace

POOL = "relance"  # the process work pool the worker serves (`relance worker`)
QUEUE = "default"
DEFAULT_TICK_EVERY = timedelta(minutes=10)
SES_EVERY = timedelta(minutes=1)
DUE_EVENT = "relance.scenario.due"  # relance says: this scenario has work due now
TICK_ENTRYPOINT = "flows/tick.py:tick"
HOUSEKEEPING_ENTRYPOINT = "flows/housekeeping.py:{name}"
SES_ENTRYPOINT = "flows/ses_events.py:ses_events"


def scenario_resource(scenario: str) -> str:
    """The Prefect resource id of a scenario (what a tick deployment's trigger matches)."""
    return f"relance.scenario.{scenario}"


@dataclass(frozen=True)
class Deployment:
    """One Prefect deployment as relance wants it: `flow/name` runs `entrypoint` with `parameters` on `schedule`
    (`{"interval": seconds}` or `{"cron": ..., "timezone": ...}`, `active` or not), and on `trigger` (a scenario's
    due event) if it has one."""

    flow: str
    name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...]
    schedule: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    trigger: str | None = None  # the scenario whose due event runs it
    one_at_a_time: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


def schedule_of(value: timedelta | CronSchedule | None, *, active: bool = True) -> dict[str, Any]:
    """A scenario's `schedule:` as Prefect reads it; none means every 10 minutes."""
    if isinstance(value, CronSchedule):
        return {"cron": value.cron, "timezone": value.timezone or "UTC", "active": active}
    return {"interval": int((value or DEFAULT_TICK_EVERY).total_seconds()), "active": active}


def wanted(workspace: Workspace, *, ses_queue_url: str | None) -> list[Deployment]:
    """Every deployment the folder calls for, ticks by scenario name, then housekeeping, then the SES drain.

    A scenario whose file is broken keeps its tick (it says in the UI why it does not run) on the default schedule.
    The SES drain's schedule is active only where a queue is set (RELANCE_SES_QUEUE_URL): it reads it from the
    worker's settings."""
    ticks = {name: plan.scenario.schedule for name, plan in workspace.plans.items()}
    ticks.update({name: None for name in workspace.waiting})
    paths = {**{b.name: b.path for b in workspace.broken if b.name}, **workspace.paths}
    found = [
        Deployment(flow="tick", name=name, entrypoint=TICK_ENTRYPOINT,
                   description=f"Tick of scenarios/{paths[name].name}." if name in paths else f"Tick of scenario {name}.",
                   tags=("relance", "tick"), schedule=schedule_of(ticks[name]), parameters={"scenario": name},
                   trigger=name, one_at_a_time=True)
        for name in sorted(ticks)
    ]
    return found + HOUSEKEEPING + [Deployment(
        flow="ses-events", name="ses-events", entrypoint=SES_ENTRYPOINT,
        description="Drains SES event notifications (RELANCE_SES_QUEUE_URL) every minute: deliveries, bounces, "
                    "complaints, opens, clicks.",
        tags=("relance", "ses"), schedule=schedule_of(SES_EVERY, active=bool(ses_queue_url)))]


HOUSEKEEPING = [
    Deployment(flow="decay", name="decay", entrypoint=HOUSEKEEPING_ENTRYPOINT.format(name="decay"),
               description="Daily decay of idle leads' behaviour scores (scoring.yaml).", tags=("relance", "housekeeping"),
               schedule={"cron": "30 2 * * *", "timezone": "Europe/Paris", "active": True}),
    Deployment(flow="sla", name="sla", entrypoint=HOUSEKEEPING_ENTRYPOINT.format(name="sla"),
               description="Hourly check of sales handoffs against their SLA (target and deadline).",
               tags=("relance", "housekeeping"), schedule={"interval": 3600, "active": True}),
    Deployment(flow="reengage", name="reengage", entrypoint=HOUSEKEEPING_ENTRYPOINT.format(name="reengage"),
               description='Daily re-engagement of the leads sales said "later" about.', tags=("relance", "housekeeping"),
               schedule={"cron": "0 8 * * 1-5", "timezone": "Europe/Paris", "active": True}),
]


def trigger_of(deployment: Deployment) -> dict[str, Any] | None:
    """The deployment trigger (prefect.yaml's `triggers:` entry) that runs a tick when its scenario has work due."""
    if deployment.trigger is None:
        return None
    return {"type": "event", "enabled": True, "name": f"{deployment.trigger}: work due now",
            "match": {"prefect.resource.id": scenario_resource(deployment.trigger)}, "expect": [DUE_EVENT],
            "posture": "Reactive", "threshold": 1, "within": 0}


def prefect_yaml(deployments: list[Deployment], *, prefect_version: str) -> str:
    """prefect.yaml for these deployments: `prefect deploy --all` from the project folder makes the same ones."""
    lines = [PREFECT_YAML_HEAD.format(version=prefect_version)]
    for d in deployments:
        lines += [f"  - name: {d.name}", f"    entrypoint: {d.entrypoint}", f"    description: {_quoted(d.description)}",
                  f"    tags: [{', '.join(d.tags)}]"]
        if d.parameters:
            lines.append("    parameters: {" + ", ".join(f"{k}: {v}" for k, v in d.parameters.items()) + "}")
        lines += ["    work_pool:", f"      name: {POOL}", f"      work_queue_name: {QUEUE}", "      job_variables: {}",
                  "    schedules:"]
        schedule = d.schedule
        if "interval" in schedule:
            lines.append(f"      - interval: {schedule['interval']}")
        else:
            lines += [f"      - cron: {_quoted(schedule['cron'])}", f"        timezone: {schedule['timezone']}"]
        lines.append(f"        active: {'true' if schedule['active'] else 'false'}")
        if d.one_at_a_time:
            lines += ["    concurrency_limit:", "      limit: 1", "      collision_strategy: ENQUEUE"]
        if (trigger := trigger_of(d)) is not None:
            lines += ["    triggers:", f"      - type: {trigger['type']}", "        enabled: true",
                      f"        name: {_quoted(trigger['name'])}",
                      f"        match: {{prefect.resource.id: {trigger['match']['prefect.resource.id']}}}",
                      f"        expect: [{DUE_EVENT}]", "        posture: Reactive", "        threshold: 1",
                      "        within: 0"]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


PREFECT_YAML_HEAD = """\
# Prefect deployments of relance, written by `relance deploy --write` from the scenarios folder: edit the scenarios
# (their `schedule:`), not this file; a test fails when the two differ. `relance deploy` applies the same deployments
# to the server without this file; `prefect deploy --all` from this folder does the same from it.
#
#   relance deploy                                     # after any change in scenarios/ (--dry-run: what would change)
#   relance worker                                     # from this folder, with the RELANCE_* settings
#
# No build or push of code: the worker runs the flows from the folder `prefect deploy` ran in
# (the `project-dir` build step records it, the pull step moves there before each run).
# Each tick runs on its schedule and within seconds of an event its scenario waits for (its trigger:
# relance sends the Prefect event relance.scenario.due); never two ticks of one scenario at once.
name: relance
prefect-version: {version}

build:
  - prefect.deployments.steps.run_shell_script:
      id: project-dir
      script: pwd
      stream_output: false

push: null

pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{{{ project-dir.stdout }}}}"

deployments:"""
