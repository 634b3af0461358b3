"""The extras' pip resolution starts as soon as the session has collected its tests, so its wait on the
package index overlaps the rest of the suite; its test only reads the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("postgres", "docker", "k8s")
INSTALL_TEST = "test_every_extra_resolves_in_a_fresh_venv"


@dataclass(slots=True)
class ExtrasResolution:
    """`pip install --dry-run '.[postgres,docker,k8s]'` into a fresh empty venv, running in the background."""

    workdir: tempfile.TemporaryDirectory
    process: subprocess.Popen

    @classmethod
    def start(cls) -> ExtrasResolution:
        workdir = tempfile.TemporaryDirectory(prefix="v6-extras-")
        fresh = Path(workdir.name) / "fresh-venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
        cmd = [sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "--dry-run",
               "--quiet", "--report", str(Path(workdir.name) / "report.json"),
               f"{ROOT}[{','.join(EXTRAS)}]"]  # fmt: skip
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return cls(workdir, process)

    def wait(self, timeout_s: float) -> tuple[int, str, dict[str, str]]:
        """(pip's exit code, its errors, resolved package name -> version); raises TimeoutExpired."""
        _, stderr = self.process.communicate(timeout=timeout_s)
        errors = "\n".join(line for line in stderr.splitlines() if "is ignored" not in line)
        report_path = Path(self.workdir.name) / "report.json"
        if self.process.returncode != 0 or not report_path.exists():
            return self.process.returncode, errors, {}
        report = json.loads(report_path.read_text())
        installs = report["install"]
        packages = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}
        return self.process.returncode, errors, packages

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.workdir.cleanup()


_started = pytest.StashKey[ExtrasResolution]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(getattr(item, "originalname", item.name) == INSTALL_TEST for item in session.items):
        session.stash[_started] = ExtrasResolution.start()


@pytest.fixture(scope="session")
def extras_resolution(request: pytest.FixtureRequest) -> Iterator[ExtrasResolution]:
    resolution = request.session.stash.get(_started, None) or ExtrasResolution.start()
    try:
        yield resolution
    finally:
        resolution.close()
