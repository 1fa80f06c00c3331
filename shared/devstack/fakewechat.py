"""Local stand-ins for the WeChat official-account and WeCom application APIs.

- ``GET /cgi-bin/token`` (WeChat) and ``GET /cgi-bin/gettoken`` (WeCom) issue access tokens for
  the credentials below.
- ``POST /cgi-bin/message/template/send`` (WeChat): 43004 for an openid in ``unfollowed``.
- ``POST /cgi-bin/message/send`` (WeCom): users in ``unknown_users`` come back in
  ``invaliduser``.

``expire_tokens()`` makes every issued token expired (42001), as the platforms do after two hours.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

WECHAT_APP_ID = "wx-fake-app"
WECHAT_APP_SECRET = "fake-wechat-secret"  # noqa: S105 - a local stand-in's credential
WECOM_CORP_ID = "ww-fake-corp"
WECOM_CORP_SECRET = "fake-wecom-secret"  # noqa: S105


@dataclass
class WeChatState:
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    unfollowed: set[str] = field(default_factory=set)
    unknown_users: set[str] = field(default_factory=set)
    template_messages: list[dict[str, Any]] = field(default_factory=list)
    app_messages: list[dict[str, Any]] = field(default_factory=list)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def issue(self) -> str:
        self.token_requests += 1
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return token


def router(state: WeChatState) -> APIRouter:
    r = APIRouter()

    def bad_token(token: str) -> JSONResponse | None:
        if not token:
            return JSONResponse({"errcode": 41001, "errmsg": "access_token missing"})
        if token not in state.tokens:
            return JSONResponse({"errcode": 42001, "errmsg": "access_token expired"})
        return None

    @r.get("/cgi-bin/token")
    async def wechat_token(grant_type: str = "", appid: str = "", secret: str = "") -> JSONResponse:
        if grant_type != "client_credential" or appid != WECHAT_APP_ID:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid appid"})
        if secret != WECHAT_APP_SECRET:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid credential"})
        return JSONResponse({"access_token": state.issue(), "expires_in": 7200})

    @r.get("/cgi-bin/gettoken")
    async def wecom_token(corpid: str = "", corpsecret: str = "") -> JSONResponse:
        if corpid != WECOM_CORP_ID:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid corpid"})
        if corpsecret != WECOM_CORP_SECRET:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid secret"})
        return JSONResponse(
            {"errcode": 0, "errmsg": "ok", "access_token": state.issue(), "expires_in": 7200}
        )

    @r.post("/cgi-bin/message/template/send")
    async def template_send(request: Request, access_token: str = "") -> JSONResponse:
        refused = bad_token(access_token)
        if refused is not None:
            return refused
        doc = orjson.loads(await request.body())
        if not doc.get("touser") or not doc.get("template_id"):
            return JSONResponse({"errcode": 40003, "errmsg": "invalid openid"})
        if doc["touser"] in state.unfollowed:
            return JSONResponse({"errcode": 43004, "errmsg": "require subscribe"})
        state.template_messages.append(doc)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": len(state.template_messages)})

    @r.post("/cgi-bin/message/send")
    async def app_send(request: Request, access_token: str = "") -> JSONResponse:
        refused = bad_token(access_token)
        if refused is not None:
            return refused
        doc = orjson.loads(await request.body())
        users = str(doc.get("touser", "")).split("|")
        invalid = [u for u in users if u in state.unknown_users]
        if len(invalid) < len(users):
            state.app_messages.append(doc)
        return JSONResponse(
            {
                "errcode": 0,
                "errmsg": "ok",
                "invaliduser": "|".join(invalid),
                "msgid": uuid.uuid4().hex,
            }
        )

    return r
