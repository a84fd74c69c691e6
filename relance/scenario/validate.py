"""The graph pass: every problem of a loaded scenario at once, never raising.

Shape errors come from the loader; this pass asks questions of the step graph (dangling
targets, unreachable steps, loops that never wait) and of the content (Jinja syntax,
templates, conditions on steps that send nothing, enrollments into unknown scenarios).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from relance.scenario.loader import Draft, DraftStep, Positions, load_scenario_draft
from relance.scenario.model import (
    Clicked,
    Enroll,
    Handoff,
    Notify,
    Opened,
    Scenario,
    Send,
    SegmentTrigger,
    nested,
)
from relance.scenario.plan import _edges_of, step_conditions, step_waits
from relance.scenario.problems import Problem

TemplateCheck = Callable[..., list[str]]  # check(name, to_lead=bool): a send step's template reaches leads
WebhookCheck = Callable[[str], "str | None"]  # check(url): why relance may not call this webhook, or None
_JINJA = SandboxedEnvironment()


def _hint(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _targets(step: Any) -> Iterator[tuple[str, str]]:
    """(key, target step id) for every explicit edge a step writes: `next:` and the plan's other edges."""
    if step.next is not None:
        yield "next", step.next
    for key, target in _edges_of(step, None).items():
        if target is not None and key != "next":
            yield key, target


def _all_conditions(draft: Draft) -> Iterator[tuple[Any, tuple[Any, ...], int | None]]:
    """(condition, YAML path, step index or None) for if, wait_until, exit_when and segment triggers that parsed."""
    if isinstance(draft.trigger, SegmentTrigger):
        for found in nested(draft.trigger.segment, ("trigger", "segment")):
            yield (*found, None)
    for index, condition in draft.exit_when:
        for found in nested(condition, ("exit_when", index)):
            yield (*found, None)
    for index, written in enumerate(draft.steps):
        for key, condition in (step_conditions(written.step) if written.step is not None else {}).items():
            for found in nested(condition, ("steps", index, key)):
                yield (*found, index)


def _cycles_without_wait(edges: dict[str, list[str]], order: list[str], waits: set[str]) -> list[list[str]]:
    """One cycle per strongly connected group of steps that loops without passing a wait."""
    graph = {node: [t for t in edges.get(node, []) if t in edges and t not in waits] for node in order if node not in waits}
    rank = {node: i for i, node in enumerate(order)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        # Tarjan's algorithm; scenarios are small, so recursion depth is no concern.
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(group)

    for node in graph:
        if node not in index:
            connect(node)
    cycles = []
    for group in sorted(groups, key=lambda g: min(rank[n] for n in g)):
        members = set(group)
        start = min(group, key=rank.__getitem__)
        cycles.append(_cycle_from(start, graph, members, rank))
    return cycles


def _cycle_from(start: str, graph: dict[str, list[str]], members: set[str], rank: dict[str, int]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected group (breadth first: shortest)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node], key=rank.__getitem__):
                if target not in members:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    return [start, start]


def validate_scenario(
    scenario: Scenario | Draft,
    positions: Positions,
    *,
    path: str,
    known_scenarios: set[str] | None = None,
    check_template: TemplateCheck | None = None,
    known_teams: set[str] | None = None,
    check_webhook: WebhookCheck | None = None,
) -> list[Problem]:
    """Every graph and content problem of a loaded scenario, or of what parsed of one (a Draft), sorted by place
    (`known_teams`: the sales teams of scoring.yaml a `handoff` step's `team:` may name; None: not checked;
    `check_webhook`: why a webhook URL may not be called, or None)."""
    draft = Draft.of(scenario) if isinstance(scenario, Scenario) else scenario
    problems: list[Problem] = []

    def report(where: tuple[Any, ...], step_id: str | None, message: str) -> None:
        problems.append(Problem(path, *positions.at(*where), step_id, message))

    steps = draft.steps
    first_index: dict[str, int] = {}
    for index, written in enumerate(steps):
        if written.id is None:
            continue
        if written.id in first_index:
            line = positions.step(first_index[written.id], "id")[0]
            report(("steps", index, "id"), written.id, f"duplicate step id '{written.id}' (already used on line {line})")
        else:
            first_index[written.id] = index
    ids = set(first_index)

    for index, written in enumerate(steps):
        step = written.step
        if step is None:
            continue  # its own problems come from the loader; its id and edges still count below
        for key, target in _targets(step):
            if target not in ids:
                report(("steps", index, key), step.id, f"`{key}: {target}` names no step{_hint(target, ids)}")
        if isinstance(step, Enroll) and known_scenarios is not None and step.enroll not in known_scenarios:
            known = ", ".join(sorted(known_scenarios)) or "none"
            report(("steps", index, "enroll"), step.id,
                   f"`enroll: {step.enroll}` names no scenario{_hint(step.enroll, known_scenarios)} (known: {known})")
        if isinstance(step, Handoff) and step.team is not None and known_teams is not None and step.team not in known_teams:
            known = ", ".join(sorted(known_teams)) or "none"
            report(("steps", index, "team"), step.id,
                   f"`team: {step.team}` names no team of scoring.yaml `sales.teams`{_hint(step.team, known_teams)} (defined: {known})")
        if isinstance(step, Send):
            for key in ("subject", "preheader"):
                _check_jinja(getattr(step, key), ("steps", index, key), step.id, key, report)
            _check_template(check_template, step.send, ("steps", index, "send"), step.id, report, to_lead=True)
        if isinstance(step, Notify):
            _check_jinja(step.notify.subject, ("steps", index, "notify", "subject"), step.id, "subject", report)
            if step.notify.webhook and check_webhook is not None and (why := check_webhook(step.notify.webhook)):
                report(("steps", index, "notify", "webhook"), step.id, f"`webhook: {step.notify.webhook}` is refused: {why}")
            if step.notify.template:
                _check_template(check_template, step.notify.template, ("steps", index, "notify", "template"), step.id, report,
                                to_lead=False)

    for condition, where, step_index in _all_conditions(draft):
        if not isinstance(condition, (Opened, Clicked)):
            continue
        key = "opened" if isinstance(condition, Opened) else "clicked"
        target = getattr(condition, key)
        step_id = steps[step_index].id if step_index is not None else None
        if target not in ids:
            report(where + (key,), step_id, f"`{key}: {target}` names no step{_hint(target, ids)}")
        elif (kind := steps[first_index[target]].tag) not in ("send", None):
            report(where + (key,), step_id, f"`{key}: {target}` names {_a(kind)} step, which sends no email")

    problems.extend(_graph_problems(draft, positions, path))
    return sorted(problems)


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _check_jinja(text: str | None, where: tuple[Any, ...], step_id: str, key: str, report: Callable[..., None]) -> None:
    if not text:
        return
    try:
        _JINJA.parse(text)
    except TemplateSyntaxError as exc:
        report(where, step_id, f"`{key}:` Jinja syntax error: {exc.message}")
    except RecursionError:
        report(where, step_id, f"`{key}:` is nested too deeply for Jinja to read (brackets or {{% if %}} in {{% if %}}...)")


def _check_template(check: TemplateCheck | None, name: str, where: tuple[Any, ...], step_id: str, report: Callable[..., None],
                    *, to_lead: bool) -> None:
    if check is None:
        return
    for message in check(name, to_lead=to_lead):
        report(where, step_id, message)


_FOLLOWING = "\0following"  # an edge to the step written below


def _edges_written(written: DraftStep) -> list[str | None]:
    """Where a step may lead (step ids, _FOLLOWING, None: leave). A step that did not parse may lead anywhere it
    names and to the step below: no step is called unreachable because of a mistake elsewhere."""
    if written.step is not None:
        step = written.step
        return list(_edges_of(step, step.next if step.next is not None else _FOLLOWING).values())
    raw = written.raw
    keys = ("next", "then", "else", "on_timeout")
    if written.tag == "split":
        keys = tuple(key for key in raw if key not in ("id", "split"))
    return [raw[key] for key in keys if isinstance(raw.get(key), str)] + [_FOLLOWING]


def _graph_problems(draft: Draft, positions: Positions, path: str) -> list[Problem]:
    """Unreachable steps and loops with no wait, on the steps as written. What is unsure is never blamed: a step
    that did not parse, or whose id is used twice, counts as a wait, and an edge to a twice-used id goes to both."""
    steps = draft.steps
    if not steps:
        return []
    places: dict[str, list[int]] = {}
    for index, written in enumerate(steps):
        if written.id is not None:
            places.setdefault(written.id, []).append(index)
    edges: dict[int, list[int]] = {}
    for index, written in enumerate(steps):
        targets = [t for edge in _edges_written(written) if edge is not None
                   for t in ([index + 1] if edge == _FOLLOWING else places.get(edge, []))]
        edges[index] = [t for t in dict.fromkeys(targets) if t < len(steps)]
    problems: list[Problem] = []
    reached = {0}
    frontier = [0]
    while frontier:
        frontier = [t for node in frontier for t in edges[node] if t not in reached and not reached.add(t)]
    for index, written in enumerate(steps):
        if index not in reached and written.id is not None:
            problems.append(Problem(path, *positions.step(index), written.id,
                                    "unreachable: no path from the first step leads here"))
    unsure = {i for found in places.values() if len(found) > 1 for i in found}
    waits = unsure | {index for index, written in enumerate(steps)
                      if written.step is None or step_waits(written.step)}
    for cycle in _cycles_without_wait(edges, list(range(len(steps))), waits):
        problems.append(Problem(path, *positions.step(cycle[0]), steps[cycle[0]].id,
                                f"loop {' -> '.join(str(steps[i].id) for i in cycle)} has no wait in it"))
    return problems


@dataclass(frozen=True)
class Checked:
    """Many files validated together."""

    scenarios: dict[str, Scenario]  # by name: the files that loaded (the first file of a name)
    names: dict[str, str]  # scenario name -> its file
    problems: list[Problem]  # every problem of every file, sorted, each once
    declared: dict[str, str | None]  # file -> the scenario id it declares (None when it declares none readable)


def validate_texts(
    texts: dict[str, str], *, check_template: TemplateCheck | None = None, known_teams: set[str] | None = None
) -> tuple[dict[str, Scenario], dict[str, str], list[Problem]]:
    """Load and validate many files together: (scenarios by name, name -> path, every problem)."""
    checked = check_texts(texts, check_template=check_template, known_teams=known_teams)
    return checked.scenarios, checked.names, checked.problems


def check_texts(texts: dict[str, str], *, check_template: TemplateCheck | None = None,
                also_known: set[str] = frozenset(), known_teams: set[str] | None = None,
                check_webhook: WebhookCheck | None = None) -> Checked:
    """Every problem of every file in one pass: the graph and content checks run on whatever parsed of each file.
    `also_known`: names of other scenarios an `enroll:` may name (the rest of the folder of a file checked alone);
    `known_teams`: the sales teams of scoring.yaml (None: not checked)."""
    loaded: list[tuple[str, Scenario | None, Draft | None, Positions]] = []
    problems: list[Problem] = []
    for path in sorted(texts):
        scenario, draft, positions, found = load_scenario_draft(texts[path], path)
        problems.extend(found)
        loaded.append((path, scenario, draft, positions))
    # Names of files that failed to load still count, so one typo does not cascade into enroll errors.
    known = {positions.scenario_name for *_, positions in loaded if positions.scenario_name} | set(also_known)
    scenarios: dict[str, Scenario] = {}
    names: dict[str, str] = {}
    first_path: dict[str, str] = {}
    for path, scenario, draft, positions in loaded:
        name = positions.scenario_name
        if name is not None and name in first_path:
            problems.append(Problem(path, *positions.at("scenario"), None,
                                    f"scenario id '{name}' is already used by {first_path[name]}"))
        elif name is not None:
            first_path[name] = path
        if draft is not None:
            problems.extend(validate_scenario(draft, positions, path=path, known_scenarios=known, check_template=check_template,
                                              known_teams=known_teams, check_webhook=check_webhook))
        if scenario is None or names.get(scenario.name, path) != path:
            continue
        scenarios[scenario.name] = scenario
        names[scenario.name] = path
    declared = {path: positions.scenario_name for path, *_, positions in loaded}
    return Checked(scenarios, names, sorted(set(problems)), declared)
