"""One OpenAPI document for the whole public API: each service's own document, its paths moved
under the gateway's public prefixes, merged with the gateway's own paths and the security
schemes the gateway accepts. Pure: ``merge`` takes the documents, and the caller fetches them."""

from __future__ import annotations

import copy
import json
from typing import Any

from services.gateway.domain.credentials import ROLE_SCOPES
from services.gateway.domain.routes import PUBLIC_PREFIXES, Route

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "signedRequest": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "QS1-HMAC-SHA256 KeyId=…,Timestamp=…,Nonce=…,Signature=… "
        "(see services/gateway/domain/signing.py)",
    },
    "operator": {
        "type": "oauth2",
        "description": "a duty officer's bearer token; the scopes come with the roles",
        "flows": {
            "password": {
                "tokenUrl": "/api/v1/auth/token",
                "refreshUrl": "/api/v1/auth/token",
                "scopes": {
                    scope: "granted to "
                    + ", ".join(r for r, ss in ROLE_SCOPES.items() if scope in ss)
                    for scope in sorted({s for ss in ROLE_SCOPES.values() for s in ss})
                },
            }
        },
    },
}
# the token endpoint's errors (RFC 6749 section 5.2), a component of the merged document
OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "an OAuth 2.0 error response (RFC 6749 section 5.2)",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "enum": ["invalid_request", "invalid_grant", "unsupported_grant_type"],
        },
        "error_description": {"type": "string"},
    },
}
# what an API client holds by default: an operation needing no more is open to upstream platforms
API_CLIENT_SCOPES = frozenset(ROLE_SCOPES["upstream_platform"])


def public_security(declared: list[dict[str, list[str]]] | None) -> list[dict[str, list[str]]]:
    """The credentials an operation takes through the gateway, from the scopes the service
    declares on its internal ``identity`` scheme: an operator's token with those scopes, and
    for what upstream platforms may do, their API key (or a signed request) first."""
    scopes = sorted({s for req in declared or [] for s in req.get("identity", [])})
    operator = [{"operator": scopes}]
    if scopes and set(scopes) <= API_CLIENT_SCOPES:
        return [{"apiKey": scopes}, {"signedRequest": scopes}, *operator]
    return operator


# what the gateway itself may answer on the way to a service
GATEWAY_ERRORS = {
    "401": "no or bad credentials (or more than one)",
    "413": "the body is too large",
    "429": "rate limited; see Retry-After",
    "502": "the service is unreachable",
    "503": "the service is failing",
    "504": "the service timed out",
}


def _gateway_errors(codes: Any) -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": PROBLEM_REF}}
    return {c: {"description": GATEWAY_ERRORS[c], "content": problem} for c in codes}


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                name = v.rsplit("/", 1)[-1]
                out[k] = f"#/components/schemas/{renames.get(name, name)}"
            else:
                out[k] = _rename_refs(v, renames)
        return out
    if isinstance(node, list):
        return [_rename_refs(x, renames) for x in node]
    return node


def merge(
    gateway: dict[str, Any], services: list[tuple[Route, dict[str, Any] | None]]
) -> dict[str, Any]:
    """The merged document. A service whose document could not be fetched (None) is listed in
    ``info.x-unavailable`` and its paths are missing until it answers."""
    out = copy.deepcopy(gateway)
    out["info"] = {
        "title": "Qianshao API",
        "version": gateway.get("info", {}).get("version", "1"),
        "description": "Every public path of Qianshao, through the gateway. "
        "Upstream platforms use an API key (or signed requests); operators a bearer token.",
    }
    paths: dict[str, Any] = {
        p: v for p, v in out.get("paths", {}).items() if p.startswith("/api/v1/")
    }
    for item in paths.values():  # the gateway's own operations meet its limits too
        for op in item.values():
            if isinstance(op, dict):
                op.setdefault("responses", {}).update(_gateway_errors(("413", "429")))
    schemas: dict[str, Any] = dict(out.get("components", {}).get("schemas", {}))
    operation_ids = {
        op.get("operationId", "")
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict)
    }
    unavailable = []
    for route, doc in services:
        if doc is None:
            unavailable.append(route.name)
            continue
        renames: dict[str, str] = {}
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if name in schemas and json.dumps(schemas[name], sort_keys=True) != json.dumps(
                schema, sort_keys=True
            ):
                renames[name] = f"{route.name}.{name}"
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            schemas[renames.get(name, name)] = _rename_refs(schema, renames)
        for path, item in doc.get("paths", {}).items():
            if not path.startswith(route.upstream_prefix):
                continue  # /healthz, /readyz, /metrics stay internal
            public = route.public_prefix + path[len(route.upstream_prefix) :]
            item = _rename_refs(item, renames)
            public_path = public.startswith(PUBLIC_PREFIXES)
            for op in item.values():
                if isinstance(op, dict):
                    op.setdefault("tags", [route.name])
                    op["security"] = [] if public_path else public_security(op.get("security"))
                    if op.get("operationId") in operation_ids:
                        op["operationId"] = f"{route.name}_{op['operationId']}"
                    operation_ids.add(op.get("operationId", ""))
                    op.setdefault("responses", {}).update(_gateway_errors(GATEWAY_ERRORS))
            paths[public] = item
    out["paths"] = dict(sorted(paths.items()))
    schemas["OAuthError"] = OAUTH_ERROR_SCHEMA
    out.setdefault("components", {})["schemas"] = schemas
    out["components"]["securitySchemes"] = SECURITY_SCHEMES
    if unavailable:
        out["info"]["x-unavailable"] = unavailable
    return out
