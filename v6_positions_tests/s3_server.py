"""A local S3 API server (moto's server mode) for tests: real HTTP, real signatures, real conditional puts.

Started once per test session on a free port, in its own process, and torn down after. Each lake gets its
own bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

REGION = "us-east-1"
ACCESS_KEY_ID = "v6-test-access-key"
SECRET_ACCESS_KEY = "v6-test-secret-key"  # moto accepts any pair; a real user sets their own

_WRITES = frozenset({"PUT", "POST", "DELETE"})


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: object, **kwargs: object) -> None:
        pass  # one line per request would drown the test output


class _SerialWrites:
    """Run S3 writes one at a time, and optionally note every Delta commit (a PUT under `_delta_log/`).

    Real S3 evaluates `If-None-Match: *` atomically with the write. moto checks for the key and then stores
    the object in two steps, so two concurrent conditional PUTs could both pass the check; serialising
    writes gives the server S3's guarantee. Reads stay concurrent.
    """

    def __init__(self, app: Callable[..., Any], commit_log: str | None) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._commit_log = commit_log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method not in _WRITES:
            return self._app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        condition = environ.get("HTTP_IF_NONE_MATCH", "-")
        statuses: list[str] = []

        def noting_start_response(status: str, *args: Any) -> Any:
            statuses.append(status.split()[0])
            return start_response(status, *args)

        with self._lock:
            body = self._app(environ, noting_start_response)
            if self._commit_log and method == "PUT" and "/_delta_log/" in path and path.endswith(".json"):
                with open(self._commit_log, "a", encoding="utf-8") as out:
                    out.write(f"{path} {condition} {statuses[0] if statuses else '?'}\n")
        return body


@dataclass(slots=True)
class S3Server:
    """moto's S3 API on 127.0.0.1:<free port>, in its own process.

    Not a thread of the test process: some deltalake calls hold the GIL while they wait for the server's
    answer, and a server thread that needs the GIL to answer would then hang them.
    """

    commit_log: str | None = None  # a file that gets "<path> <If-None-Match> <status>" per Delta commit PUT
    host: str = "127.0.0.1"
    port: int = 0
    _process: subprocess.Popen[str] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> S3Server:
        args = [sys.executable, __file__, self.host]
        if self.commit_log:
            args.append(f"--commit-log={self.commit_log}")
        # stdin is the lifeline: the server exits when it closes, even if this process is SIGKILLed.
        self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: ready.put(self._process.stdout.readline()), daemon=True)
        reader.start()
        try:
            line = ready.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise TimeoutError(f"the S3 server did not start within {timeout_s}s") from None
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the S3 server failed to start (exit code {self._process.poll()})")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()
        self._process = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def new_bucket(self, prefix: str = "lake") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_options(self, **extra: str) -> dict[str, str]:
        """The deltalake storage options a user sets for this server (V6_LAKE_STORAGE_OPTIONS)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
            **extra,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in `bucket`, sorted."""
        found: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)


def _exit_when_parent_goes() -> None:
    sys.stdin.read()  # returns at EOF: the test session closed the pipe or died
    os._exit(0)


def serve(host: str, commit_log: str | None) -> None:
    """Serve until terminated; the first line on stdout is `port <n>`."""
    app = _SerialWrites(DomainDispatcherApplication(create_backend_app), commit_log)
    server = make_server(host, 0, app, threaded=True, request_handler=_QuietHandler)
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    sys.stdout.write(f"port {server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    flags = sys.argv[2:]
    logs = [flag.split("=", 1)[1] for flag in flags if flag.startswith("--commit-log=")]
    serve(sys.argv[1], logs[0] if logs else None)
