"""Local stand-ins for the external delivery providers, speaking their request and response shapes.

- Generic webhook receiver: ``POST /webhook/{name}``; checks the HMAC signature when it knows the
  secret, and answers 200 (or, when told to fail, 503).
- WeCom group robot: ``POST /cgi-bin/webhook/send?key=…`` with ``{"msgtype": "text", …}``; answers
  ``{"errcode": 0, "errmsg": "ok"}``.
- Upper-level platforms: ``POST /platform/{name}`` takes CAP 1.2 that validates against the OASIS
  schema; ``POST /national/{name}`` takes the national release system's message form, read as
  ingest reads one from the provincial platform; anything else is a 422.

Every message received is kept in memory, printed, and listed at ``GET /messages`` (JSON) and
``GET /`` (a page a person can read).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from lxml import etree

from services.alerting.adapters.channels.http import sign_webhook
from services.ingest.domain.model import CapRejected
from services.ingest.domain.national import read_national
from shared.capxml import NS, safe_parser, schema_errors
from shared.devstack.fakesms import SmsState
from shared.devstack.fakesms import router as sms_router
from shared.devstack.fakewechat import WeChatState
from shared.devstack.fakewechat import router as wechat_router

log = logging.getLogger("fakeproviders")


class Inbox:
    def __init__(self, on_message: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_next = 0
        self.secrets: dict[str, str] = {}
        self.on_message = on_message

    def add(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        if self.on_message is not None:
            self.on_message(msg)


def describe(m: dict[str, Any]) -> str:
    """One line for a person watching the terminal."""
    body = m["body"]
    if m["provider"] == "wecom_robot":
        text = body.get("text", {}).get("content", "").replace("\n", " | ")
    else:
        text = f"{body.get('msg_type')} {body.get('level')} {body.get('headline')}"
    return f"[{m['provider']}:{m['name']}] {text}"


def create_app(
    inbox: Inbox | None = None, sms: SmsState | None = None, wechat: WeChatState | None = None
) -> FastAPI:
    box = inbox or Inbox()
    app = FastAPI(title="Qianshao fake providers")
    app.state.inbox = box
    app.state.sms = sms or SmsState()
    app.include_router(sms_router(app.state.sms))
    app.state.wechat = wechat or WeChatState()
    app.include_router(wechat_router(app.state.wechat))

    @app.post("/webhook/{name}")
    async def webhook(name: str, request: Request) -> Response:
        body = await request.body()
        if box.fail_next > 0:
            box.fail_next -= 1
            return JSONResponse({"error": "unavailable"}, status_code=503)
        secret = box.secrets.get(name)
        verified = None
        if secret is not None:
            ts = request.headers.get("x-qianshao-timestamp", "")
            verified = request.headers.get("x-qianshao-signature") == sign_webhook(secret, ts, body)
            if not verified:
                return JSONResponse({"error": "bad signature"}, status_code=401)
        box.add(
            {
                "provider": "webhook",
                "name": name,
                "received_at": datetime.now(UTC).isoformat(),
                "idempotency_key": request.headers.get("idempotency-key"),
                "signature_ok": verified,
                "body": orjson.loads(body),
            }
        )
        return JSONResponse({"ok": True})

    @app.post("/cgi-bin/webhook/send")
    async def wecom(request: Request, key: str = "") -> Response:
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid json"})
        if not key:
            return JSONResponse({"errcode": 93000, "errmsg": "invalid webhook url"})
        if doc.get("msgtype") != "text" or "content" not in doc.get("text", {}):
            return JSONResponse({"errcode": 40008, "errmsg": "invalid message type"})
        box.add(
            {
                "provider": "wecom_robot",
                "name": key,
                "received_at": datetime.now(UTC).isoformat(),
                "body": doc,
            }
        )
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    @app.post("/platform/{name}")
    async def platform(name: str, request: Request) -> Response:
        """An upper-level platform: takes CAP 1.2 only, refuses what does not validate."""
        body = await request.body()
        try:
            doc = etree.fromstring(body, safe_parser())
        except etree.XMLSyntaxError:
            return JSONResponse({"error": "not XML"}, status_code=400)
        errors = schema_errors(doc)
        if errors:
            return JSONResponse({"error": "invalid CAP", "detail": errors[:3]}, status_code=422)
        box.add(
            {
                "provider": "platform",
                "name": name,
                "received_at": datetime.now(UTC).isoformat(),
                "idempotency_key": request.headers.get("idempotency-key"),
                "body": {
                    "identifier": doc.findtext(f"{{{NS}}}identifier"),
                    "msg_type": doc.findtext(f"{{{NS}}}msgType"),
                    "status": doc.findtext(f"{{{NS}}}status"),
                    "headline": doc.findtext(f"{{{NS}}}info/{{{NS}}}headline"),
                    "area_desc": doc.findtext(f"{{{NS}}}info/{{{NS}}}area/{{{NS}}}areaDesc"),
                },
            }
        )
        return JSONResponse({"ok": True})

    @app.post("/national/{name}")
    async def national(name: str, request: Request) -> Response:
        """An upper-level platform of the national release system: takes its message form only,
        refuses what its reader refuses (the reason in the answer)."""
        body = await request.body()
        try:
            warning = read_national(etree.fromstring(body, safe_parser()))
        except (etree.XMLSyntaxError, CapRejected) as exc:
            return JSONResponse({"error": "not a national message", "detail": str(exc)}, 422)
        box.add(
            {
                "provider": "national",
                "name": name,
                "received_at": datetime.now(UTC).isoformat(),
                "idempotency_key": request.headers.get("idempotency-key"),
                "body": {
                    "identifier": warning.identifier,
                    "msg_type": warning.msg_type,
                    "level": warning.level,
                    "headline": warning.headline,
                    "region_codes": warning.region_codes,
                    "references": warning.references,
                    "event": warning.event,
                },
                "xml": body.decode(),
            }
        )
        return JSONResponse({"ok": True})

    @app.get("/messages")
    async def messages() -> JSONResponse:
        return JSONResponse(box.messages)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        rows = []
        for m in reversed(box.messages[-200:]):
            body = m["body"]
            text = (
                body.get("text", {}).get("content")
                or f"{body.get('headline')}\n{body.get('description')}"
            )
            rows.append(
                f"<tr><td>{html.escape(m['received_at'])}</td><td>{html.escape(m['provider'])}"
                f"/{html.escape(m['name'])}</td><td><pre>{html.escape(str(text))}</pre></td></tr>"
            )
        return (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=3>"
            "<title>Qianshao fake providers</title><h1>Messages received</h1>"
            f"<p>{len(box.messages)} in all</p><table border=1 cellpadding=4>"
            "<tr><th>received</th><th>provider</th><th>message</th></tr>"
            + "".join(rows)
            + "</table><h1>SMS</h1><table border=1 cellpadding=4>"
            "<tr><th>received</th><th>provider</th><th>numbers</th><th>text</th></tr>"
            + "".join(
                f"<tr><td>{html.escape(t['received_at'])}</td><td>{html.escape(t['provider'])}"
                f"</td><td>{html.escape(', '.join(t['numbers']))}</td>"
                f"<td>{html.escape(t['text'])}</td></tr>"
                for t in reversed(app.state.sms.texts[-200:])
            )
            + "</table>"
        )

    return app
