VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint bench clean browser postgres

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The end-to-end test drives Debian's headless Chromium; install it when it is missing (CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The Dagster tests run on PostgreSQL too: a throwaway cluster the test session starts from Debian's server
# binaries (initdb, postgres) on a free port; install them when they are missing (the package's own
# default cluster is not used).
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends postgresql >/dev/null; }

test: lint browser postgres
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) benchmarks/lake_bench.py
	$(PY) benchmarks/simulator_bench.py
	$(PY) benchmarks/stream_bench.py
	$(PY) benchmarks/coexistence_bench.py
	$(PY) benchmarks/rotation_bench.py
	$(PY) benchmarks/dagster_bench.py
	$(PY) benchmarks/day_bench.py
	$(PY) benchmarks/reconcile_bench.py
	$(PY) benchmarks/soak_bench.py
	$(PY) benchmarks/risk_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data

.PHONY: demo run
# The whole system on this machine: simulator + demo legs + Dagster UI on http://127.0.0.1:3000
demo: $(STAMP)
	$(VENV)/bin/v6-positions demo

# The same against a real IB Gateway/TWS: set V6_IB_HOST, V6_IB_PORT, V6_IB_ACCOUNT, ... first.
run: $(STAMP)
	$(VENV)/bin/v6-positions up
