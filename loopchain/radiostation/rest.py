"""The RadioStation REST API (aiohttp, port + PORT_DIFF_REST_SERVICE_CONTAINER)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import hdrs, web

from loopchain.configure import RefusalLog, describe, shown
from loopchain.http_site import (
    BodyTimeout,
    ClientLeft,
    MalformedBody,
    answer_sender,
    client_left,
    close_if_body_unread,
    read_within,
)
from loopchain.radiostation import channel_admin
from loopchain.radiostation.bodies import BadBody, parse_object
from loopchain.radiostation.certs import (
    PEER_CERT_VALID_DAYS,
    BadCertRequest,
    CertificateService,
    CertStoreError,
    NoCA,
    create_certificate_service,
)
from loopchain.radiostation.channels import channel_to_json
from loopchain.radiostation.operator import MissingCredential, OperatorToken, WrongCredential
from loopchain.radiostation.peer_status import PeerStatusError, fetch_status
from loopchain.radiostation.registry import PeerRecord, PeerView, UnknownPeer
from loopchain.radiostation.station import SettingRefused, Station, UnknownChannel
from loopchain.types.codes import HTTP_STATUS, ResponseCode, error_body

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)  # operator-only writes refused to callers without the token

STATION = web.AppKey("station", Station)
CERTS = web.AppKey("certs", CertificateService)
TOKEN = web.AppKey("operator_token", OperatorToken)
MAX_CONCURRENT_STATUS_QUERIES = 16  # calls to members' status the station makes at once
MAX_STATUS_REQUESTS = 8  # status requests being answered at once; more are answered 503
RETRY_AFTER_SECONDS = "1"
BEARER_CHALLENGE = 'Bearer realm="loopchain RadioStation"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# GET /api/v1/cert/list/peer reads and parses every certificate issued (~75 µs each, 10,000 at
# most): anyone may ask, and built on the event loop for each request a few clients in a loop held
# up heartbeats and registrations for seconds (a review measured GetPeerList at 2 s with four).
# The listing is built in a thread, once for all who ask meanwhile, and its encoded copy served
# until a certificate is issued here, the revocation list or the set of peers' folders changes, or
# it is older than the larger of LISTING_MAX_AGE_S and LISTING_COST_FACTOR times its build (other
# tools, such as certificate_util, may issue meanwhile into a folder that exists)
LISTING_MAX_AGE_S = 1.0
LISTING_COST_FACTOR = 10


class PeerCertListing:
    """The encoded answer of GET /api/v1/cert/list/peer (see LISTING_MAX_AGE_S)."""

    def __init__(self, certs: CertificateService) -> None:
        self._certs = certs
        self._body: bytes | None = None
        self._built_for: object = None  # what the files said when the copy was built
        self._until = 0.0  # loop time until which the copy serves
        self._building: asyncio.Future[bytes] | None = None
        self.builds = 0  # for tests and diagnosis

    def invalidate(self) -> None:
        """A certificate was issued here: the next request builds the listing again."""
        self._body = None

    async def body(self) -> bytes:
        loop = asyncio.get_running_loop()
        state = self._certs.listing_state()
        if self._body is not None and state == self._built_for and loop.time() < self._until:
            return self._body
        if self._building is None:
            self._building = asyncio.ensure_future(self._build(state))
            # its failure is its callers' (raised to each); retrieved here when all have left
            self._building.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(self._building)  # a caller that leaves cancels no build

    async def _build(self, state: object) -> bytes:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            data = await asyncio.to_thread(self._certs.list_peers)
            body = json.dumps({"response_code": 0, "data": data}).encode()
        finally:
            self._building = None
        cost = loop.time() - started
        self._body, self._built_for = body, state
        self._until = loop.time() + max(LISTING_MAX_AGE_S, LISTING_COST_FACTOR * cost)
        self.builds += 1
        return body


PEER_CERTS = web.AppKey("peer_certs", PeerCertListing)


class StatusQueries:
    """The live status asks of members, station-wide. Each request had a bound of its own on the
    calls it made, so requests in parallel (anyone may send them, up to the connections the REST
    port holds) had the station open a connection to every member for each, up to GRPC_TIMEOUT
    each: tens of thousands to members that hang. Now at most MAX_CONCURRENT_STATUS_QUERIES
    calls are out at once, for at most MAX_STATUS_REQUESTS requests; past those, 503."""

    def __init__(self) -> None:
        self.calls = asyncio.Semaphore(MAX_CONCURRENT_STATUS_QUERIES)
        self.requests = 0

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        if self.requests >= MAX_STATUS_REQUESTS:
            raise ApiError(
                ResponseCode.FAIL,
                f"{self.requests} status requests are being answered, as many as this "
                "RadioStation answers at once; ask again shortly",
                503,
            )
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1


STATUS = web.AppKey("status_queries", StatusQueries)


class ApiError(Exception):
    """An error answered as {"response_code", "message"} with the code's HTTP status."""

    def __init__(self, code: ResponseCode, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status  # None: the code's own


def error_response(code: ResponseCode, message: str, status: int | None = None) -> web.Response:
    """A JSON error response; a 503 (no leader now, a store that cannot be written) says when to
    ask again (Retry-After), as every 503 of the project's APIs does."""
    response = web.json_response(error_body(code, message), status=status or HTTP_STATUS[code])
    if response.status == 503:
        response.headers[hdrs.RETRY_AFTER] = RETRY_AFTER_SECONDS
    return response


def _busy(request: web.Request, message: str) -> web.Response:
    """A 503 saying when to try again."""
    response = error_response(ResponseCode.FAIL, message, 503)
    response.headers[hdrs.RETRY_AFTER] = "1"
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 413:
        limit = request.app[STATION].config.REST_MAX_BODY_BYTES
        message = f"request body is larger than {limit} bytes"
        return error_response(ResponseCode.INVALID_PARAMS, message, 413)
    if exc.status == 404:
        message = f"no such API: {request.method} {shown(request.path)}"
        return error_response(ResponseCode.UNKNOWN_MESSAGE, message, 404)
    if exc.status == 405:
        message = f"method {request.method} is not allowed on {shown(request.path)}"
        return error_response(ResponseCode.UNKNOWN_MESSAGE, message, 405)
    code = ResponseCode.INVALID_PARAMS if exc.status < 500 else ResponseCode.FAIL
    return error_response(code, exc.reason, exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn every failure into a JSON body with a negative response_code; an answer to a request
    whose body was not read to its end closes the connection."""
    return close_if_body_unread(request, await _answer(request, handler))


async def _answer(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.code, exc.message, exc.status)
        if exc.status == 408:  # the rest of that body is not waited for
            response.force_close()
        return response
    except web.HTTPException as exc:
        return _http_error(request, exc)
    except ClientLeft as exc:
        return client_left(request, error_response(ResponseCode.FAIL, str(exc), 400))
    except Exception:
        log.exception("REST %s %s failed", request.method, request.path)
        return error_response(ResponseCode.FAIL, "internal error; see the RadioStation log", 500)


def operator_only(handler: Handler) -> Handler:
    """Serve `handler` to the operator only (`Authorization: Bearer <token>`): 401 without the
    header, 403 with a wrong token; the body is not read before the caller is known."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        try:
            request.app[TOKEN].check(request.headers.get(hdrs.AUTHORIZATION))
        except MissingCredential as exc:
            _log_refusal(request, "no operator token")
            _station(request).metrics.admin_refused.labels("no_token").inc()
            response = error_response(ResponseCode.FAIL, str(exc), 401)
            response.headers[hdrs.WWW_AUTHENTICATE] = BEARER_CHALLENGE
            return response
        except WrongCredential as exc:
            _log_refusal(request, "a wrong operator token")
            _station(request).metrics.admin_refused.labels("wrong_token").inc()
            return error_response(ResponseCode.FAIL, str(exc), 403)
        return await handler(request)

    return checked


def _log_refusal(request: web.Request, what: str) -> None:
    REFUSALS.refused(
        "REST %s %s refused: %s (from %s)", request.method, request.path, what, request.remote
    )


# -- helpers


def _station(request: web.Request) -> Station:
    return request.app[STATION]


def _channel(request: web.Request) -> str:
    try:
        return _station(request).resolve_channel(request.query.get("channel"))
    except UnknownChannel as exc:
        raise ApiError(ResponseCode.NOT_FOUND, str(exc)) from None


def _peer_json(view: PeerView, leader_id: str | None) -> dict[str, Any]:
    record = view.record
    return {
        "order": record.order,
        "peer_id": record.peer_id,
        "group_id": record.group_id,
        "target": record.target,
        "cert": "",
        "status_update_time": view.status_update_time,
        "status": view.status,
        "peer_type": 1 if record.peer_id == leader_id else 0,
    }


def _ok(data: Any) -> web.Response:
    return web.json_response({"response_code": 0, "data": data})


async def _read_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, its body read within REST_BODY_TIMEOUT (408 after)."""
    try:
        raw = await read_within(request, float(_station(request).config.REST_BODY_TIMEOUT))
    except BodyTimeout as exc:
        raise ApiError(ResponseCode.TIMEOUT, str(exc), 408) from None
    except MalformedBody as exc:
        raise ApiError(ResponseCode.INVALID_PARAMS, str(exc)) from None
    try:
        return parse_object(raw)
    except BadBody as exc:
        raise ApiError(ResponseCode.INVALID_PARAMS, str(exc)) from None


# -- peers


async def peer_list(request: web.Request) -> web.Response:
    """GET /api/v1/peer/list: registered and connected members of a channel."""
    station, channel = _station(request), _channel(request)
    leader = station.leader(channel)
    leader_id = leader.record.peer_id if leader else None
    registered = [_peer_json(v, leader_id) for v in station.view(channel)]
    connected = [p for p in registered if p["status"] == 1]
    return _ok(
        {
            "registered_peer_count": len(registered),
            "connected_peer_count": len(connected),
            "registered_peer_list": registered,
            "connected_peer_list": connected,
        }
    )


async def peer_leader(request: web.Request) -> web.Response:
    """GET /api/v1/peer/leader: the channel's current leader."""
    station, channel = _station(request), _channel(request)
    leader = station.leader(channel)
    if leader is None:
        raise ApiError(ResponseCode.NO_LEADER, f"channel {channel} has no leader now")
    return _ok(_peer_json(leader, leader.record.peer_id))


def _peer_id_arg(request: web.Request) -> str:
    peer_id = request.query.get("peer_id", "")
    if not peer_id:
        raise ApiError(ResponseCode.INVALID_PARAMS, "missing query argument peer_id")
    return peer_id


def _member(request: web.Request, channel: str) -> PeerRecord:
    peer_id = _peer_id_arg(request)
    registry = _station(request).registry
    try:
        record = registry.peer(peer_id)
    except UnknownPeer as exc:
        raise ApiError(ResponseCode.PEER_UNKNOWN, str(exc)) from None
    group_id = request.query.get("group_id", "")
    if group_id and group_id != record.group_id:
        message = (
            f"peer {peer_id} is registered with group_id {record.group_id!r}, not {shown(group_id)}"
        )
        raise ApiError(ResponseCode.PEER_UNKNOWN, message)
    if channel not in registry.channels_of(peer_id):
        raise ApiError(ResponseCode.PEER_UNKNOWN, f"peer {peer_id} is not in channel {channel}")
    return record


async def peer_status(request: web.Request) -> web.Response:
    """GET /api/v1/peer/status: one peer's live status, asked over gRPC."""
    channel = _channel(request)
    record = _member(request, channel)
    station, queries = _station(request), request.app[STATUS]
    with queries.request():
        async with queries.calls:
            try:
                status = await fetch_status(record, channel, station.config, station.tls)
            except PeerStatusError as exc:
                raise ApiError(exc.code, exc.message) from None
    return web.json_response(status)


async def _status_or_error(
    record: PeerRecord, channel: str, request: web.Request
) -> dict[str, Any]:
    async with request.app[STATUS].calls:
        try:
            return await fetch_status(
                record, channel, _station(request).config, _station(request).tls
            )
        except PeerStatusError as exc:
            return error_body(exc.code, exc.message)


async def peer_status_list(request: web.Request) -> web.Response:
    """GET /api/v1/peer/status-list: the live status (or the error) of every member, by peer id,
    and in loopchain's shape beside: `registered_peer_count`, `connected_peer_count` (by their
    heartbeats, as /peer/list counts them) and `peer_status_list`, each status with the peer's
    `order` and `peer_id`."""
    station, channel = _station(request), _channel(request)
    records = station.registry.members(channel)
    with request.app[STATUS].request():
        results = await asyncio.gather(*(_status_or_error(r, channel, request) for r in records))
    by_id: dict[str, Any] = {r.peer_id: result for r, result in zip(records, results, strict=True)}
    connected = sum(1 for view in station.view(channel) if _peer_json(view, None)["status"] == 1)
    listed = [
        {**result, "order": r.order, "peer_id": r.peer_id}
        for r, result in zip(records, results, strict=True)
    ]
    return _ok(
        {
            **by_id,
            "registered_peer_count": len(records),
            "connected_peer_count": connected,
            "peer_status_list": listed,
        }
    )


# -- configuration


async def conf_get(request: web.Request) -> web.Response:
    """GET /api/v1/conf[?name=K]: the effective configuration."""
    config = _station(request).config
    name = request.query.get("name")
    if name is not None and name not in config:
        raise ApiError(ResponseCode.INVALID_PARAMS, f"unknown configuration key {shown(name)}")
    return _ok(describe(config, name))


@operator_only
async def conf_post(request: web.Request) -> web.Response:
    """POST /api/v1/conf {"name": K, "value": V} (operator): set one configuration key, checked
    like every configuration layer; keys read once at start are refused (Station.set_config)."""
    body = await _read_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(ResponseCode.INVALID_PARAMS, "name: must be a configuration key (a string)")
    if "value" not in body:
        raise ApiError(ResponseCode.INVALID_PARAMS, f"value: missing (what to set {name} to)")
    try:
        config = _station(request).set_config(name, body["value"])
    except SettingRefused as exc:
        raise ApiError(ResponseCode.INVALID_PARAMS, f"{exc.field}: {exc}") from None
    log.info(
        "configuration %s set to %.80r by the operator (from %s)",
        name,
        config[name],
        request.remote,
    )
    message = f"{name} set until this RadioStation stops (to keep it, set it in its files)"
    return web.json_response(
        {"response_code": 0, "message": message, "data": describe(config, name)}
    )


# -- certificates


def _cert_error(exc: CertStoreError) -> ApiError:
    if isinstance(exc, BadCertRequest):
        return ApiError(ResponseCode.INVALID_PARAMS, str(exc))
    if isinstance(exc, NoCA):
        return ApiError(ResponseCode.NOT_FOUND, str(exc))
    return ApiError(ResponseCode.FAIL, str(exc))


async def cert_list_ca(request: web.Request) -> web.Response:
    """GET /api/v1/cert/list/ca: the CA certificate; 404 while there is none (never creates it)."""
    try:
        return _ok(request.app[CERTS].list_ca())
    except CertStoreError as exc:
        raise _cert_error(exc) from None


async def cert_list_peer(request: web.Request) -> web.Response:
    """GET /api/v1/cert/list/peer: every peer certificate issued (see PeerCertListing)."""
    try:
        body = await request.app[PEER_CERTS].body()
    except CertStoreError as exc:
        raise _cert_error(exc) from None
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def cert_get_ca(request: web.Request) -> web.Response:
    """GET /api/v1/cert/issue/ca: the existing CA; 404 saying how to create it while there is none."""
    return await cert_list_ca(request)


@operator_only
async def cert_issue_ca(request: web.Request) -> web.Response:
    """POST /api/v1/cert/issue/ca (operator, no body): the CA, created when missing (an existing CA
    is returned as it is, never replaced)."""
    certs = request.app[CERTS]
    existed = certs.directory.has_ca()
    try:
        ca = certs.issue_ca()
    except CertStoreError as exc:
        raise _cert_error(exc) from None
    if not existed:
        log.info("CA %s created by the operator (from %s)", ca["subject"], request.remote)
    return _ok(ca)


@operator_only
async def cert_issue_peer(request: web.Request) -> web.Response:
    """POST /api/v1/cert/issue/peer {"public_key", "tls_public_key_pem", "signature"} (operator)."""
    body = await _read_object(request)
    try:
        issued = request.app[CERTS].issue_peer(body, PEER_CERT_VALID_DAYS)
    except CertStoreError as exc:
        raise _cert_error(exc) from None
    finally:
        request.app[PEER_CERTS].invalidate()
    log.info(
        "certificate %s issued to %s by the operator (from %s)",
        issued["serial_number"],
        issued["peer_id"],
        request.remote,
    )
    return _ok(issued)


# -- peer removal


@operator_only
async def peer_remove(request: web.Request) -> web.Response:
    """DELETE /api/v1/peer?peer_id=hx... (operator): forget a registered peer.

    Its registration and heartbeats go, it leaves every channel it was in and those channels'
    membership versions grow, so the other peers take the new validator set at their next heartbeat.
    Answers {"response_code": 0, "message", "data": {"peer_id", "channels": {name: new version},
    "admitted_by": [channels that still admit it]}}; an unknown peer is 404 (-800). Removal is
    not a ban: a peer its channels still admit may register again, and one still running does so
    at its next heartbeat, which the message says (unlist it, with ENABLE_CHANNEL_AUTH, and
    revoke its certificate to keep it out).
    """
    peer_id = _peer_id_arg(request)
    registry = _station(request).registry
    try:
        target = registry.peer(peer_id).target
        changed = registry.remove(peer_id)
    except UnknownPeer as exc:
        raise ApiError(ResponseCode.PEER_UNKNOWN, str(exc)) from None
    except OSError as exc:  # not saved, so not made
        raise ApiError(ResponseCode.FAIL, str(exc)) from None
    versions = {name: registry.version(name) for name in registry.channels if name in changed}
    listing, open_ = [], []  # the channels that still admit it: by its entry, or any peer
    for name, spec in registry.channels.items():
        if not registry.channel_auth or spec.members is None:
            open_.append(name)
        elif spec.admits(peer_id, target, True):
            listing.append(name)
    log.info(
        "peer %s removed by the operator (from %s); channel versions now %s",
        peer_id,
        request.remote,
        versions,
    )
    # said: the answer alone read as if it were gone for good (operator review)
    why = []
    if listing:
        why.append(f"channels {_named(listing)} list it (unlist it there: gtool remove-peer)")
    if open_:
        why.append(
            f"channels {_named(open_)} admit any peer (ENABLE_CHANNEL_AUTH off, or no peers "
            "listed: only a list of peers keeps it out)"
        )
    message = f"peer {peer_id} removed" + (
        f"; it registers again at its next heartbeat if it runs, as {'; '.join(why)}" if why else ""
    )
    admitting = listing + open_
    return web.json_response(
        {
            "response_code": 0,
            "message": message,
            "data": {"peer_id": peer_id, "channels": versions, "admitted_by": admitting},
        }
    )


MAX_NAMED_CHANNELS = 8  # channels named in a message, the rest counted


def _named(channels: list[str]) -> str:
    """The first MAX_NAMED_CHANNELS of `channels`, and how many more."""
    more = len(channels) - MAX_NAMED_CHANNELS
    return ", ".join(channels[:MAX_NAMED_CHANNELS]) + (f" and {more} more" if more > 0 else "")


# -- channels


async def channel_data_get(request: web.Request) -> web.Response:
    """GET /api/v1/channel/data: every channel as channel_manage_data.json holds it."""
    return _ok(channel_admin.channel_data(_station(request)))


def _channel_changed(name: str, version: int, what: str, request: web.Request) -> web.Response:
    spec = _station(request).registry.channels[name]
    log.info(
        "channel %s: %s by the operator (from %s); version %d", name, what, request.remote, version
    )
    return web.json_response(
        {
            "response_code": 0,
            "message": f"channel {name}: {what}",
            "data": {"channel": name, "version": version, name: channel_to_json(spec)},
        }
    )


def _change_error(exc: Exception) -> ApiError:
    if isinstance(exc, channel_admin.ChannelExists):
        return ApiError(ResponseCode.INVALID_PARAMS, str(exc))
    if isinstance(exc, UnknownChannel | channel_admin.NoSuchEntry):
        return ApiError(ResponseCode.NOT_FOUND, str(exc))
    if isinstance(exc, OSError):
        return ApiError(ResponseCode.FAIL, str(exc))
    if isinstance(exc, channel_admin.ChannelFileChanged):
        return ApiError(ResponseCode.FAIL, str(exc), status=409)
    return ApiError(ResponseCode.INVALID_PARAMS, str(exc))


_CHANGE_ERRORS = (
    channel_admin.ChannelChangeError,
    channel_admin.ChannelFileChanged,
    channel_admin.NoSuchEntry,
    UnknownChannel,
    OSError,
)


@operator_only
async def channel_add(request: web.Request) -> web.Response:
    """POST /api/v1/channel {"channel": name, "score_package", "peers", ...} (operator): add a
    channel to channel_manage_data.json and to the running RadioStation."""
    body = await _read_object(request)
    try:
        spec, version, given = channel_admin.add_channel(_station(request), body)
    except _CHANGE_ERRORS as exc:
        raise _change_error(exc) from None
    if given is not None:
        added = (
            f"added with network id {given:#x} (genesis_data.nid: it stated none, and the "
            "peers' ICON_NID is another channel's)"
        )
    else:
        added = "added"
    # (a running peer opens a channel granted since its start at its next start)
    return _channel_changed(
        spec.name, version, f"{added}; its peers open it at their next start", request
    )


@operator_only
async def channel_peer_add(request: web.Request) -> web.Response:
    """POST /api/v1/channel/peer {"channel", "peer_id", "peer_target", "weight", "group_id",
    "role"} (operator): list a peer in a channel."""
    body = await _read_object(request)
    try:
        spec, version = channel_admin.add_member(_station(request), body)
    except _CHANGE_ERRORS as exc:
        raise _change_error(exc) from None
    who = body.get("peer_id") or body.get("peer_target")
    return _channel_changed(spec.name, version, f"peer {who} listed", request)


@operator_only
async def channel_peer_remove(request: web.Request) -> web.Response:
    """DELETE /api/v1/channel/peer?channel=C&peer_id=hx... (or &peer_target=host:port) (operator):
    take a peer's entry out of a channel's list (in listed mode the peer leaves the channel)."""
    channel = request.query.get("channel", "")
    peer_id, target = request.query.get("peer_id", ""), request.query.get("peer_target", "")
    if not channel or not (peer_id or target):
        raise ApiError(
            ResponseCode.INVALID_PARAMS,
            "query arguments channel and peer_id (or peer_target) are needed",
        )
    try:
        spec, version = channel_admin.remove_member(_station(request), channel, peer_id, target)
    except _CHANGE_ERRORS as exc:
        raise _change_error(exc) from None
    return _channel_changed(spec.name, version, f"peer {peer_id or target} unlisted", request)


def create_app(
    station: Station,
    token: OperatorToken,
    certs: CertificateService | None = None,
    client_check: Any = None,
) -> web.Application:
    """The REST application over `station` and its certificate service (its own CA by default);
    every call that changes state needs the operator `token`; every request is first passed
    through `client_check` when given (ENABLE_REST_SSL 2: http_site.RevokedClients)."""
    sender = answer_sender(station.config, _busy)
    checks = [client_check] if client_check is not None else []
    app = web.Application(
        client_max_size=int(station.config.REST_MAX_BODY_BYTES),
        middlewares=[sender.middleware(), *checks, error_middleware],
    )
    app[STATION] = station
    app[TOKEN] = token
    app[STATUS] = StatusQueries()
    app[CERTS] = certs or create_certificate_service(station.config, None, None)
    app[PEER_CERTS] = PeerCertListing(app[CERTS])
    app.router.add_get("/api/v1/peer/list", peer_list)
    app.router.add_get("/api/v1/peer/leader", peer_leader)
    app.router.add_get("/api/v1/peer/status", peer_status)
    app.router.add_get("/api/v1/peer/status-list", peer_status_list)
    app.router.add_get("/api/v1/conf", conf_get)
    app.router.add_post("/api/v1/conf", conf_post)
    app.router.add_get("/api/v1/cert/list/ca", cert_list_ca)
    app.router.add_get("/api/v1/cert/list/peer", cert_list_peer)
    app.router.add_get("/api/v1/cert/issue/ca", cert_get_ca)
    app.router.add_post("/api/v1/cert/issue/ca", cert_issue_ca)
    app.router.add_post("/api/v1/cert/issue/peer", cert_issue_peer)
    app.router.add_delete("/api/v1/peer", peer_remove)
    app.router.add_routes([station.metrics.route()])  # GET /metrics
    app.router.add_get("/api/v1/channel/data", channel_data_get)
    app.router.add_post("/api/v1/channel", channel_add)
    app.router.add_post("/api/v1/channel/peer", channel_peer_add)
    app.router.add_delete("/api/v1/channel/peer", channel_peer_remove)
    return app
