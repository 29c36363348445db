# BuildHub: `make run` starts everything on this machine, `make test` lints and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("requirements.lock","rb").read()).hexdigest()[:12])')

# The pinned fallback tool chain of OTA builds (toolchain/package-lock.json), through the same
# npm cache as the builds; reinstalled only when its lock file changes.
VAR_DIR := $(or $(BUILDHUB_VAR_DIR),var)
TOOLCHAIN_STAMP := toolchain/node_modules/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("toolchain/package-lock.json","rb").read()).hexdigest()[:12])')

.PHONY: run test lint venv toolchain migrate bench clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# The project itself, editable, for its commands (buildhub-emit).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

toolchain: $(TOOLCHAIN_STAMP)

$(TOOLCHAIN_STAMP): toolchain/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null \
		|| { echo "Node.js 20+ and npm are required for OTA builds"; exit 1; }
	cd toolchain && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline \
		--cache "$(abspath $(VAR_DIR))/cache/npm"
	touch $@

run: venv toolchain
	$(PY) manage.py runlocal

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint toolchain
	$(PY) -m pytest

migrate: venv
	$(PY) manage.py migrate

# Measurements on real PostgreSQL + Redis (BENCH_DATABASE_URL is dropped and re-created,
# BENCH_REDIS_URL or REDIS_URL emptied); prints a table and writes var/bench/results.json.
bench: venv toolchain
	$(PY) -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var toolchain/node_modules
