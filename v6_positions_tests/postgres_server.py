"""A throwaway PostgreSQL server for tests and benchmarks: its own cluster in a temp dir, a free local port.

Uses the server binaries of Debian's `postgresql` package (`make test` installs it when missing). PostgreSQL
refuses to run as root, and CI runs as root: then every server process runs as the `postgres` system user
(or `nobody`), which owns the temp dir. The cluster trades durability for speed (fsync off): it lives for
one pytest session or one benchmark and is deleted after.

Each Dagster instance gets a fresh database copied from a template that already holds Dagster's schema, so
an isolated instance costs one `CREATE DATABASE ... TEMPLATE` instead of a schema migration.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

log = logging.getLogger(__name__)

SUPERUSER = "v6test"
# Any password works under trust authentication; Dagster's config wants one.
PASSWORD = "v6test"
TEMPLATE_DB = "dagster_template"
_START_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3
# Settings of a cluster nobody needs after the process ends: no durability, no background noise.
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "autovacuum": "off",
    "logging_collector": "off",
}


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed or the server would not start."""


def find_bin_dir() -> Path:
    """Directory holding `initdb` and `postgres`: $PATH first, then Debian's versioned directories."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0])
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql/*/bin; "
        "`make test` installs Debian's `postgresql` package, or run `apt-get install postgresql`"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(slots=True)
class _RunAs:
    """The unprivileged account server processes run as when we are root (None: run as ourselves)."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_user(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(entry.pw_uid, entry.pw_gid)
        raise PostgresUnavailable("running as root and neither a `postgres` nor a `nobody` user exists")

    def popen_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass(slots=True)
class PostgresServer:
    """A running cluster; `create_database()` hands out fresh databases. Use `start_postgres()` to get one."""

    port: int
    root: Path
    process: subprocess.Popen
    run_as: _RunAs
    databases: list[str] = field(default_factory=list)

    def connect(self, db_name: str = "postgres") -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=PASSWORD, dbname=db_name
        )
        conn.autocommit = True
        return conn

    def postgres_db(self, db_name: str) -> dict[str, object]:
        """The `postgres_db` block of a dagster.yaml pointing at `db_name`."""
        return {
            "hostname": "127.0.0.1",
            "port": self.port,
            "username": SUPERUSER,
            "password": PASSWORD,
            "db_name": db_name,
            # SQLAlchemy 2.1 maps plain `postgresql` to psycopg 3, which dagster-postgres does not install.
            "scheme": "postgresql+psycopg2",
        }

    def create_database(self, template: str | None = TEMPLATE_DB) -> str:
        """A new empty database (with Dagster's schema when copied from the template); returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                # FILE_COPY clones the template's files directly: cheaper than WAL-logging a small schema.
                suffix = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
                cur.execute(f"CREATE DATABASE {name}{suffix}")
        finally:
            conn.close()
        self.databases.append(name)
        return name

    def dagster_storage(self, db_name: str | None = None) -> dict[str, object]:
        """The `storage:` block of a dagster.yaml on a fresh database (or `db_name`)."""
        return {"postgres": {"postgres_db": self.postgres_db(db_name or self.create_database())}}


def _run(cmd: list[str], run_as: _RunAs, what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, **run_as.popen_kwargs())
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _wait_ready(server: PostgresServer, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise PostgresUnavailable(
                f"postgres exited with {server.process.returncode}: {log_path.read_text()[-2000:]}"
            )
        try:
            server.connect().close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"postgres did not accept connections on port {server.port} within {_START_TIMEOUT_S}s: "
                    f"{log_path.read_text()[-2000:]}"
                ) from None
            time.sleep(0.05)


def _create_dagster_template(server: PostgresServer) -> None:
    """Dagster's tables, created once by a real Dagster instance, in a database later copied per test."""
    from dagster import instance_for_test

    server.create_database(template=None)
    name = server.databases.pop()
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"ALTER DATABASE {name} RENAME TO {TEMPLATE_DB}")
    finally:
        conn.close()
    with tempfile.TemporaryDirectory() as home:
        overrides = {"storage": server.dagster_storage(TEMPLATE_DB)}
        with instance_for_test(overrides, set_dagster_home=False, temp_dir=home) as instance:
            instance.get_runs(limit=1)  # touches every storage, creating its tables
    # A database is only copied while nobody is connected to it: SQLAlchemy's pool may linger briefly.
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (TEMPLATE_DB,)
            )
    finally:
        conn.close()


@contextmanager
def start_postgres(settings: Mapping[str, str] | None = None) -> Iterator[PostgresServer]:
    """Initialises a cluster in a temp dir, starts it on a free port, yields it, stops it and deletes it."""
    bin_dir = find_bin_dir()
    run_as = _RunAs.for_current_user()
    root = Path(tempfile.mkdtemp(prefix="v6-postgres-"))
    process: subprocess.Popen | None = None
    try:
        data = root / "data"
        socket_dir = root / "socket"
        socket_dir.mkdir()
        if run_as.uid is not None:
            for path in (root, socket_dir):
                os.chown(path, run_as.uid, run_as.gid)
        os.chmod(root, 0o700)
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            run_as,
            "initdb",
        )  # fmt: skip
        # If this process dies without tearing down (SIGKILL, a CI timeout), setpriv stops the server too.
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig", "INT", "--"] if setpriv else []
        base = [*prefix, str(bin_dir / "postgres"), "-D", str(data)]
        log_path = root / "server.log"
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = free_port()
            options = {**_SERVER_SETTINGS, "port": str(port), "unix_socket_directories": str(socket_dir)}
            options.update(settings or {})
            cmd = base + [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]
            with open(log_path, "wb") as log_file:
                process = subprocess.Popen(
                    cmd,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **run_as.popen_kwargs(),
                )
            server = PostgresServer(port=port, root=root, process=process, run_as=run_as)
            try:
                _wait_ready(server, log_path)
                break
            except PostgresUnavailable:
                # Another process may have taken the free port between the probe and the bind: try another.
                if attempt == _START_ATTEMPTS or "could not bind" not in log_path.read_text():
                    raise
        _create_dagster_template(server)
        log.info("postgres %s on 127.0.0.1:%s (data in %s)", bin_dir.parent.name, port, root)
        yield server
    finally:
        if process is not None and process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients instead of waiting for them.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
