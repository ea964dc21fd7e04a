# The two commands that matter: `make demo` and `make test` (see README.md).
# Both install what they need into virtualenvs under the repo first.

PYTHON ?= python3
PYTHON312 ?= $(shell PYENV_VERSION=3.12.1 pyenv which python 2>/dev/null || command -v python3.12)
VENV := .venv
VENV61 := .venv-django61
DEMO_VENV := .venv-demo
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: demo test test-django52 test-django61 lint services bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[test,lint]' 'Django>=5.2,<5.3'
	touch $@

# The demo needs djtasks and Django only: SQLite and the database broker.
$(DEMO_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install $(PIP_FLAGS) -e . 'Django>=5.2,<5.3'
	touch $@

$(VENV61)/.installed: setup.cfg pyproject.toml
	test -n "$(PYTHON312)" || { echo "Django 6.1 needs Python 3.12 (set PYTHON312=...)"; exit 1; }
	scripts/system-packages.sh
	$(PYTHON312) -m venv $(VENV61)
	$(VENV61)/bin/pip install $(PIP_FLAGS) -e '.[test]' 'Django>=6.1,<6.2'
	touch $@

## Start Redis and PostgreSQL if they are not running (no-op when they are).
services:
	@scripts/services.sh

## Install, migrate, and run the example site on http://127.0.0.1:8000 with a worker,
## on SQLite and the database broker: nothing to run but Python.
demo: $(DEMO_VENV)/.installed
	PY=$(DEMO_VENV)/bin/python scripts/demo.sh

## The whole test suite: lint, then Django 5.2 (Python 3.11) and Django 6.1
## (Python 3.12), both on PostgreSQL, SQLite, MariaDB and a real Redis; then
## Django's own tests of django.tasks against DjtasksBackend (its source is
## fetched from PyPI once).
test: lint test-django52 test-django61

test-django52: $(VENV)/.installed services
	CI=$${CI-} DJTASKS_TEST_DB=postgres $(VENV)/bin/python -m pytest

test-django61: $(VENV61)/.installed services
	CI=$${CI-} DJTASKS_TEST_DB=postgres $(VENV61)/bin/python -m pytest
	CI=$${CI-} scripts/django-tasks-tests.sh $(VENV61)/bin/python  # Django's own tests/tasks/

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check djtasks example_project tests benchmarks
	$(VENV)/bin/mypy djtasks
	$(VENV)/bin/python manage.py makemigrations --check --dry-run

## The benchmark; peers too with BENCH_ARGS="--peers /path/to/peers-venv/bin/python".
BENCH_ARGS ?=
bench: $(VENV)/.installed services
	$(VENV)/bin/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV61) $(DEMO_VENV) .tox example_project/var
