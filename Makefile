# BuildHub: `make run` starts everything on this machine, `make test` lints and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("requirements.lock","rb").read()).hexdigest()[:12])')

.PHONY: run test lint venv migrate bench clean

venv: $(STAMP)

$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	rm -f $(VENV)/.installed-* && touch $@

run: venv
	$(PY) manage.py runlocal

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

migrate: venv
	$(PY) manage.py migrate

# Measurements on real PostgreSQL + Redis (BENCH_DATABASE_URL is dropped and re-created,
# BENCH_REDIS_URL or REDIS_URL emptied); prints a table and writes var/bench/results.json.
bench: venv
	$(PY) -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
