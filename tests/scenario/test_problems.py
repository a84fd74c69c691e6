from relance.scenario.problems import Problem


def test_problem_reads_file_line_col_step_and_message() -> None:
    assert str(Problem("a.yaml", 3, 5, "pause", "bad duration")) == "a.yaml:3:5: step pause: bad duration"


def test_problem_without_step_omits_the_step_part() -> None:
    assert str(Problem("a.yaml", 1, 1, None, "missing `steps:`")) == "a.yaml:1:1: missing `steps:`"


def test_problems_sort_by_file_then_line_then_column() -> None:
    problems = [
        Problem("b.yaml", 1, 1, None, "x"),
        Problem("a.yaml", 9, 1, "s", "y"),
        Problem("a.yaml", 2, 7, None, "z"),
        Problem("a.yaml", 2, 3, "t", "w"),
    ]
    assert [(p.path, p.line, p.col) for p in sorted(problems)] == [
        ("a.yaml", 2, 3), ("a.yaml", 2, 7), ("a.yaml", 9, 1), ("b.yaml", 1, 1),
    ]
