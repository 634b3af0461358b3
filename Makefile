VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) benchmarks/lake_bench.py
	$(PY) benchmarks/simulator_bench.py
	$(PY) benchmarks/stream_bench.py
	$(PY) benchmarks/dagster_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data
