"""The extras (`postgres`, `docker`, `k8s`) install: pip's own resolver, run against a fresh empty venv.

A dry run resolves the whole dependency graph against the package index exactly as `pip install '.[x]'`
would (an unresolvable pin backtracks or fails here), without installing anything. One resolution of all
three extras together proves each of them: any set of versions satisfying the union of their requirements
satisfies each extra's own (three separate runs cost three times as much on a loaded 2-core CI machine).
The resolution starts when the session has collected (conftest.py) and runs alongside the other tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = {
    "postgres": {"dagster-postgres": "0.29.27", "psycopg2-binary": None},
    "docker": {"dagster-docker": "0.29.27", "docker": None},
    "k8s": {"dagster-k8s": "0.29.27", "kubernetes": None},
}
DAGSTER = "1.13.27"
RESOLVE_TIMEOUT_S = 240


@pytest.mark.timeout(RESOLVE_TIMEOUT_S + 60)
def test_every_extra_resolves_in_a_fresh_venv(extras_resolution) -> None:
    try:
        returncode, errors, packages = extras_resolution.wait(RESOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip could not resolve the extras within {RESOLVE_TIMEOUT_S}s (backtracking?)")
    assert returncode == 0, f"the extras do not resolve:\n{errors}"

    assert packages["dagster"] == DAGSTER and packages["dagster-webserver"] == DAGSTER
    for extra, wanted in EXTRAS.items():
        for name, version in wanted.items():
            assert name in packages, f"'.[{extra}]' does not install {name}"
            assert version is None or packages[name] == version, f"'.[{extra}]': {name} {packages[name]}"

    # SQLAlchemy >= 2.1 maps `postgresql://` to psycopg 3, which the postgres extra does not bring:
    # the shipped instance config must name the psycopg2 driver then.
    sqlalchemy = tuple(int(part) for part in packages["sqlalchemy"].split(".")[:2])
    production = yaml.safe_load((ROOT / "deploy" / "production" / "dagster.yaml").read_text())
    if sqlalchemy >= (2, 1) and "psycopg" not in packages:
        assert production["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
