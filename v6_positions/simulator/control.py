"""Control API: JSON over HTTP on loopback, served from the simulator's own event loop (stdlib only).

GET  /stats                                   -> the simulator's stats
POST /disconnect                              -> drop every client connection
POST /restart       {"down_seconds": S}       -> drop all, refuse connections for S seconds
POST /connectivity  {"code": 1100|1101|1102}  -> send the connectivity message to every client
POST /positions     {"account", "conid", "position", "avg_cost"?, contract fields for a new contract}
POST /reset-stats                             -> zero the counters
POST /hold-lines    {"lines": N}              -> N lines held outside the API (TWS, phone); 0 frees them
POST /client-id-linger {"seconds": S}         -> a dead socket keeps its clientId and lines S seconds
POST /hold-client-id {"client_id": N, "seconds": S} -> clientId N in use (326) for S seconds, no socket
POST /competing-session {"active": bool}      -> 10197 to every stream and no ticks, until false
POST /quirks        {"conid", "one_sided"?, "stale_last"?, "data_warning"?, "missing_greeks"?}
POST /quote-latency {"min": S, "max": S}     -> first ticks come uniform [min, max] s after reqMktData
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from v6_positions.simulator.server import GatewaySimulator

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    def __init__(self, sim: GatewaySimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("control API on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, payload = 500, {"error": "internal error"}
        try:
            method, path, body = await asyncio.wait_for(self._read_request(reader), 10.0)
            status, payload = 200, await self.route(method, path, body)
        except HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except Exception as exc:
            log.exception("control API request failed")
            payload = {"error": repr(exc)}
        data = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError):
            writer.write(head + data)
            await writer.drain()
        writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, Any]:
        request_line = (await reader.readline()).decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) != 3:
            raise HttpError(400, f"bad request line {request_line!r}")
        length = 0
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length > MAX_BODY:
            raise HttpError(400, "body too large")
        raw = await reader.readexactly(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return parts[0].upper(), parts[1].split("?", 1)[0].rstrip("/") or "/", body

    async def route(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        sim = self.sim
        if path == "/stats":
            if method != "GET":
                raise HttpError(405, "use GET /stats")
            return sim.stats()
        if method != "POST":
            raise HttpError(405 if path in _POST_PATHS else 404, f"no {method} {path}")
        try:
            if path == "/disconnect":
                return {"dropped": await sim.disconnect_all()}
            if path == "/restart":
                down = float(body.get("down_seconds", 5.0))
                await sim.restart(down)
                return {"down_seconds": down}
            if path == "/connectivity":
                code = int(body["code"])
                await sim.connectivity(code)
                return {"code": code}
            if path == "/positions":
                fields = dict(body)
                account, conid, position = (
                    fields.pop("account"),
                    int(fields.pop("conid")),
                    fields.pop("position"),
                )
                avg_cost = fields.pop("avg_cost", None)
                await sim.set_position(account, conid, float(position), avg_cost, **fields)
                return {"account": account, "conid": conid, "position": float(position)}
            if path == "/reset-stats":
                sim.reset_stats()
                return {"reset": True}
            if path == "/hold-lines":
                lines = _integer(body, "lines")
                await sim.hold_lines(lines)
                return {"external_lines": lines}
            if path == "/client-id-linger":
                seconds = _number(body, "seconds")
                await sim.set_client_id_linger(seconds)
                return {"client_id_linger": seconds}
            if path == "/hold-client-id":
                client_id, seconds = _integer(body, "client_id"), _number(body, "seconds")
                await sim.hold_client_id(client_id, seconds)
                return {"client_id": client_id, "seconds": seconds}
            if path == "/competing-session":
                active = body["active"]
                if not isinstance(active, bool):
                    raise ValueError(f"active: expected true or false, got {active!r}")
                await sim.set_competing_session(active)
                return {"competing_session": active}
            if path == "/quirks":
                fields = dict(body)
                conid = _integer(fields, "conid")
                del fields["conid"]
                quirks = await sim.set_quirks(conid, **fields)
                return {
                    "conid": conid,
                    "one_sided": quirks.one_sided,
                    "stale_last": quirks.stale_last,
                    "data_warning": quirks.data_warning,
                    "missing_greeks": sorted(quirks.missing_greeks),
                }
            if path == "/quote-latency":
                low, high = _number(body, "min"), _number(body, "max")
                await sim.set_quote_latency(low, high)
                return {"quote_latency": [low, high]}
        except KeyError as exc:
            raise HttpError(400, f"missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise HttpError(400, str(exc)) from None
        raise HttpError(404, f"no {method} {path}")


_POST_PATHS = {
    "/disconnect",
    "/restart",
    "/connectivity",
    "/positions",
    "/reset-stats",
    "/hold-lines",
    "/client-id-linger",
    "/hold-client-id",
    "/competing-session",
    "/quirks",
    "/quote-latency",
}


def _integer(body: dict[str, Any], name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return value


def _number(body: dict[str, Any], name: str) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)
