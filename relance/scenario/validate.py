"""The graph pass: every problem of a loaded scenario at once, never raising.

Shape errors come from the loader; this pass asks questions of the step graph (dangling
targets, unreachable steps, loops that never wait) and of the content (Jinja syntax,
templates, conditions on steps that send nothing, enrollments into unknown scenarios).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from relance.scenario.loader import Positions, load_scenario_text
from relance.scenario.model import (
    All,
    Any_,
    Clicked,
    Enroll,
    Handoff,
    If,
    Not,
    Notify,
    STEP_TAGS,
    Opened,
    Scenario,
    Send,
    SegmentTrigger,
    Split,
    Wait,
    WaitUntil,
)
from relance.scenario.plan import compile_scenario
from relance.scenario.problems import Problem

TemplateCheck = Callable[..., list[str]]  # check(name, to_lead=bool): a send step's template reaches leads
_JINJA = SandboxedEnvironment()


def _hint(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _targets(step: Any) -> Iterator[tuple[str, str]]:
    """(key, target step id) for every explicit edge a step writes."""
    if step.next is not None:
        yield "next", step.next
    if isinstance(step, If):
        if step.then is not None:
            yield "then", step.then
        if step.else_ is not None:
            yield "else", step.else_
    if isinstance(step, WaitUntil) and step.on_timeout is not None:
        yield "on_timeout", step.on_timeout
    if isinstance(step, Split):
        yield from step.branches.items()


def _conditions(condition: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every condition nested in `condition`, with its YAML path."""
    yield condition, path
    if isinstance(condition, (All, Any_)):
        key = "all" if isinstance(condition, All) else "any"
        for index, inner in enumerate(getattr(condition, key)):
            yield from _conditions(inner, path + (key, index))
    elif isinstance(condition, Not):
        yield from _conditions(condition.not_, path + ("not",))


def _all_conditions(scenario: Scenario) -> Iterator[tuple[Any, tuple[Any, ...], int | None]]:
    """(condition, YAML path, step index or None) for if, wait_until, exit_when and segment triggers."""
    if isinstance(scenario.trigger, SegmentTrigger):
        for found in _conditions(scenario.trigger.segment, ("trigger", "segment")):
            yield (*found, None)
    for index, condition in enumerate(scenario.exit_when):
        for found in _conditions(condition, ("exit_when", index)):
            yield (*found, None)
    for index, step in enumerate(scenario.steps):
        if isinstance(step, If):
            for found in _conditions(step.if_, ("steps", index, "if")):
                yield (*found, index)
        elif isinstance(step, WaitUntil):
            for found in _conditions(step.wait_until, ("steps", index, "wait_until")):
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
    scenario: Scenario,
    positions: Positions,
    *,
    path: str,
    known_scenarios: set[str] | None = None,
    check_template: TemplateCheck | None = None,
    known_teams: set[str] | None = None,
) -> list[Problem]:
    """Every graph and content problem of a loaded scenario, sorted by place (`known_teams`: the sales teams of
    scoring.yaml a `handoff` step's `team:` may name; None: not checked)."""
    problems: list[Problem] = []

    def report(where: tuple[Any, ...], step_id: str | None, message: str) -> None:
        problems.append(Problem(path, *positions.at(*where), step_id, message))

    steps = scenario.steps
    first_index: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.id in first_index:
            line = positions.step(first_index[step.id], "id")[0]
            report(("steps", index, "id"), step.id, f"duplicate step id '{step.id}' (already used on line {line})")
        else:
            first_index[step.id] = index
    ids = set(first_index)

    for index, step in enumerate(steps):
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
            if step.notify.template:
                _check_template(check_template, step.notify.template, ("steps", index, "notify", "template"), step.id, report,
                                to_lead=False)

    sends = {step.id for step in steps if isinstance(step, Send)}
    for condition, where, step_index in _all_conditions(scenario):
        if not isinstance(condition, (Opened, Clicked)):
            continue
        key = "opened" if isinstance(condition, Opened) else "clicked"
        target = getattr(condition, key)
        step_id = steps[step_index].id if step_index is not None else None
        if target not in ids:
            report(where + (key,), step_id, f"`{key}: {target}` names no step{_hint(target, ids)}")
        elif target not in sends:
            report(where + (key,), step_id, f"`{key}: {target}` names {_a(_kind(steps[first_index[target]]))} step, which sends no email")

    if len(ids) == len(steps):
        problems.extend(_graph_problems(scenario, positions, path))
    return sorted(problems)


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _kind(step: Any) -> str:
    return next(tag for tag, cls in STEP_TAGS.items() if isinstance(step, cls))


def _check_jinja(text: str | None, where: tuple[Any, ...], step_id: str, key: str, report: Callable[..., None]) -> None:
    if not text:
        return
    try:
        _JINJA.parse(text)
    except TemplateSyntaxError as exc:
        report(where, step_id, f"`{key}:` Jinja syntax error: {exc.message}")


def _check_template(check: TemplateCheck | None, name: str, where: tuple[Any, ...], step_id: str, report: Callable[..., None],
                    *, to_lead: bool) -> None:
    if check is None:
        return
    for message in check(name, to_lead=to_lead):
        report(where, step_id, message)


def _graph_problems(scenario: Scenario, positions: Positions, path: str) -> list[Problem]:
    """Unreachable steps and loops with no wait, on the compiled plan's edges."""
    plan = compile_scenario(scenario)
    index_of = {step_id: index for index, step_id in enumerate(plan.order)}
    edges = {step_id: [t for t in plan.edges[step_id].values() if t is not None and t in index_of] for step_id in plan.order}
    problems: list[Problem] = []
    reached = {plan.first}
    frontier = [plan.first]
    while frontier:
        frontier = [t for node in frontier for t in edges[node] if t not in reached and not reached.add(t)]
    for step_id in plan.order:
        if step_id not in reached:
            problems.append(Problem(path, *positions.step(index_of[step_id]), step_id,
                                    "unreachable: no path from the first step leads here"))
    waits = {step.id for step in scenario.steps if isinstance(step, (Wait, WaitUntil))}
    for cycle in _cycles_without_wait(edges, list(plan.order), waits):
        problems.append(Problem(path, *positions.step(index_of[cycle[0]]), cycle[0],
                                f"loop {' -> '.join(cycle)} has no wait in it"))
    return problems


def validate_texts(
    texts: dict[str, str], *, check_template: TemplateCheck | None = None, known_teams: set[str] | None = None
) -> tuple[dict[str, Scenario], dict[str, str], list[Problem]]:
    """Load and validate many files together: (scenarios by name, name -> path, every problem)."""
    loaded: list[tuple[str, Scenario | None, Positions]] = []
    problems: list[Problem] = []
    for path in sorted(texts):
        scenario, positions, found = load_scenario_text(texts[path], path)
        problems.extend(found)
        loaded.append((path, scenario, positions))
    # Names of files that failed to load still count, so one typo does not cascade into enroll errors.
    known = {positions.scenario_name for _, _, positions in loaded if positions.scenario_name}
    scenarios: dict[str, Scenario] = {}
    names: dict[str, str] = {}
    first_path: dict[str, str] = {}
    for path, scenario, positions in loaded:
        name = positions.scenario_name
        if name is not None and name in first_path:
            problems.append(Problem(path, *positions.at("scenario"), None,
                                    f"scenario id '{name}' is already used by {first_path[name]}"))
        elif name is not None:
            first_path[name] = path
        if scenario is None:
            continue
        problems.extend(validate_scenario(scenario, positions, path=path, known_scenarios=known, check_template=check_template,
                                         known_teams=known_teams))
        if names.get(scenario.name, path) != path:
            continue
        scenarios[scenario.name] = scenario
        names[scenario.name] = path
    return scenarios, names, sorted(problems)
