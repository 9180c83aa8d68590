"""HTTP endpoints of the reference control plane: health, status page, admin API.

The admin API (``docs/controlplane.md``) speaks JSON and wants
``Authorization: Bearer <admin token>``.  Errors are ``{"error": "..."}``
with ``"field"`` naming the offending field where there is one.  Env values
are accepted, stored and sent to the node; they never come back out of the
API, into a log line or into an error message.

The handlers see the control plane through :class:`AdminHost`: its fleet,
its admin tokens and its commit.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec

from vectorlay.adapters.controlplane import statuspage
from vectorlay.adapters.controlplane.http import (
    Request,
    Response,
    bearer,
    error_response,
    json_response,
    token_matches,
)
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.records import (
    HOLDS_GPUS,
    NodeRecord,
    ReplicaPhase,
    ReplicaRecord,
    Send,
)
from vectorlay.domain.messages import DeployPayload
from vectorlay.domain.messages import rfc3339 as wire_time
from vectorlay.domain.validation import (
    check_env_vars,
    check_gpu_count,
    check_image,
    check_replica_id,
)
from vectorlay.errors import (
    NoCapacity,
    NodeBusy,
    ReplicaExists,
    UnknownNode,
    UnknownReplica,
    ValidationError,
)

log = logging.getLogger("vectorlay.controlplane")

PAGE_REFRESH_SECONDS: Final = statuspage.PAGE_REFRESH_SECONDS
DEPLOY_FIELDS: Final = frozenset({"image", "gpu_count", "env_vars", "replica_id"})
_AUTH_CHALLENGE: Final = (("www-authenticate", 'Bearer realm="vectorlay"'),)


class AdminHost(Protocol):
    """What the HTTP endpoints use of the control plane."""

    @property
    def fleet(self) -> Fleet: ...

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        """Any of them opens the admin API; none: the admin API is disabled."""
        ...

    async def commit(self, sends: Sequence[Send]) -> None:
        """Persist what the fleet changed, then deliver ``sends``."""
        ...

    def revoke_sessions(self, node_id: str) -> int:
        """Close the node's open sessions with 4401; returns how many."""
        ...

    @property
    def changed_at(self) -> Mapping[str, datetime]:
        """Replica id -> when this process last saw it change (for the status page)."""
        ...

    def now(self) -> datetime:
        """The wall clock (UTC)."""
        ...


Route = Callable[[AdminHost, Request, list[str]], Awaitable[Response]]


# --- views ---------------------------------------------------------------------------


def rfc3339(stamp: datetime | None) -> str | None:
    return None if stamp is None else wire_time(stamp)


def node_view(cp: AdminHost, node: NodeRecord) -> dict[str, Any]:
    fleet = cp.fleet
    return {
        "node_id": node.node_id,
        "status": node.status.value,
        "hold": node.state.hold.value if node.state.hold is not None else None,
        "hostname": node.hostname,
        "agent_version": node.agent_version,
        "ready": node.ready,
        "gpus": msgspec.to_builtins(node.gpus),
        "gpus_free": fleet.gpus_free(node.node_id),
        "dependencies": msgspec.to_builtins(node.dependencies),
        "last_seen": rfc3339(node.last_seen),
        "replicas": live_replica_ids(cp, node.node_id),
    }


def live_replica_ids(cp: AdminHost, node_id: str) -> list[str]:
    """The node's replicas not ended yet (``pending``, ``running``, ``stopping``)."""
    return [r.replica_id for r in cp.fleet.replicas_on(node_id) if r.status in HOLDS_GPUS]


def replica_view(replica: ReplicaRecord) -> dict[str, Any]:
    view: dict[str, Any] = {
        "replica_id": replica.replica_id,
        "node_id": replica.node_id,
        "image": replica.image,
        "gpu_count": replica.gpu_count,
        "status": replica.status.value,
        # The PCI addresses the replica holds, as its node names them: null
        # until known and once it holds none ([] for one running without GPUs).
        "gpus": (
            list(replica.gpus) if replica.gpus or replica.status is ReplicaPhase.RUNNING else None
        ),
        "exit_code": replica.exit_code,
        "error": replica.error,
    }
    return view


# --- dispatch ----------------------------------------------------------------------------


async def handle(cp: AdminHost, request: Request) -> Response:
    parts = request.segments()
    if request.path == "/healthz":
        return _only(request, "GET") or json_response(200, {"status": "ok"})
    if request.path == "/":
        return _only(request, "GET") or status_page(cp)
    if request.path == "/v1/agent":
        return error_response(
            426, "this endpoint is the agent WebSocket", headers=(("upgrade", "websocket"),)
        )
    if parts[:1] != ["v1"]:
        return error_response(404, f"no such endpoint: {request.path[:100]}")
    denied = _authorize(cp, request)
    if denied is not None:
        return denied
    route, allowed = _route(request.method, parts[1:])
    if route is None:
        if allowed:
            return error_response(
                405, "method not allowed", headers=(("allow", ", ".join(allowed)),)
            )
        return error_response(404, f"no such endpoint: {request.path[:100]}")
    return await route(cp, request, parts[1:])


def _only(request: Request, method: str) -> Response | None:
    if request.method == method or (method == "GET" and request.method == "HEAD"):
        return None
    allowed = "GET, HEAD" if method == "GET" else method
    return error_response(405, "method not allowed", headers=(("allow", allowed),))


def _authorize(cp: AdminHost, request: Request) -> Response | None:
    admin = cp.admin_tokens
    if not admin:
        # 401 like a wrong token (no token can be valid), saying what to configure.
        return error_response(
            401,
            "admin API disabled: start the control plane with --admin-token-file "
            "or VECTORLAY_CP_ADMIN_TOKEN",
            headers=_AUTH_CHALLENGE,
        )
    given = bearer(request.header("authorization"))
    if given is None or not token_matches(given, admin):
        return error_response(401, "missing or wrong admin token", headers=_AUTH_CHALLENGE)
    return None


_NODE_ACTIONS: Final = ("drain", "maintenance", "resume")


def _route(method: str, parts: list[str]) -> tuple[Route | None, list[str]]:
    """The handler for ``method`` on ``/v1/<parts>``, or the methods the path allows."""
    table: dict[str, Route] = {}
    if parts == ["nodes"]:
        table = {"GET": _list_nodes}
    elif len(parts) == 2 and parts[0] == "nodes":
        table = {"GET": _get_node, "DELETE": _remove_node}
    elif len(parts) == 3 and parts[0] == "nodes" and parts[2] in _NODE_ACTIONS:
        table = {"POST": _node_action}
    elif parts == ["replicas"]:
        table = {"GET": _list_replicas, "POST": _deploy}
    elif len(parts) == 2 and parts[0] == "replicas":
        table = {"GET": _get_replica, "DELETE": _stop}
    if "GET" in table:
        # HEAD is GET without the body (the HTTP layer leaves the body out).
        table["HEAD"] = table["GET"]
    return table.get(method), sorted(table)


# --- nodes ---------------------------------------------------------------------------------


async def _list_nodes(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    return json_response(200, [node_view(cp, n) for n in cp.fleet.nodes()])


async def _get_node(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    node = cp.fleet.node(parts[1])
    if node is None:
        return error_response(404, f"node {parts[1][:80]!r} not found")
    return json_response(200, node_view(cp, node))


async def _node_action(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    node_id, action = parts[1], parts[2]
    fleet = cp.fleet
    do: dict[str, Callable[[str], tuple[NodeRecord, list[Send]]]] = {
        "drain": fleet.drain,
        "maintenance": fleet.maintenance,
        "resume": fleet.resume,
    }
    # Every status has a row for every operator event (tests/unit/test_node.py),
    # so an action on a known node always succeeds; a repeat is a no-op.
    try:
        node, sends = do[action](node_id)
    except UnknownNode:
        return error_response(404, f"node {node_id[:80]!r} not found")
    await cp.commit(sends)
    log.info("operator %s", action, extra={"node_id": node_id, "status": node.status.value})
    return json_response(200, node_view(cp, node))


async def _remove_node(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    node_id = parts[1]
    try:
        cp.fleet.remove_node(node_id)
    except UnknownNode:
        return error_response(404, f"node {node_id[:80]!r} not found")
    except NodeBusy as exc:
        return error_response(409, str(exc))
    # Persist first: the token is revoked once its digest is gone from the store.
    await cp.commit([])
    closed = cp.revoke_sessions(node_id)
    log.info(
        "operator removed node; its token is revoked",
        extra={"node_id": node_id, "sessions_closed": closed},
    )
    return Response(204, b"", "application/json")


# --- replicas ----------------------------------------------------------------------------------


async def _list_replicas(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    return json_response(200, [replica_view(r) for r in cp.fleet.replicas()])


async def _get_replica(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    replica = cp.fleet.replica(parts[1])
    if replica is None:
        return error_response(404, f"replica {parts[1][:80]!r} not found")
    return json_response(200, replica_view(replica))


def parse_deploy(body: bytes) -> DeployPayload | Response:
    """A validated deploy request, or the 400/422 answer naming what is wrong."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return error_response(400, "body: not valid JSON")
    except RecursionError:
        return error_response(400, "body: JSON nested too deeply")
    if not isinstance(data, dict):
        return error_response(422, "body: expected a JSON object", field="body")
    unknown = sorted(str(k) for k in data if k not in DEPLOY_FIELDS)
    if unknown:
        return error_response(
            422,
            f"{unknown[0][:64]}: unknown field (expected {', '.join(sorted(DEPLOY_FIELDS))})",
            field=unknown[0][:64],
        )
    try:
        if "image" not in data:
            raise ValidationError("image", "missing required field")
        image = check_image(data["image"])
        gpu_count = check_gpu_count(data.get("gpu_count", 0))
        env_vars = check_env_vars(data.get("env_vars", {}))
        replica_id = data.get("replica_id")
        if replica_id is None:
            replica_id = f"r-{secrets.token_hex(6)}"
        replica_id = check_replica_id(replica_id)
    except ValidationError as exc:
        return error_response(422, str(exc), field=exc.field)
    return DeployPayload(replica_id=replica_id, image=image, gpu_count=gpu_count, env_vars=env_vars)


async def _deploy(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    payload = parse_deploy(request.body)
    if isinstance(payload, Response):
        return payload
    try:
        replica, sends = cp.fleet.deploy(payload)
    except ReplicaExists as exc:
        return error_response(409, str(exc), field="replica_id")
    except NoCapacity as exc:
        # Only a want of GPUs is the field's fault; no node at all is not.
        field = "gpu_count" if str(exc).startswith("gpu_count") else None
        return json_response(
            409, {"error": str(exc), "reason": exc.reason, **({"field": field} if field else {})}
        )
    await cp.commit(sends)
    log.info(
        "replica deployed",
        extra={
            "replica_id": replica.replica_id,
            "node_id": replica.node_id,
            "image": replica.image,
            "gpu_count": replica.gpu_count,
            "env_names": ",".join(sorted(replica.env_vars)),
        },
    )
    return json_response(
        201,
        {
            "replica_id": replica.replica_id,
            "node_id": replica.node_id,
            "status": replica.status.value,
        },
    )


async def _stop(cp: AdminHost, request: Request, parts: list[str]) -> Response:
    try:
        replica, sends = cp.fleet.stop(parts[1])
    except UnknownReplica:
        return error_response(404, f"replica {parts[1][:80]!r} not found")
    await cp.commit(sends)
    log.info(
        "replica stop requested",
        extra={"replica_id": replica.replica_id, "node_id": replica.node_id},
    )
    return json_response(202, replica_view(replica))


# --- status page -------------------------------------------------------------------------------


def status_page(cp: AdminHost) -> Response:
    body = statuspage.render(cp.fleet, cp.changed_at, cp.now())
    return Response(200, body.encode("utf-8"), "text/html; charset=utf-8")
