"""The `lake` fixture: every lake test that takes it runs twice, on a local directory and on an S3 API.

The S3 variant points at a fresh bucket of the session's local S3 server (moto) with exactly the storage
options a user puts in V6_LAKE_STORAGE_OPTIONS. Tests that need local-only things (a file where a table
should be, a corrupted _delta_log on disk) keep using `tmp_path`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lake_helpers import Lake
from s3_server import S3Server


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    if request.param == "local":
        root = tmp_path / "lake"
        root.mkdir()
        return Lake("local", str(root), None)
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = s3.new_bucket()
    return Lake("s3", f"s3://{bucket}/lake", s3.storage_options(), s3, bucket)

