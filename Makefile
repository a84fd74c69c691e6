# make demo: the main job on embedded defaults. make test: the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/relance demo

# 3 workers on 2 cores: many tests wait on subprocesses and PostgreSQL; worksteal evens out the long ones at the end
# (measured on a mixed subset: -n 2 145 s, -n 3 121 s, -n 3 --dist worksteal 112 s, -n 4 145 s)
test: $(STAMP)
	$(PY) -m pytest -n 3 --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/relance bench $(BENCH_ARGS)
