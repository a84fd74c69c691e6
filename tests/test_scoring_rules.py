from relance.scoring.config import ScoringConfig
from relance.scoring.rules import behaviour_points, fit_points, grade_of

CONFIG = ScoringConfig.model_validate({
    "behaviour": {"email_clicked": 3, "page_visited": {"default": 1, "/tarifs*": 10}},
    "fit": {
        "job_title": {"(?i)directeur|directrice|cmo": 30, "(?i)manager|responsable": 15},
        "company_revenue": [{"at_least": 10_000_000, "points": 30}, {"at_least": 1_000_000, "points": 15}],
        "sector": {"saas": 20}, "country": {"FR": 10},
    },
    "grades": {"A": 70, "B": 50, "C": 30},
})


def test_a_director_of_a_large_french_saas_is_grade_a():
    profile = {"job_title": "Directrice marketing", "company_revenue": 25_000_000, "sector": "SaaS", "country": "fr"}
    assert fit_points(CONFIG, profile) == 90 and grade_of(CONFIG, 90) == "A"


def test_the_highest_revenue_tier_reached_counts_once():
    assert fit_points(CONFIG, {"company_revenue": 2_000_000}) == 15
    assert fit_points(CONFIG, {"company_revenue": 500_000}) == 0


def test_grades_fall_to_d_below_the_c_floor():
    assert [grade_of(CONFIG, p) for p in (70, 50, 30, 29)] == ["A", "B", "C", "D"]


def test_page_visits_score_by_glob_with_a_default():
    assert behaviour_points(CONFIG, "page_visited", {"path": "/tarifs/entreprise"}) == 10
    assert behaviour_points(CONFIG, "page_visited", {"url": "https://x.example/blog"}) == 1
    assert behaviour_points(CONFIG, "email_clicked", {}) == 3
    assert behaviour_points(CONFIG, "trial_started", {}) == 0
