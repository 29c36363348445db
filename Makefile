# BuildHub: `make run` starts everything on this machine, `make test` lints and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("requirements.lock","rb").read()).hexdigest()[:12])')

# The pinned fallback tool chain of OTA builds (toolchain/package-lock.json), through the same
# npm cache as the builds; reinstalled only when its lock file changes.
VAR_DIR := $(or $(BUILDHUB_VAR_DIR),var)
TOOLCHAIN_STAMP := toolchain/node_modules/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("toolchain/package-lock.json","rb").read()).hexdigest()[:12])')

.PHONY: run test test-suite test-fast test-s3 test-pgbouncer s3 lint venv toolchain clients sandbox observability browser pooler migrate bench load chaos fleet clean

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

# Builds run customer code under bubblewrap (BUILD_SANDBOX=bwrap, the default): Debian's
# package, installed here when it is missing (as root; otherwise say how).
sandbox:
	@command -v bwrap >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing bubblewrap (the build sandbox)"; \
			(apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null; \
		else \
			echo "bubblewrap is required for the build sandbox: sudo apt-get install bubblewrap"; \
			exit 1; \
		fi; }
	@bwrap --version

# The tests check the metrics, the alert rules and a live scrape with Debian's Prometheus
# (promtool and prometheus), installed here when missing (as root; otherwise say how).
observability:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing prometheus (promtool, for the metrics and alert rule tests)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; \
		else \
			echo "Prometheus is required for the tests: sudo apt-get install prometheus"; \
			exit 1; \
		fi; }
	@promtool --version 2>&1 | head -1

# The engine and API tests also run behind PgBouncer in transaction mode (make test-pgbouncer):
# Debian's package, installed here when it is missing (as root; otherwise say how).
pooler:
	@command -v pgbouncer >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing pgbouncer (the connection pooler the tests run behind)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends pgbouncer) >/dev/null; \
		else \
			echo "PgBouncer is required for the tests: sudo apt-get install pgbouncer"; \
			exit 1; \
		fi; }
	@pgbouncer --version | head -1

# The update clients' own libraries (tests/clients/package-lock.json), with which the tests
# read BuildHub's answers as devices do; reinstalled only when the lock file changes.
CLIENTS_STAMP := tests/clients/node_modules/.installed-$(shell $(PYTHON) -c 'import hashlib,sys; print(hashlib.sha256(open("tests/clients/package-lock.json","rb").read()).hexdigest()[:12])')

clients: $(CLIENTS_STAMP)

$(CLIENTS_STAMP): tests/clients/package-lock.json
	cd tests/clients && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline \
		--cache "$(abspath $(VAR_DIR))/cache/npm"
	touch $@

run: venv toolchain sandbox
	$(PY) manage.py runlocal

# Debian's Chromium for the browser tests (tests/e2e), installed here when it is missing (as
# root; otherwise say how). Playwright drives it and never downloads a browser of its own.
browser:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing chromium (the browser tests' browser)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium) >/dev/null; \
		else \
			echo "Chromium is required for the browser tests: sudo apt-get install chromium"; \
			exit 1; \
		fi; }
	@/usr/bin/chromium --version

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Every tier: unit, integration and e2e. `make test` lints first; CI lints once and runs
# `make test-suite` (the tests alone) on each database.
test: lint test-suite

test-suite: toolchain clients sandbox observability browser
	$(PY) -m pytest

# The unit tier alone (pytest -m unit: pure logic, no database, live process, tool chain or
# browser) for the edit-test loop: under a minute. No test database is created, so it is safe
# on the embedded default beside another run in the same tree.
test-fast: venv
	$(PY) -m pytest -m unit -q

# The storage tests and the publishing tests that store files, all on a real S3 server
# (SeaweedFS on loopback ports, started and stopped by the tests).
S3_TESTS := tests/storage tests/publishing/test_publishing_api.py \
	tests/publishing/test_sources.py tests/publishing/test_signed_urls.py \
	tests/publishing/test_publish_progress.py \
	tests/publishing/test_ota.py::test_a_built_bundle_is_published_and_devices_get_it
test-s3: venv toolchain sandbox
	BUILDHUB_TEST_S3=1 $(PY) -m pytest $(S3_TESTS)

# The engine, claim and API tests and a live test of four worker clusters behind PgBouncer in
# transaction mode (a pgbouncer on a free loopback port in front of DATABASE_URL's server,
# started and stopped here; DATABASE_POOLER=transaction, JOB_PREPARED_STATEMENTS=false). The
# test database is made through the pooler and dropped on PostgreSQL, hence --reuse-db.
POOLER_TESTS := tests/builds/test_pooler.py tests/builds/test_claim.py \
	tests/builds/test_submit.py tests/builds/test_dispatch.py tests/builds/test_jobs_api.py \
	tests/builds/test_limits.py tests/builds/test_fairness.py \
	tests/builds/test_workers_live.py::test_four_workers_run_every_job_once_within_each_accounts_limit \
	tests/publishing/test_builds_api.py tests/publishing/test_publishing_api.py
test-pgbouncer: venv pooler
	$(PY) -m tests.support.pgbouncer $(PY) -m pytest --reuse-db $(POOLER_TESTS)

# A SeaweedFS S3 server in the foreground under var/s3/ (port S3_PORT, default 8333), with
# the two buckets; prints the settings that put BuildHub on it. Ctrl-C stops it.
s3: venv
	$(PY) -m tests.support.s3

migrate: venv
	$(PY) manage.py migrate

# Measurements on real PostgreSQL + Redis (BENCH_DATABASE_URL is dropped and re-created,
# BENCH_REDIS_URL or REDIS_URL emptied); prints a table and writes var/bench/results.json.
bench: venv toolchain sandbox
	$(PY) -m tests.bench $(BENCH_ARGS)

# Locust against a local production-like stack (fresh LOAD_DATABASE_URL, LOAD_REDIS_URL or
# REDIS_URL emptied, one daphne per core, the worker supervisor), loopback only.
# LOAD_PROFILE=smoke (default: 10 users, 1 min) | load | stress | spike | breakpoint | soak;
# LOAD_USERS, LOAD_SECONDS and LOAD_MAX_REQUESTS bound it further. Results in var/load/.
load: venv
	$(PY) -m tests.load

# Fault drill with real processes on its own PostgreSQL cluster and Redis under var/chaos/
# (never the machine's shared servers); prints summary lines, writes var/chaos/results.json.
# CHAOS_ARGS="--quick" is the short CI variant (3 kill rounds, Redis stopped 5 s).
chaos: venv
	$(PY) -m tests.chaos $(CHAOS_ARGS)

# Multi-node drill: two nodes (web + workers each, own var dir and workspace root) on one
# private PostgreSQL and Redis and a SeaweedFS S3 server under var/fleet/; node A is killed
# whole and restarted under load. FLEET_ARGS="--quick" is the short CI variant. docs/fleet.md.
fleet: venv
	$(PY) -m tests.fleet $(FLEET_ARGS)

clean:
	rm -rf $(VENV) var toolchain/node_modules tests/clients/node_modules
