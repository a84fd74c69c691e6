"""YAML text -> Scenario, with every problem located at the line and column of its key.

ruamel.yaml's round-trip loader keeps where each key and item was written; pydantic's error
locations are walked through those nodes so a marketer's editor can jump to the mistake.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from ruamel.yaml.nodes import MappingNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from relance.scenario.model import CONDITION_TAGS, STEP_TAGS, Condition, Scenario, Step, Trigger, step_tag
from relance.scenario.problems import Problem
from relance.textfile import too_big

Path = tuple[Any, ...]
_TAG_MESSAGES = {
    "unknown_step": ("a step needs one of " + ", ".join(STEP_TAGS), tuple(STEP_TAGS)),
    "unknown_condition": ("a condition needs one of " + ", ".join(CONDITION_TAGS), tuple(CONDITION_TAGS)),
    "unknown_trigger": ("a trigger is either {event: TYPE} or {segment: CONDITION}", ("event", "segment")),
}

# Patterns from model.py, said the way a marketer would fix them.
_PATTERN_HINTS = {
    r"^[a-z0-9][a-z0-9-]*$": "is not a valid scenario id: use lowercase letters, digits and dashes, like whitepaper-nurture",
    r"^[a-z][a-z0-9_]*$": "is not a valid event type: use lowercase letters, digits and underscores, like form_submitted",
    r"^[A-Za-z0-9][A-Za-z0-9_.?!-]*$": "is not a valid step id: start with a letter or digit, then letters, digits or _ . ? ! -",
    r"^\d{2}:\d{2}-\d{2}:\d{2}$": "is not a time range: write HH:MM-HH:MM, like 09:00-18:00",
    r"^https?://": "is not a web address: it must start with http:// or https://",
}


@dataclass(frozen=True)
class Positions:
    """Where each key or list item of the document was written: YAML path -> 1-based (line, col)."""

    nodes: Mapping[Path, tuple[int, int]] = field(default_factory=dict)
    scenario_name: str | None = None

    def at(self, *path: Any) -> tuple[int, int]:
        """The position of `path`, or of its closest written ancestor."""
        for end in range(len(path), -1, -1):
            found = self.nodes.get(tuple(path[:end]))
            if found is not None:
                return found
        return (1, 1)

    def step(self, index: int, *keys: Any) -> tuple[int, int]:
        """The position of step number `index` (0-based), or of one of its keys."""
        return self.at("steps", index, *keys)


def _positions_of(node: Any, path: Path, out: dict[Path, tuple[int, int]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            try:
                line, col = node.lc.key(key)
            except (AttributeError, KeyError, TypeError):
                line, col = out.get(path, (1, 1))[0] - 1, out.get(path, (1, 1))[1] - 1
            out[path + (_plain(key),)] = (line + 1, col + 1)
            _positions_of(value, path + (_plain(key),), out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            try:
                line, col = node.lc.item(index)
            except (AttributeError, KeyError, TypeError):
                line, col = out.get(path, (1, 1))[0] - 1, out.get(path, (1, 1))[1] - 1
            out[path + (index,)] = (line + 1, col + 1)
            _positions_of(value, path + (index,), out)


def _plain(value: Any) -> Any:
    """ruamel's commented containers and scalar subclasses -> plain Python values."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


# --------------------------------------------------------------------------- limits of what a file may hold

MAX_FILE_BYTES = 256_000  # a scenario of 200 steps is about 10 KB; parsing 256 KB takes a few seconds already
MAX_DEPTH = 50  # mappings and lists inside one another (an `all:` inside an `any:` ... is one level each)
MAX_ALIAS_VALUES = 10_000  # values that aliases (*name) add to a file once expanded
MAX_NUMBER_DIGITS = 30  # no key takes a longer number; Python refuses to read numbers of 4,300 digits and more
_NUMBER = re.compile(r"[-+]?(?:0[xXoObB])?[0-9a-fA-F_]+")


class LimitError(ComposerError):
    """What a file holds is past a limit (said in `problem`, at `problem_mark`)."""


class _LimitedComposer(Composer):
    """ruamel's composer, refusing (at the line and column they are written) what would make the file explode
    once read: too deep a nesting, aliases that expand to too many values, numbers too long to be read."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._nesting = 0
        self._alias_values = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            self._check_alias(event)
        elif isinstance(event, (MappingStartEvent, SequenceStartEvent)) and self._nesting >= MAX_DEPTH:
            raise LimitError(None, None, f"nested more than {MAX_DEPTH} levels deep: no scenario needs that many",
                                event.start_mark)
        elif isinstance(event, ScalarEvent) and event.style is None and len(event.value) > MAX_NUMBER_DIGITS \
                and _NUMBER.fullmatch(event.value) and any(c.isdigit() for c in event.value):
            raise LimitError(None, None, f"a number of {len(event.value)} digits is too long to be read "
                                f"(at most {MAX_NUMBER_DIGITS}); quote it if it is text", event.start_mark)
        self._nesting += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1

    def _check_alias(self, event: AliasEvent) -> None:
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # ruamel says it is undefined
        if isinstance(target, (MappingNode, SequenceNode)) and target.end_mark is None:
            raise LimitError(None, None, f"alias *{event.anchor} is used inside its own anchor &{event.anchor}: "
                                "it would never end", event.start_mark)
        values, depth = self._size(target)
        self._alias_values += values
        if self._alias_values > MAX_ALIAS_VALUES:
            raise LimitError(None, None, f"aliases (*name) expand to more than {MAX_ALIAS_VALUES:,} values "
                                f"(*{event.anchor} here): write the values out, or use fewer aliases", event.start_mark)
        if self._nesting + depth > MAX_DEPTH:
            raise LimitError(None, None, f"alias *{event.anchor} nests the file more than {MAX_DEPTH} levels deep",
                                event.start_mark)

    def _size(self, node: Any) -> tuple[int, int]:
        """(values, depth) of a node written in full (its own aliases expanded), counted once per node."""
        known = self._sizes.get(id(node))
        if known is None:
            if isinstance(node, MappingNode):
                children = [self._size(part) for pair in node.value for part in pair]
            elif isinstance(node, SequenceNode):
                children = [self._size(item) for item in node.value]
            else:
                children = []
            known = (1 + sum(c[0] for c in children), (1 + max(c[1] for c in children)) if children else 0)
            self._sizes[id(node)] = known
        return known


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, except that a date that is none (2026-13-01) stays the text written: the
    model then says what is wrong at its line, instead of the reader failing on the whole file."""

    def construct_yaml_timestamp(self, node, values=None):
        try:
            return super().construct_yaml_timestamp(node, values)
        except ValueError:
            return self.construct_scalar(node)


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _Constructor.construct_yaml_timestamp)


def _yaml() -> YAML:
    """ruamel's round-trip reader (keeps lines and columns), with the limits above."""
    reader = YAML(typ="rt")
    reader.Composer = _LimitedComposer
    reader.Constructor = _Constructor
    return reader


# --------------------------------------------------------------------------- walking error locations


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional: the type a value is actually checked against."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if _is_union(tp):
            others = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(others) == 1:
                tp = others[0]
                continue
        return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _member_matches(arg: Any, segment: Any) -> bool:
    if get_origin(arg) is Annotated:
        if any(getattr(meta, "tag", None) == segment for meta in get_args(arg)[1:]):
            return True
    inner = _unwrap(arg)
    if isinstance(inner, type) and inner.__name__ == segment:
        return True
    return get_origin(inner) is Literal and isinstance(segment, str) and segment.startswith("literal[")


def _model_field(model: type[BaseModel], key: Any) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _advance(tp: Any, segment: Any) -> tuple[Any, bool]:
    """Walk one pydantic loc segment: (type after it, whether it names a YAML key/index)."""
    tp = _unwrap(tp)
    if tp is None:
        return None, True
    if _is_union(tp):
        for arg in get_args(tp):
            if _member_matches(arg, segment):
                return _unwrap(arg), False
        return None, False
    origin = get_origin(tp)
    if origin is list:
        return get_args(tp)[0], True
    if origin is dict:
        return get_args(tp)[1], True
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _model_field(tp, segment), True
    return None, True


def _has(node: Any, segment: Any) -> bool:
    if isinstance(node, dict):
        return segment in node
    if isinstance(node, list):
        return isinstance(segment, int) and not isinstance(segment, bool) and 0 <= segment < len(node)
    return False


def _walk(data: Any, loc: tuple[Any, ...], root: Any = Scenario) -> tuple[Path, Any, Any]:
    """Follow a pydantic loc through the data: (YAML path, node reached, model type reached)."""
    path: list[Any] = []
    node, tp = data, root
    for segment in loc:
        if tp is not None:
            tp, is_key = _advance(tp, segment)
            if is_key and _has(node, segment):
                node = node[segment]
                path.append(segment)
            continue
        # The type is unknown past here (an untagged union member): keys are the only guide.
        if _has(node, segment):
            node = node[segment]
            path.append(segment)
    return tuple(path), node, tp


def _keys_of(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _did_you_mean(key: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _shown(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


# --------------------------------------------------------------------------- error -> problem


def _problem_of(error: Mapping[str, Any], data: Any, positions: Positions, path_name: str, root: Any = Scenario) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    step_id = _step_id_at(data, loc)
    if kind in ("extra_forbidden", "missing"):
        where, _node, parent = _walk(data, loc[:-1], root)
        key = loc[-1]
        if kind == "missing":
            line, col = positions.at(*where)
            message = f"missing `{key}:`"
        else:
            line, col = positions.at(*where, key)
            message = f"unknown key '{key}'{_did_you_mean(key, _keys_of(parent))}"
        return Problem(path_name, line, col, step_id, message)
    where, node, _tp = _walk(data, loc, root)
    line, col = positions.at(*where)
    if kind in _TAG_MESSAGES:
        message, tags = _TAG_MESSAGES[kind]
        if isinstance(node, dict):
            for key in node:
                hint = _did_you_mean(key, tags)
                if hint and key not in tags:
                    line, col = positions.at(*where, key)
                    return Problem(path_name, line, col, step_id, f"{message}: unknown key '{key}'{hint}")
        return Problem(path_name, line, col, step_id, message)
    key = next((segment for segment in reversed(where) if isinstance(segment, str)), None)
    if where == ("reentry",):
        message = f"`reentry: {_shown(error['input'])}` is not allowed: expected never, always or {{after: DURATION}}"
    elif kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        allowed_text = ", ".join(allowed) if allowed else str((error.get("ctx") or {}).get("expected", "")).lower()
        expected = f"one of {allowed_text}" if len(allowed) > 1 else allowed_text
        if loc and loc[-1] == "[key]":
            message = f"key {_shown(error['input'])} is not allowed here: expected {expected}"
        else:
            message = f"`{key}: {_shown(error['input'])}` is not allowed: expected {expected}"
    elif kind in ("value_error", "assertion_error"):
        message = str((error.get("ctx") or {}).get("error", error["msg"]))
    elif kind == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") in _PATTERN_HINTS:
        message = f"`{key}: {_shown(error['input'])}` {_PATTERN_HINTS[error['ctx']['pattern']]}"
    else:
        text = error["msg"][0].lower() + error["msg"][1:]
        text = text.removeprefix("input ")
        if isinstance(error.get("input"), (str, int, float, bool)) and key is not None:
            message = f"`{key}: {_shown(error['input'])}` {text}"
        else:
            message = f"`{key}:` {text}" if key is not None else text
    return Problem(path_name, line, col, step_id, message)


def _step_id_at(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(data, dict):
        steps = data.get("steps")
        if isinstance(steps, list) and _has(steps, loc[1]) and isinstance(steps[loc[1]], dict):
            step_id = steps[loc[1]].get("id")
            return str(step_id) if isinstance(step_id, (str, int)) and not isinstance(step_id, bool) else None
    return None


def _problems_of(exc: ValidationError, data: Any, positions: Positions, path: str, root: Any = Scenario) -> list[Problem]:
    errors = exc.errors()
    # A union (reentry: never | {after: 3d}) reports one error per member; keep the member the
    # marketer meant: the mapping one for a mapping, the literal one for a scalar.
    by_place: dict[Path, int] = {}
    for error in errors:
        place = _walk(data, tuple(error["loc"]), root)[0]
        by_place[place] = by_place.get(place, 0) + 1
    # `subjet:` for `subject:` is one mistake: the unknown key's hint says it, so drop the "missing".
    hinted = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            parent = _walk(data, tuple(error["loc"][:-1]), root)
            for close in difflib.get_close_matches(str(error["loc"][-1]), _keys_of(parent[2]), n=1, cutoff=0.6):
                hinted.add((parent[0], close))
    kept = []
    for error in errors:
        if error["type"] == "missing" and (_walk(data, tuple(error["loc"][:-1]), root)[0], error["loc"][-1]) in hinted:
            continue
        place = _walk(data, tuple(error["loc"]), root)[0]
        crowded = by_place[place] > 1 or any(p[: len(place)] == place and p != place for p in by_place)
        if crowded and error["type"] in ("model_type", "dict_type"):
            continue
        if crowded and error["type"] == "literal_error" and isinstance(error["input"], dict):
            continue
        kept.append(error)
    problems: list[Problem] = []
    for error in _merge_type_errors(kept, data, root):
        problem = _problem_of(error, data, positions, path, root)
        if problem not in problems:
            problems.append(problem)
    return sorted(problems)


def _merge_type_errors(errors: list[Any], data: Any, root: Any = Scenario) -> list[Any]:
    """`tag: 5` against `str | list[str]` fails twice; say it once: "a valid string or a valid list"."""
    merged: list[Any] = []
    seen: dict[Path, dict[str, Any]] = {}
    for error in errors:
        if not str(error["type"]).endswith("_type"):
            merged.append(error)
            continue
        place = _walk(data, tuple(error["loc"]), root)[0]
        if place in seen:
            first = seen[place]
            first["msg"] = first["msg"] + " or " + error["msg"].replace("Input should be ", "")
            continue
        seen[place] = dict(error)
        merged.append(seen[place])
    return merged


def load_model_text(text: str, path: str, model: type[BaseModel], *, shape: str) -> tuple[Any, Positions, list[Problem]]:
    """Parse YAML text into `model`; every problem located at its key; never raises.

    `shape` tells the reader what the file should be when it is not a mapping at all."""
    loaded, _data, positions, problems = _load(text, path, model, shape=shape)
    return loaded, positions, problems


def _load(text: str, path: str, model: type[BaseModel], *, shape: str) -> tuple[Any, dict | None, Positions, list[Problem]]:
    """`load_model_text`, and the plain mapping that was read (None when the YAML is not a mapping)."""
    if len(text) * 4 > MAX_FILE_BYTES and (size := len(text.encode("utf-8", "surrogatepass"))) > MAX_FILE_BYTES:
        return None, None, Positions(scenario_name=_written_name(text[:4096])), [
            Problem(path, 1, 1, None, too_big(size, MAX_FILE_BYTES, "a scenario file"))]
    try:
        document = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = exc.problem or str(exc)
        if isinstance(exc, LimitError):
            return None, None, Positions(scenario_name=_written_name(text)), [Problem(path, line, col, None, what)]
        if what == "but found another document":
            what = "a second document (`---`): a file holds one scenario"
        elif exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            start = exc.context_mark
            inside = exc.context.removeprefix("while parsing ").removeprefix("while constructing ").removeprefix("a ")
            what += f" (in the {inside} that starts at line {start.line + 1}, column {start.column + 1})"
        return None, None, Positions(scenario_name=_written_name(text)), [Problem(path, line, col, None, f"bad YAML: {what}")]
    except ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        if not isinstance(exc.character, int):
            return None, None, Positions(scenario_name=_written_name(text)), [Problem(path, 1, 1, None, f"bad YAML: {exc}")]
        before = text[:exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return None, None, Positions(scenario_name=_written_name(text)), [
            Problem(path, line, col, None, f"bad YAML: character U+{exc.character:04X} is not allowed in a YAML file")]
    except YAMLError as exc:
        return None, None, Positions(scenario_name=_written_name(text)), [Problem(path, 1, 1, None, f"bad YAML: {exc}")]
    nodes: dict[Path, tuple[int, int]] = {}
    if hasattr(document, "lc"):
        nodes[()] = (document.lc.line + 1, document.lc.col + 1)
    _positions_of(document, (), nodes)
    data = _plain(document)
    name = data.get("scenario") if isinstance(data, dict) else None
    positions = Positions(nodes=nodes, scenario_name=name if isinstance(name, str) else None)
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        return None, None, positions, [Problem(path, *positions.at(), None, f"{shape}, not {found}")]
    try:
        return model.model_validate(data), data, positions, []
    except ValidationError as exc:
        return None, data, positions, _problems_of(exc, data, positions, path, model)


_NAME_LINE = re.compile(r"^scenario:[ \t]*[\"']?([a-z0-9][a-z0-9-]*)[\"']?[ \t]*(?:#.*)?$", re.MULTILINE)


def _written_name(text: str) -> str | None:
    """The `scenario:` line of a file whose YAML does not parse, so it is still known by its name."""
    match = _NAME_LINE.search(text)
    return match.group(1) if match else None


def scenario_name(text: str) -> str | None:
    """The scenario id a file declares (even one with other problems), without checking anything else."""
    if len(text) > MAX_FILE_BYTES:
        return _written_name(text[:4096])
    try:
        data = _yaml().load(text)
    except YAMLError:
        return _written_name(text)
    name = data.get("scenario") if isinstance(data, dict) else None
    return str(name) if isinstance(name, str) else None


def load_scenario_text(text: str, path: str) -> tuple[Scenario | None, Positions, list[Problem]]:
    """Parse and check the shape of one scenario file; never raises."""
    scenario, _draft, positions, problems = load_scenario_draft(text, path)
    return scenario, positions, problems


_SHAPE = "a scenario file is a mapping with `scenario:`, `trigger:` and `steps:`"


def load_scenario_draft(text: str, path: str) -> tuple[Scenario | None, Draft | None, Positions, list[Problem]]:
    """`load_scenario_text`, and the parts of the file that parsed (a Draft, None when nothing did), so the
    graph and content checks run on them in the same pass as the shape problems."""
    scenario, data, positions, problems = _load(text, path, Scenario, shape=_SHAPE)
    if scenario is not None:
        return scenario, Draft.of(scenario), positions, problems
    return None, (draft_of(data) if data is not None else None), positions, problems


# --------------------------------------------------------------------------- what parsed of a file with problems


@dataclass(frozen=True)
class DraftStep:
    """One written step: `step` when it parsed, else None (the loader reported why) and `raw`, as written."""

    id: str | None
    step: Any = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The kind of step (send, wait...), parsed or as written."""
        return step_tag(self.step if self.step is not None else dict(self.raw))


@dataclass(frozen=True)
class Draft:
    """What the checks after the shape need of a scenario: the trigger, exit conditions and steps that parsed
    (None or missing when they did not), and every written step in order, parsed or not."""

    trigger: Any = None
    exit_when: tuple[tuple[int, Any], ...] = ()
    steps: tuple[DraftStep, ...] = ()

    @classmethod
    def of(cls, scenario: Scenario) -> "Draft":
        return cls(scenario.trigger, tuple(enumerate(scenario.exit_when)),
                   tuple(DraftStep(step.id, step) for step in scenario.steps))


_STEP, _TRIGGER, _CONDITION = TypeAdapter(Step), TypeAdapter(Trigger), TypeAdapter(Condition)


def _parsed(adapter: TypeAdapter, value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _written_id(raw: Any) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def draft_of(data: Mapping[str, Any]) -> Draft:
    """Each part of a scenario that failed as a whole, parsed on its own (their problems are already reported)."""
    exit_when = data.get("exit_when")
    steps = data.get("steps")
    return Draft(
        trigger=_parsed(_TRIGGER, data["trigger"]) if "trigger" in data else None,
        exit_when=tuple((index, found) for index, raw in enumerate(exit_when if isinstance(exit_when, list) else [])
                        if (found := _parsed(_CONDITION, raw)) is not None),
        steps=tuple(DraftStep(_written_id(raw), _parsed(_STEP, raw), raw if isinstance(raw, dict) else {})
                    for raw in (steps if isinstance(steps, list) else [])),
    )
