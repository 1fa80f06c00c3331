"""The operators' OAuth2 token endpoint (RFC 6749: the password and refresh-token grants, with
its error responses, section 5.2) and sign-out (RFC 7009)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.adapters.auth import Authenticator
from services.gateway.adapters.upstreams import BodyTooLarge, read_body, too_large
from services.gateway.api.guard import Guard, client_address
from services.gateway.settings import GatewaySettings
from shared.clock import Clock
from shared.errors import Unauthenticated

FORM_LIMIT = 64 << 10
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: answered 400 with ``error`` and ``error_description``."""

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description


def oauth_error(exc: OAuthError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=400,
        headers=NO_STORE,
    )


def _form_body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An OpenAPI request body of form fields (what RFC 6749 and RFC 7009 take)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": schema}},
    }


OAUTH_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}
TOKEN_OPENAPI: dict[str, Any] = {
    "security": [],
    "requestBody": _form_body(
        {
            "grant_type": {
                "type": "string",
                "enum": ["password", "refresh_token"],
                "default": "password",
            },
            "username": {"type": "string", "description": "with grant_type=password"},
            "password": {"type": "string", "description": "with grant_type=password"},
            "refresh_token": {
                "type": "string",
                "description": "with grant_type=refresh_token",
            },
            "scope": {"type": "string", "description": "ignored: roles decide"},
        }
    ),
    "responses": {
        "200": {
            "description": "an access token and a refresh token (RFC 6749 section 5.1)",
            "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in", "refresh_token"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "const": "bearer"},
                            "expires_in": {"type": "integer"},
                            "refresh_token": {"type": "string"},
                            "refresh_expires_in": {"type": "integer"},
                        },
                    }
                }
            },
        },
        "400": {
            "description": "refused (RFC 6749 section 5.2): a missing field, a grant type other "
            "than password or refresh_token, wrong credentials or a refresh token that is "
            "unknown, expired, revoked or used already",
            "content": OAUTH_ERROR,
            "x-problem": False,
        },
    },
}
REVOKE_OPENAPI: dict[str, Any] = {
    "security": [],
    "requestBody": _form_body(
        {
            "token": {"type": "string", "minLength": 1, "description": "the refresh token"},
            "token_type_hint": {"type": "string"},
        },
        required=["token"],
    ),
    "responses": {
        "200": {
            "description": "revoked, or an unknown token (RFC 7009: no error either way)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "400": {
            "description": "no token given (RFC 6749 section 5.2)",
            "content": OAUTH_ERROR,
            "x-problem": False,
        },
    },
}
ME_OPENAPI: dict[str, Any] = {
    "security": [{"operator": []}, {"apiKey": []}, {"signedRequest": []}],
    "responses": {
        "200": {
            "description": "the caller's subject, roles, scopes and region",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["subject", "kind", "roles", "scopes", "region_prefix"],
                        "properties": {
                            "subject": {"type": "string"},
                            "kind": {"type": "string"},
                            "roles": {"type": "array", "items": {"type": "string"}},
                            "scopes": {"type": "array", "items": {"type": "string"}},
                            "region_prefix": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
}


def router(guard: Guard, settings: GatewaySettings, clock: Clock) -> APIRouter:
    r = APIRouter(prefix="/api/v1/auth", tags=["auth"])

    async def form(request: Request) -> dict[str, list[str]]:
        if too_large(request, FORM_LIMIT):
            raise BodyTooLarge
        body = await read_body(request, FORM_LIMIT, settings.body_timeout_s)
        return parse_qs(body.decode("utf-8", "replace"))

    @r.post("/token", openapi_extra=TOKEN_OPENAPI)
    async def issue_token(request: Request) -> JSONResponse:
        """OAuth2 token endpoint (form-encoded): ``grant_type=password`` with ``username`` and
        ``password``, or ``grant_type=refresh_token`` with ``refresh_token``."""
        await guard.limit(request, client_address(request), "auth:token")
        fields = await form(request)

        def field(name: str) -> str:
            return (fields.get(name) or [""])[0]

        grant = field("grant_type") or "password"
        auth: Authenticator = request.app.state.auth
        try:
            if grant == "password":
                if not field("username") or not field("password"):
                    raise OAuthError(
                        "invalid_request", "username and password are required (form-encoded)"
                    )
                result = await auth.login(field("username"), field("password"), clock.now())
            elif grant == "refresh_token":
                if not field("refresh_token"):
                    raise OAuthError("invalid_request", "refresh_token is required")
                result = await auth.refresh(field("refresh_token"), clock.now())
            else:
                raise OAuthError(
                    "unsupported_grant_type", "grant_type must be password or refresh_token"
                )
        except Unauthenticated as exc:
            return oauth_error(OAuthError("invalid_grant", exc.message))
        except OAuthError as exc:
            return oauth_error(exc)
        return JSONResponse(result, headers=NO_STORE)

    @r.post("/revoke", status_code=200, openapi_extra=REVOKE_OPENAPI)
    async def revoke_refresh_token(request: Request) -> JSONResponse:
        """Sign out (RFC 7009): the refresh token and every token rotated from it stop working."""
        await guard.limit(request, client_address(request), "auth:token")
        token_value = ((await form(request)).get("token") or [""])[0]
        if not token_value:
            return oauth_error(OAuthError("invalid_request", "token is required (form-encoded)"))
        await request.app.state.auth.revoke(token_value, clock.now())
        return JSONResponse({}, headers=NO_STORE)

    @r.get("/me", openapi_extra=ME_OPENAPI)
    async def who_am_i(request: Request) -> JSONResponse:
        """The caller as the gateway sees them: what the console shows and offers follows it
        (the services check every request again)."""
        identity, _ = await guard.authenticate(request, signed_body=False)
        return JSONResponse(
            {
                "subject": identity.subject,
                "kind": identity.kind,
                "roles": list(identity.roles),
                "scopes": list(identity.scopes),
                "region_prefix": identity.region_prefix,
            },
            headers=NO_STORE,
        )

    return r
