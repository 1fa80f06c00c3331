"""HTTP plumbing shared by the services: RFC 9457 problem documents, request ids, health and
readiness, Prometheus ``/metrics`` and the identity dependency."""

from __future__ import annotations

import logging
import platform
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, SecurityScopes
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    Conflict,
    DependencyError,
    NotFound,
    PermissionDenied,
    QianshaoError,
    Unauthenticated,
    ValidationFailed,
)
from shared.identity import HEADER, Identity, verify
from shared.logging import request_id_var
from shared.version import version as project_version

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
REQUEST_ID = "X-Request-ID"
# How long a service keeps an idle HTTP connection open. Longer than any client of ours keeps
# one in its pool (the gateway's: 30 s), so a client never sends on a connection the service is
# closing at that moment: uvicorn's default of 5 s raced the gateway's pool, and a POST caught in
# that race (not retried: it is not idempotent) came back 502.
KEEP_ALIVE_S = 75

# No "service" label: which service answered is the scrape target's own label (job, and service
# in Kubernetes), and a label of that name here would be renamed exported_service on scrape.
HTTP_REQUESTS = Counter(
    "qianshao_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "qianshao_http_request_duration_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

BUILD_INFO = Gauge(
    "qianshao_build_info",
    "Always 1: which component of Qianshao this process serves, its version and its Python",
    ["component", "version", "python_version"],
)

_STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _STATUS_TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


_ERROR_STATUS: list[tuple[type[QianshaoError], int]] = [
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (ValidationFailed, 422),
    (DependencyError, 503),
]


def status_for(exc: QianshaoError) -> int:
    for cls, status in _ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    async def on_qianshao(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, QianshaoError)
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem(status, exc.message, type_=f"urn:qianshao:error:{exc.code}", headers=headers)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route at the path; a path served by
            # several routes (GET and POST) has them all
            allowed = allowed_methods(request.app, request.scope["path"])
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
                return problem(405, detail, headers=headers)
        return problem(exc.status_code, str(exc.detail), headers=headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem(422, "request does not match the schema", errors=errors)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        unstorable = _unstorable(exc)
        if unstorable:
            return problem(422, unstorable)
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal error; quote the request id when reporting it")

    app.add_exception_handler(QianshaoError, on_qianshao)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the app's OpenAPI document lists at ``path``, or [] when it has no such
    path. The table of path patterns is built once per app."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "path_methods", None)
    if table is None:
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
            methods = sorted(m.upper() for m in item if m in _HTTP_METHODS)
            table.append((re.compile(f"^{pattern}$"), methods))
        app.state.path_methods = table
    return next((methods for pattern, methods in table if pattern.match(path)), [])


def _unstorable(exc: BaseException) -> str | None:
    """A request value the database cannot take (SQLSTATE class 22, or text that is no valid
    Unicode) is the client's error, not ours: 422, not 500."""
    if isinstance(exc, asyncpg.DataError):
        return f"a value of the request cannot be stored ({type(exc).__name__})"
    if isinstance(exc, UnicodeEncodeError) and "surrogates" in str(exc):
        return "the request holds text that is not valid Unicode (a lone surrogate)"
    return None


class RequestContextMiddleware:
    """Takes ``X-Request-ID`` in (or makes one), echoes it, counts and times the request.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every response in a
    stream of its own; that wrapping was a tenth of the gateway's time per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if not rid or len(rid) > 128 or not rid.isascii() or not rid.isprintable():
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        status = 500
        echo = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), echo]}
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_template(scope)
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(scope["method"], route, status).inc()
            request_id_var.reset(token)


def _route_template(scope: Scope) -> str:
    """The matched route's path template, a label of bounded cardinality. FastAPI routes put
    themselves in the scope; a plain Starlette route (the gateway's proxy) leaves its endpoint,
    whose route is looked up once in the app's routes."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is None or app is None:
        return "unmatched"
    templates: dict[Any, str] | None = getattr(app.state, "route_templates", None)
    if templates is None:
        templates = app.state.route_templates = {}
    found = templates.get(endpoint)
    if found is None:
        found = next(
            (str(r.path) for r in app.routes if getattr(r, "endpoint", None) is endpoint),
            "unmatched",
        )
        templates[endpoint] = found
    return found


Check = Callable[[], Awaitable[None]]


def ops_router(checks: dict[str, Check]) -> APIRouter:
    """``/healthz`` (the process answers), ``/readyz`` (every dependency answers), ``/metrics``."""
    router = APIRouter(tags=["ops"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", response_model=None)
    async def readyz() -> Response:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"unavailable: {type(exc).__name__}"
        if ok:
            return JSONResponse({"status": "ready", "checks": results})
        return problem(503, "a dependency is unavailable", checks=results)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def public_url(request: Request, path: str, upstream_prefix: str = "/v1/") -> str:
    """``path`` (after the service's ``upstream_prefix``) as the client that called the gateway
    reaches it, from the ``X-Forwarded-*`` headers the gateway sets; called directly, the
    service's own address."""
    h = request.headers
    host, prefix = h.get("x-forwarded-host"), h.get("x-forwarded-prefix")
    if host and prefix:
        return f"{h.get('x-forwarded-proto', 'https')}://{host}{prefix}{path}"
    return f"{str(request.base_url).rstrip('/')}{upstream_prefix}{path}"


def current_identity(request: Request) -> Identity:
    """The caller, as signed by the gateway.

    Apps set ``state.internal_secret`` and ``state.clock``.
    """
    state = request.app.state
    return verify(request.headers.get(HEADER), state.internal_secret, state.clock.now())


# The identity header as an OpenAPI security scheme, so each operation's document states the
# scopes it needs (the gateway's merged document maps them onto the public credentials)
IDENTITY_SCHEME = APIKeyHeader(
    name=HEADER,
    scheme_name="identity",
    description="the caller, authenticated and signed by the gateway",
    auto_error=False,
)


def scoped_identity(
    request: Request,
    required: SecurityScopes,
    _header: Annotated[str | None, Security(IDENTITY_SCHEME)],
) -> Identity:
    """The caller, holding every scope the operation declares (403 otherwise)."""
    identity = current_identity(request)
    for scope in required.scopes:
        identity.require_scope(scope)
    return identity


def needs(*scopes: str) -> Any:
    """``identity: Annotated[Identity, needs("warnings:read")]``: checked, and documented."""
    return Security(scoped_identity, scopes=list(scopes))


IdentityDep = Annotated[Identity, needs()]
# a row id in the path: a bigint any JSON client can hold (2**53 - 1), so anything larger is a
# 422, never a database error
RowId = Annotated[int, Path(ge=1, le=2**53 - 1)]

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
# errors any operation may answer with, besides its own
COMMON_ERRORS = {
    "401": "no or bad credentials",
    "403": "outside the caller's scopes or region",
    "422": "the request does not match the schema",
    "503": "a dependency (database, broker, provider) is unavailable",
}


def problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` documenting what the error handlers send: every error response is
    ``application/problem+json`` with the Problem schema (FastAPI's default 422 says otherwise)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = original()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        ref = {"$ref": "#/components/schemas/Problem"}
        for item in doc.get("paths", {}).values():
            for op in item.values():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                for code, text in COMMON_ERRORS.items():
                    op["responses"].setdefault(code, {"description": text})
                if any(p.get("in") == "path" for p in op.get("parameters", [])):
                    op["responses"].setdefault("404", {"description": "no such resource here"})
                if "requestBody" in op:
                    op["responses"].setdefault(
                        "400", {"description": "the body cannot be parsed as its content type"}
                    )
                for code, response in op["responses"].items():
                    # an error is a problem document, unless the operation marks it otherwise
                    # (the token endpoint's RFC 6749 errors)
                    if response.pop("x-problem", True) and code[0] in "45":
                        response["content"] = {PROBLEM: {"schema": ref}}
        app.openapi_schema = doc
        return doc

    return openapi


def operation_id(route: APIRoute) -> str:
    """An operation's id is its handler's name: unique across the services (the gateway's
    merged document checks it) and saying what it does."""
    return route.name


def new_app(
    service: str,
    *,
    title: str,
    lifespan: Any,
    internal_secret: str,
    clock: Any,
    settings: Any = None,
    version: str | None = None,
) -> FastAPI:
    """A service app with problem+json errors, request ids, the ops routes and the state the
    identity dependency reads. Lifespans add their readiness checks to ``app.state.checks``."""
    app = FastAPI(
        title=title,
        version=version or project_version(),
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        responses={
            401: {"description": "Unauthenticated", "content": {PROBLEM: {}}},
            403: {"description": "Forbidden", "content": {PROBLEM: {}}},
        },
    )
    install_error_handlers(app)
    app.openapi = problem_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RequestContextMiddleware)
    BUILD_INFO.labels(service, app.version, platform.python_version()).set(1)
    app.state.internal_secret = internal_secret
    app.state.clock = clock
    app.state.settings = settings
    app.state.checks = {}
    app.include_router(ops_router(app.state.checks))
    return app
