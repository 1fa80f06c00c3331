"""One OpenAPI document for the whole public API: each service's own document, its paths moved
under the gateway's public prefixes, merged with the gateway's own paths and the security
schemes the gateway accepts. Pure: ``merge`` takes the documents, and the caller fetches them."""

from __future__ import annotations

import copy
import json
from typing import Any

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
        "flows": {"password": {"tokenUrl": "/api/v1/auth/token", "scopes": {}}},
    },
}


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
    schemas: dict[str, Any] = dict(out.get("components", {}).get("schemas", {}))
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
                    op["security"] = (
                        []
                        if public_path
                        else [{"apiKey": []}, {"signedRequest": []}, {"operator": []}]
                    )
                    problem = {"application/problem+json": {"schema": PROBLEM_REF}}
                    op.setdefault("responses", {}).update(
                        {
                            "401": {"description": "no or bad credentials", "content": problem},
                            "413": {"description": "the body is too large", "content": problem},
                            "429": {
                                "description": "rate limited; see Retry-After",
                                "content": problem,
                            },
                            "502": {
                                "description": "the service is unreachable",
                                "content": problem,
                            },
                            "503": {"description": "the service is failing", "content": problem},
                            "504": {"description": "the service timed out", "content": problem},
                        }
                    )
            paths[public] = item
    out["paths"] = dict(sorted(paths.items()))
    out.setdefault("components", {})["schemas"] = schemas
    out["components"]["securitySchemes"] = SECURITY_SCHEMES
    if unavailable:
        out["info"]["x-unavailable"] = unavailable
    return out
