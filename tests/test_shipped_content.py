"""What ships with relance: the scenarios folder and the demo's sample leads."""

from __future__ import annotations

import csv
import importlib.util
import io
import sys
from collections import Counter, deque
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from relance.importer import parse_leads_csv
from relance.scenario.model import Enroll, Scenario, Send, Split
from relance.scenario.plan import Plan, compile_scenario
from relance.scoring.config import ScoringConfig

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = importlib.util.spec_from_file_location("generate_leads", ROOT / "scripts" / "generate_leads.py")
generate_leads = sys.modules.setdefault("generate_leads", importlib.util.module_from_spec(_SCRIPT))  # dataclasses look it up
_SCRIPT.loader.exec_module(generate_leads)
generate, to_csv = generate_leads.generate, generate_leads.to_csv
SCENARIOS = ROOT / "scenarios"
LEADS_CSV = ROOT / "relance" / "demo" / "leads.csv"
SHIPPED = ["monthly-newsletter", "re-engagement", "whitepaper-nurture"]
TEMPLATES = {"whitepaper-followup", "whitepaper-reminder", "case-study-invite", "monthly-newsletter",
             "reengage-checkin", "reengage-offer"}
TIMEZONES = {"FR": "Europe/Paris", "BE": "Europe/Brussels", "CH": "Europe/Zurich", "CA": "America/Montreal",
             "DE": "Europe/Berlin", "ES": "Europe/Madrid", "IT": "Europe/Rome", "LU": "Europe/Luxembourg"}


def _load(path: Path) -> object:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def _plan(name: str) -> Plan:
    return compile_scenario(Scenario.model_validate(_load(SCENARIOS / f"{name}.yaml")))


def _reachable(plan: Plan) -> set[str]:
    seen, queue = {plan.first}, deque([plan.first])
    while queue:
        for target in plan.edges[queue.popleft()].values():
            if target is not None and target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


# --------------------------------------------------------------------------- scenarios


def test_the_scenarios_folder_holds_the_shipped_scenarios_and_scoring() -> None:
    assert sorted(p.stem for p in SCENARIOS.glob("*.yaml")) == sorted([*SHIPPED, "scoring", "sending"])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_parses_compiles_and_is_named_after_its_file(name: str) -> None:
    plan = _plan(name)

    assert plan.name == name
    assert len(plan.hash) == 16


@pytest.mark.parametrize("name", SHIPPED)
def test_every_edge_of_a_shipped_scenario_lands_on_a_step_and_every_step_is_reachable(name: str) -> None:
    plan = _plan(name)

    targets = {target for edges in plan.edges.values() for target in edges.values() if target is not None}
    assert targets <= set(plan.order)
    assert _reachable(plan) == set(plan.order)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_send_names_a_shipped_template_and_every_enroll_a_shipped_scenario(name: str) -> None:
    steps = _plan(name).scenario.steps

    assert {step.send for step in steps if isinstance(step, Send)} <= TEMPLATES
    assert {step.enroll for step in steps if isinstance(step, Enroll)} <= set(SHIPPED)


def test_the_shipped_scenarios_use_all_six_templates() -> None:
    used = {step.send for name in SHIPPED for step in _plan(name).scenario.steps if isinstance(step, Send)}

    assert used == TEMPLATES


def test_whitepaper_nurture_branches_on_the_guide_open_and_falls_back_to_the_newsletter() -> None:
    plan = _plan("whitepaper-nurture")

    assert plan.scenario.trigger.model_dump() == {"event": "downloaded", "where": {"asset": "livre-blanc-leads"}}
    assert dict(plan.edges["opened-guide?"]) == {"then": "case-study", "else": "reminder"}
    assert dict(plan.edges["wait-download"]) == {"next": "bump", "on_timeout": "monthly"}
    assert plan.step("monthly").enroll == "monthly-newsletter"
    goals = [goal.model_dump(exclude_none=True) for goal in plan.scenario.exit_when]
    assert goals == [{"stage_in": ["sql", "customer"]}, {"event": "unsubscribed", "where": {}}]


def test_re_engagement_starts_on_said_later_and_ab_tests_the_offer_for_clickers_only() -> None:
    plan = _plan("re-engagement")

    assert plan.scenario.trigger.model_dump() == {"event": "said_later", "where": {}}
    assert dict(plan.edges["clicked-checkin?"]) == {"then": "bump", "else": "no-answer"}
    split = next(step for step in plan.scenario.steps if isinstance(step, Split))
    offers = [plan.step(target) for target in split.branches.values()]
    assert [offer.send for offer in offers] == ["reengage-offer", "reengage-offer"]
    assert len({offer.subject for offer in offers}) == 2


def test_monthly_newsletter_comes_back_at_most_every_thirty_days() -> None:
    scenario = _plan("monthly-newsletter").scenario

    assert scenario.model_dump(mode="json")["reentry"] == {"after": "30d"}
    assert scenario.trigger.model_dump(mode="json", by_alias=True, exclude_none=True) == {
        "segment": {"all": [{"stage_in": ["nurturing"]}, {"grade_at_least": "C"}]}
    }


def test_scoring_yaml_parses_and_points_at_shipped_scenarios() -> None:
    scoring = ScoringConfig.model_validate(_load(SCENARIOS / "scoring.yaml"))

    assert scoring.later is not None and scoring.later.scenario in SHIPPED
    assert scoring.sales.owners == ["claire@example.com", "karim@example.com"]
    assert scoring.mql.score_at_least == 40 and scoring.handoff.grade_at_least == "B"


# --------------------------------------------------------------------------- sample leads


@pytest.fixture(scope="module")
def sample_text() -> str:
    return LEADS_CSV.read_text(encoding="utf-8")


def test_sample_leads_parse_without_a_single_problem(sample_text: str) -> None:
    result = parse_leads_csv(sample_text, source=None)

    assert result.problems == []
    assert len(result.rows) >= 200


def test_sample_leads_are_varied_like_a_real_european_b2b_base(sample_text: str) -> None:
    rows = parse_leads_csv(sample_text, source=None).rows
    countries = Counter(row.country for row in rows)
    sectors = Counter(row.sector for row in rows)
    sources = Counter(row.source for row in rows)

    assert set(countries) >= {"FR", "BE", "CH", "CA", "DE", "ES", "IT"}
    assert countries.most_common(1)[0][0] == "FR" and countries["FR"] < len(rows) * 0.6
    assert set(sectors) == {"saas", "industrie", "services", "retail", "banque", "santé"}
    assert set(sources) == {"salon-vivatech", "webinar", "site-web", "linkedin-ads", "import-crm", "partenaire"}
    revenues = [row.company_revenue for row in rows if row.company_revenue is not None]
    assert min(revenues) < 1_000_000 and max(revenues) > 100_000_000
    assert all(200_000 <= revenue <= 500_000_000 for revenue in revenues)
    assert len({row.job_title for row in rows}) >= 20
    assert len({row.company for row in rows}) >= 80


def test_sample_leads_live_in_their_countrys_timezone_on_example_domains(sample_text: str) -> None:
    rows = parse_leads_csv(sample_text, source=None).rows

    assert all(row.timezone == TIMEZONES[row.country] for row in rows)
    assert all(row.email.endswith(".example") for row in rows)


def test_the_committed_csv_is_exactly_what_the_generator_makes(sample_text: str) -> None:
    assert to_csv(generate()) == sample_text
    assert next(csv.reader(io.StringIO(sample_text))) == [
        "email", "first_name", "last_name", "job_title", "company", "sector", "company_revenue",
        "country", "timezone", "language", "source",
    ]
