"""Control API: JSON over HTTP on loopback — a Starlette app served by uvicorn in the simulator's own loop.

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

Every answer is a JSON object; a refused request gets {"error": ...} naming the field (400), an unknown
path 404, a wrong method 405.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from v6_positions.simulator.server import GatewaySimulator

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
Body = dict[str, Any]
Action = Callable[["GatewaySimulator", Body], Awaitable[dict[str, Any]]]


class _Json(JSONResponse):
    """json.dumps as the stdlib writes it (NaN allowed): what the control API always answered."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


class ControlServer:
    """`async with ControlServer(sim, port=0) as control: ... control.port ...` in the simulator's loop."""

    def __init__(self, sim: GatewaySimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.app = build_app(sim)
        self._server: uvicorn.Server | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            lifespan="off",
            log_config=None,  # the project's logging stays as configured
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=1,
        )
        config.load()
        server = uvicorn.Server(config)
        # startup()/shutdown() rather than serve(): serve() would take over SIGINT/SIGTERM from our caller
        # (the `simulate` command) and poll for exit every 0.1 s.
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        self._server = server
        self.port = server.servers[0].sockets[0].getsockname()[1]
        log.info("control API on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def build_app(sim: GatewaySimulator) -> Starlette:
    routes = [Route("/stats", _endpoint(sim, _stats, read_body=False), methods=["GET"])]
    routes += [Route(path, _endpoint(sim, action), methods=["POST"]) for path, action in _ACTIONS.items()]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
    )


def _endpoint(sim: GatewaySimulator, action: Action, read_body: bool = True) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        body = await _json_body(request) if read_body else {}
        try:
            return _Json(await action(sim, body))
        except KeyError as exc:
            raise HTTPException(400, f"missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        except Exception as exc:  # answered here: Starlette's last-resort handler would re-raise it
            log.exception("control API request %s %s failed", request.method, request.url.path)
            return _Json({"error": repr(exc)}, status_code=500)

    return endpoint


async def _json_body(request: Request) -> Body:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(400, "body too large")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status, message = exc.status_code, exc.detail
    path = request.url.path.rstrip("/") or "/"
    if status == 405:
        message = "use GET /stats" if path == "/stats" else f"no {request.method} {path}"
    elif status == 404:
        message = f"no {request.method} {path}"
    return _Json({"error": message}, status_code=status)


# ---- actions: (sim, JSON body) -> JSON answer; KeyError / TypeError / ValueError become 400 -------------
async def _stats(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    return sim.stats()


async def _disconnect(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    return {"dropped": await sim.disconnect_all()}


async def _restart(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    down = float(body.get("down_seconds", 5.0))
    await sim.restart(down)
    return {"down_seconds": down}


async def _connectivity(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    code = int(body["code"])
    await sim.connectivity(code)
    return {"code": code}


async def _positions(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    fields = dict(body)
    account, conid, position = fields.pop("account"), int(fields.pop("conid")), fields.pop("position")
    avg_cost = fields.pop("avg_cost", None)
    await sim.set_position(account, conid, float(position), avg_cost, **fields)
    return {"account": account, "conid": conid, "position": float(position)}


async def _reset_stats(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    sim.reset_stats()
    return {"reset": True}


async def _hold_lines(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    lines = _integer(body, "lines")
    await sim.hold_lines(lines)
    return {"external_lines": lines}


async def _client_id_linger(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    seconds = _number(body, "seconds")
    await sim.set_client_id_linger(seconds)
    return {"client_id_linger": seconds}


async def _hold_client_id(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    client_id, seconds = _integer(body, "client_id"), _number(body, "seconds")
    await sim.hold_client_id(client_id, seconds)
    return {"client_id": client_id, "seconds": seconds}


async def _competing_session(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    active = body["active"]
    if not isinstance(active, bool):
        raise ValueError(f"active: expected true or false, got {active!r}")
    await sim.set_competing_session(active)
    return {"competing_session": active}


async def _quirks(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
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


async def _quote_latency(sim: GatewaySimulator, body: Body) -> dict[str, Any]:
    low, high = _number(body, "min"), _number(body, "max")
    await sim.set_quote_latency(low, high)
    return {"quote_latency": [low, high]}


_ACTIONS: dict[str, Action] = {
    "/disconnect": _disconnect,
    "/restart": _restart,
    "/connectivity": _connectivity,
    "/positions": _positions,
    "/reset-stats": _reset_stats,
    "/hold-lines": _hold_lines,
    "/client-id-linger": _client_id_linger,
    "/hold-client-id": _hold_client_id,
    "/competing-session": _competing_session,
    "/quirks": _quirks,
    "/quote-latency": _quote_latency,
}


def _integer(body: Body, name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return value


def _number(body: Body, name: str) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)
