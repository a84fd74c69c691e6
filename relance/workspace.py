"""The scenarios folder, read and validated as a whole: plans by name, scoring, problems.

This is where scenario files are read; `relance.scenario` itself stays pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


from relance.policy import SendingPolicy
from relance.scenario.plan import Plan, compile_scenario
from relance.scoring.config import ScoringConfig
from relance.settings import Settings
from relance.textfile import TextFileError, read_text

SCORING_FILE = "scoring.yaml"
SENDING_FILE = "sending.yaml"
SETTINGS_FILES = (SCORING_FILE, SENDING_FILE)  # the account's files beside the scenarios: not scenarios


class SetupError(RuntimeError):
    """A folder relance needs is not there; the message says what, where it looked and what to do."""


def _folder(settings: Settings, name: str, what: str) -> Path:
    """The folder setting `name` (scenarios_dir, templates_dir), or SetupError saying where it looked."""
    path = Path(getattr(settings, name))
    where = path.absolute()
    variable = f"RELANCE_{name.upper()}"
    if path.is_dir():
        return path
    if name in settings.model_fields_set:  # the operator pointed it somewhere: that is what to fix
        found = "is a file, not a folder" if path.exists() else "does not exist"
        raise SetupError(f"{variable} points to {where}, which {found}: set it to the folder of your {what}")
    found = "a file, not a folder" if path.exists() else "not found"
    raise SetupError(f"no folder of {what} at {where} ({found}): run relance from your project folder (the one with "
                     f"scenarios/ and templates/emails/), or set {variable} to the folder of your {what}")


def scenarios_folder(settings: Settings) -> Path:
    """RELANCE_SCENARIOS_DIR, checked: SetupError when it is not a folder."""
    return _folder(settings, "scenarios_dir", "scenario files")


def templates_folder(settings: Settings) -> Path:
    """RELANCE_TEMPLATES_DIR, checked: SetupError when it is not a folder."""
    return _folder(settings, "templates_dir", "email templates")


class ScenarioError(ValueError):
    """The scenarios have problems; `problems` lists every one of them."""

    def __init__(self, problems: list) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the scenarios:\n" + "\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class BrokenScenario:
    """A scenario file with problems: it does not run until it is fixed; its leads wait where they are."""

    path: Path
    name: str | None  # the scenario id the file declares, when it can be read
    problems: tuple = ()

    @property
    def who(self) -> str:
        return f"scenario {self.name} ({self.path})" if self.name else f"the scenario file {self.path}"

    def warning(self) -> str:
        """One sentence for an operator: what is wrong, what it means for the leads, what to do."""
        first = self.problems[0] if self.problems else None
        shown = f" (line {first.line}: {first.message})" if first else ""
        return (f"{self.who} has {len(self.problems)} problem(s){shown} and does not run until it is fixed; its leads "
                f"wait where they are: see `relance validate {self.path}`")


@dataclass
class Workspace:
    plans: dict[str, Plan] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    sending: SendingPolicy = field(default_factory=SendingPolicy)  # sending.yaml: caps, quiet hours, blackout
    broken: list[BrokenScenario] = field(default_factory=list)  # every file with problems, valid ones aside

    @property
    def waiting(self) -> dict[str, BrokenScenario]:
        """The scenarios that do not run because their file is broken, by name (a name another, valid file
        holds is not one of them: that file runs)."""
        return {b.name: b for b in self.broken if b.name is not None and b.name not in self.plans}

    def broken_file(self, argument: str) -> BrokenScenario | None:
        """The broken file a SCENARIO argument names (by scenario id or path), if it is one."""
        path = Path(argument)
        for broken in self.broken:
            if broken.name == argument and argument not in self.plans:
                return broken
            if path.exists() and broken.path.exists() and broken.path.resolve() == path.resolve():
                return broken
        return None


def scenario_files(paths: list[Path]) -> list[Path]:
    """Scenario YAML files named directly or found in folders (scoring.yaml and sending.yaml are not scenarios)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.name not in SETTINGS_FILES))
        else:
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def read_source(path: Path) -> tuple[str, None] | tuple[None, "Problem"]:
    """The text of a scenario file or scoring.yaml, or the problem that keeps it from being read (too big, not
    UTF-8, not readable), located at the byte at fault."""
    from relance.scenario.loader import MAX_FILE_BYTES
    from relance.scenario.problems import Problem

    try:
        return read_text(path, limit=MAX_FILE_BYTES, what="a scenario file"), None
    except TextFileError as exc:
        return None, Problem(str(path), exc.line, exc.col, None, str(exc))
    except OSError as exc:
        return None, Problem(str(path), 1, 1, None, f"cannot read: {exc.strerror or exc}")


def _read_account_file(directory: Path, name: str, model, *, shape: str):
    """One of the account's files beside the scenarios (scoring.yaml, sending.yaml): the model (its defaults when
    the file is absent or unreadable) and its problems, each at its line."""
    from relance.scenario.loader import load_model_text

    path = directory / name
    if not path.exists():
        return model(), []
    text, problem = read_source(path)
    if problem is not None:
        return model(), [problem]
    loaded, _positions, problems = load_model_text(text, str(path), model, shape=shape)
    return (loaded or model()), problems


def read_scoring(directory: Path) -> tuple[ScoringConfig, list]:
    """scoring.yaml of a folder (defaults when absent) and its problems, each at its line."""
    return _read_account_file(directory, SCORING_FILE, ScoringConfig,
                              shape="scoring.yaml is a mapping with behaviour:, fit:, grades:, mql:, handoff: ...")


def read_sending(directory: Path) -> tuple[SendingPolicy, list]:
    """sending.yaml of a folder (the empty policy when absent) and its problems, each at its line."""
    return _read_account_file(directory, SENDING_FILE, SendingPolicy,
                              shape="sending.yaml is a mapping with caps:, quiet:, blackout:, timezone:, held: ...")


def _teams(scorings: list[tuple[ScoringConfig, list]]) -> set[str] | None:
    """The sales teams a scenario's hand-off step may name; None (unchecked) while a scoring.yaml has problems."""
    if any(problems for _, problems in scorings):
        return None
    return {name for config, _ in scorings for name in config.sales.teams}


def load_scoring(directory: Path) -> ScoringConfig:
    """scoring.yaml of a folder; raises ScenarioError listing every problem."""
    config, problems = read_scoring(directory)
    if problems:
        raise ScenarioError(problems)
    return config


def _template_checker(templates_dir: Path, settings: Settings | None = None):
    """Checks a template by name; given the settings, the first template asked for checks the folder is there."""
    from relance.email.templates import TemplateLibrary

    check = TemplateLibrary(templates_dir).check
    if settings is None:
        return check

    def checked(name: str, *, to_lead: bool = False) -> list[str]:
        templates_folder(settings)  # only scenarios that send need it: checked when the first template is
        return check(name, to_lead=to_lead)

    return checked


def _webhook_checker(allow: str):
    """Why `relance validate` refuses a webhook URL written with an address inside the network (RELANCE_WEBHOOK_ALLOW)."""
    from relance.webhooks import literal_refusal

    return lambda url: literal_refusal(url, allow)


def validate_paths(paths: list[Path], *, templates_dir: Path | None,
                   settings: Settings | None = None, also_in: Path | None = None,
                   webhook_allow: str = "") -> tuple[list, dict[str, Path]]:
    """Every problem of every scenario file, and the scenario names found (name -> path); given the
    settings, a missing templates folder (when a scenario sends) is a SetupError, not one problem per step.
    An `enroll:` may name any scenario of the folders of the files (and of `also_in`, the scenarios folder):
    those other files are read for their names only, their problems are theirs."""
    from relance.scenario.validate import check_texts

    files = scenario_files(paths)
    texts, problems = _read_all(files)
    check = _template_checker(templates_dir, settings) if templates_dir is not None else None
    folders = [p for p in paths if p.is_dir()]
    for folder in folders:
        problems.extend(read_scoring(folder)[1])
        problems.extend(read_sending(folder)[1])
    # the teams a hand-off step may name: of the folders given, else of the folders the files are in
    teams = _teams([read_scoring(folder) for folder in dict.fromkeys(folders or [p.parent for p in paths])])
    checked = check_texts(texts, check_template=check, also_known=_names_beside(files, also_in), known_teams=teams,
                          check_webhook=_webhook_checker(webhook_allow))
    problems.extend(checked.problems)
    return sorted(problems, key=lambda p: (p.path, p.line, p.col)), {name: Path(path) for name, path in checked.names.items()}


def _read_all(files: list[Path]) -> tuple[dict[str, str], list]:
    """The texts of the files that can be read (by path), and a problem for each one that cannot."""
    texts: dict[str, str] = {}
    problems = []
    for path in files:
        text, problem = read_source(path)
        if problem is not None:
            problems.append(problem)
        else:
            texts[str(path)] = text
    return texts, problems


def _declared_name(path: Path) -> str | None:
    """The scenario id a file that cannot be read as a whole declares on its `scenario:` line, if any."""
    from relance.scenario.loader import _written_name

    try:
        with path.open("rb") as stream:
            return _written_name(stream.read(4096).decode("utf-8", "replace"))
    except OSError:
        return None


def _names_beside(files: list[Path], also_in: Path | None) -> set[str]:
    """The scenario ids declared by the other files of these files' folders (and of `also_in`)."""
    from relance.scenario.loader import scenario_name

    folders = {f.parent.resolve() for f in files} | ({also_in.resolve()} if also_in is not None and also_in.is_dir() else set())
    mine = {f.resolve() for f in files}
    names: set[str] = set()
    for other in scenario_files(sorted(folders)):
        if other.resolve() in mine:
            continue
        text, _problem = read_source(other)
        name = scenario_name(text) if text is not None else None
        if name:
            names.add(name)
    return names


def load_workspace(settings: Settings, extra: list[Path] | None = None) -> Workspace:
    """Every scenario of the folder (plus `extra` files), validated together. A file with problems does not stop
    the others: it is listed in `broken` and its scenario is left out of `plans`. Raises ScenarioError when
    scoring.yaml has problems (every scenario depends on it), SetupError when the scenarios folder (or, for a
    scenario that sends, the templates folder) is missing."""
    from relance.scenario.validate import check_texts

    paths = scenario_files([scenarios_folder(settings), *(extra or [])])
    texts, unread = _read_all(paths)
    key = _read_from({**texts, **{p.path: f"\0{p}" for p in unread}}, settings)
    if (workspace := _loaded.get(key)) is not None:
        return workspace
    scoring, scoring_problems = read_scoring(settings.scenarios_dir)
    sending, sending_problems = read_sending(settings.scenarios_dir)
    if scoring_problems or sending_problems:  # every scenario depends on both
        raise ScenarioError([*scoring_problems, *sending_problems])
    checked = check_texts(texts, check_template=_template_checker(settings.templates_dir, settings),
                          known_teams=_teams([(scoring, scoring_problems)]), check_webhook=_webhook_checker(settings.webhook_allow))
    by_file: dict[str, list] = {}
    for problem in [*unread, *checked.problems]:
        by_file.setdefault(problem.path, []).append(problem)
    workspace = Workspace(
        plans={name: compile_scenario(scenario) for name, scenario in checked.scenarios.items()
               if checked.names[name] not in by_file},
        paths={name: Path(path) for name, path in checked.names.items() if path not in by_file},
        scoring=scoring,
        sending=sending,
        broken=[BrokenScenario(Path(path), checked.declared.get(path, _declared_name(Path(path))), tuple(found))
                for path, found in sorted(by_file.items())],
    )
    if len(_loaded) >= 8:
        _loaded.clear()
    _loaded[key] = workspace
    return workspace


_loaded: dict[str, Workspace] = {}  # a valid workspace by what it was read from: a flow run in the process that loaded it reads no YAML again


def _read_from(texts: dict[str, str], settings: Settings) -> str:
    """A digest of everything a workspace is made of: the scenario files' names and texts, scoring.yaml, every
    template file and the settings. Contents, not modification times: two edits within one clock tick differ too."""
    digest = hashlib.blake2b(settings.model_dump_json().encode(), digest_size=20)
    files = [Path(settings.scenarios_dir) / name for name in SETTINGS_FILES]
    if (templates := Path(settings.templates_dir)).is_dir():
        files.extend(sorted(f for f in templates.rglob("*") if f.is_file()))
    for name, text in [*sorted(texts.items()), *((str(f), f.read_bytes() if f.is_file() else b"") for f in files)]:
        digest.update(name.encode() + b"\0")
        digest.update((text.encode() if isinstance(text, str) else text) + b"\0")
    return digest.hexdigest()


class BrokenArgument(LookupError):
    """A SCENARIO argument names a scenario whose file has problems."""

    def __init__(self, broken: BrokenScenario) -> None:
        self.broken = broken
        super().__init__(f"{broken.who} has {len(broken.problems)} problem(s): fix them, then run it again "
                         f"(relance validate {broken.path})")


def name_for_argument(workspace: Workspace, argument: str) -> str:
    """A SCENARIO argument is a name from the folder or the path of one of its files; BrokenArgument when it
    names a file with problems."""
    if argument in workspace.plans:
        return argument
    if (broken := workspace.broken_file(argument)) is not None:
        raise BrokenArgument(broken)
    path = Path(argument)
    for name, known in workspace.paths.items():
        if path.exists() and known.resolve() == path.resolve():
            return name
    known = ", ".join(sorted(workspace.plans)) or "none"
    raise LookupError(f"no scenario {argument!r} (known: {known})")
