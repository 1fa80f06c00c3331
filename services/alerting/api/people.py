"""alerting's HTTP API for people: recipients, duty rosters, 叫应 confirmations and statistics,
and the SMS providers' callbacks (delivery receipts and replies).

Confirmation links and provider callbacks are public: a link is its own credential (a signed
token), and a provider callback carries the service's callback token in its path, as configured
at the provider.
"""

from __future__ import annotations

import hmac
import html
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from services.alerting.adapters.audit import audit
from services.alerting.adapters.confirmations import confirm_by_phone, confirm_tasks
from services.alerting.domain.confirm import read_token
from services.alerting.domain.recipients import Role, jurisdiction
from services.alerting.domain.states import STANDING
from shared.api_types import BodyId, Flag, Instant
from shared.contracts import ActiveLevelName, Level
from shared.errors import NotFound, PermissionDenied, ValidationFailed
from shared.http import RowId, needs
from shared.identity import Identity

PersonChannelName = Literal["sms", "wechat_mp", "wecom_app", "email"]


class PersonSubscriptionIn(BaseModel):
    hazard: str | None = None
    min_level: ActiveLevelName = "blue"
    channels: list[PersonChannelName] = Field(default=["sms"], min_length=1)


class PersonIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    region_code: str = Field(pattern=r"^\d{12}$")
    phone: str | None = Field(default=None, pattern=r"^\+?\d{5,20}$")
    wechat_openid: str | None = Field(default=None, max_length=64)
    wecom_userid: str | None = Field(default=None, max_length=64)
    # spelled out rather than \s, which Python and JSON Schema's ECMA regexes read differently
    email: str | None = Field(
        default=None, pattern=r"^[^@ \t\r\n]+@[^@ \t\r\n]+\.[^@ \t\r\n]+$", max_length=200
    )
    drill: Flag = False
    subscriptions: list[PersonSubscriptionIn] = Field(default_factory=list, max_length=10)


class PersonOut(PersonIn):
    id: int
    active: bool


class RosterIn(BaseModel):
    person_id: BodyId
    starts_at: Instant
    ends_at: Instant


class RosterOut(RosterIn):
    id: int


class ConfirmIn(BaseModel):
    person_id: BodyId


class ConfirmOut(BaseModel):
    confirmed: int = Field(description="tasks confirmed by this call (0 when already confirmed)")


class ConfirmStat(BaseModel):
    region_code: str
    region_name: str = Field(description="the region in words (its code when unknown)")
    required: int
    confirmed: int
    rate: float | None
    median_seconds: float | None
    p90_seconds: float | None


class UnansweredCounty(BaseModel):
    county_code: str
    county_name: str = Field(description="the county in words (its code when unknown)")
    warnings: list[str]
    required: int
    oldest: datetime


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


async def _person(pool: asyncpg.Pool, pid: int) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT id, name, role, region_code, phone, wechat_openid, wecom_userid, email, drill,
                  active,
                  coalesce((SELECT jsonb_agg(jsonb_build_object('hazard', s.hazard,
                                'min_level', s.min_level, 'channels', s.channels) ORDER BY s.id)
                              FROM alerting.person_subscriptions s WHERE s.person_id = p.id),
                           '[]'::jsonb) AS subscriptions
             FROM alerting.persons p WHERE id = $1""",
        pid,
    )
    if row is None:
        raise NotFound(f"no person {pid}")
    d = dict(row.items())
    d["subscriptions"] = [
        {**s, "min_level": Level(s["min_level"]).name} for s in d["subscriptions"]
    ]
    return d


# the 叫应 page opens on village cadres' phones: large type, one large button, nothing fetched
PAGE_STYLE = (
    "body{margin:0;font:18px/1.6 system-ui,'PingFang SC','Microsoft YaHei',"
    "'WenQuanYi Micro Hei',sans-serif;color:#1a1a1a;background:#f4f5f7}"
    "main{max-width:36rem;margin:0 auto;padding:1.25rem}"
    "h1{font-size:1.5rem;margin:.5rem 0 1rem}"
    ".notice{background:#fff;border-left:6px solid #b71c1c;padding:1rem;border-radius:4px}"
    "button{display:block;width:100%;margin-top:1.5rem;padding:1rem;font-size:1.25rem;"
    "color:#fff;background:#b71c1c;border:0;border-radius:6px;min-height:3rem}"
    "button:focus-visible{outline:3px solid #0b57d0;outline-offset:3px}"
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="zh-CN"><head><meta charset=utf-8>'
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · 前哨预警</title><style>{PAGE_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.post("/persons", status_code=201, response_model=PersonOut, tags=["recipients"])
    async def create_person(
        body: PersonIn, identity: Annotated[Identity, needs("recipients:write")], request: Request
    ) -> Any:
        """A person who receives warnings; without subscriptions they get every hazard from
        blue by SMS."""
        identity.require_region(body.region_code)
        pool = _pool(request)
        async with pool.acquire() as conn, conn.transaction():
            pid = await conn.fetchval(
                """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone,
                       wechat_openid, wecom_userid, email, drill)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
                body.name,
                body.role,
                body.region_code,
                jurisdiction(body.region_code),
                body.phone,
                body.wechat_openid,
                body.wecom_userid,
                body.email,
                body.drill,
            )
            await conn.executemany(
                """INSERT INTO alerting.person_subscriptions
                       (person_id, hazard, min_level, channels)
                   VALUES ($1, $2, $3, $4)""",
                [
                    (pid, s.hazard, int(Level.parse(s.min_level)), s.channels)
                    for s in body.subscriptions
                ],
            )
            await audit(
                conn,
                identity.subject,
                "person.create",
                {"person_id": pid, "region_code": body.region_code, "role": body.role},
            )
        return await _person(pool, pid)

    @r.get("/persons", response_model=list[PersonOut], tags=["recipients"])
    async def list_persons(
        identity: Annotated[Identity, needs("recipients:read")],
        request: Request,
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        role: Role | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> Any:
        prefix = identity.narrow(region_prefix)
        ids = await _pool(request).fetch(
            """SELECT id FROM alerting.persons
                WHERE region_code LIKE $1 || '%' AND ($2::text IS NULL OR role = $2)
                ORDER BY id LIMIT $3""",
            prefix,
            role,
            limit,
        )
        return [await _person(_pool(request), x["id"]) for x in ids]

    @r.delete("/persons/{person_id}", status_code=204, tags=["recipients"])
    async def deactivate_person(
        person_id: RowId, identity: Annotated[Identity, needs("recipients:write")], request: Request
    ) -> None:
        """Stops all sending to the person; the ledger and confirmations keep their history."""
        p = await _person(_pool(request), person_id)
        identity.require_region(p["region_code"])
        await _pool(request).execute(
            "UPDATE alerting.persons SET active = false WHERE id = $1", person_id
        )

    @r.post(
        "/duty-roster",
        status_code=201,
        response_model=RosterOut,
        tags=["recipients"],
        responses={404: {"description": "no such person here"}},
    )
    async def add_duty_shift(
        body: RosterIn, identity: Annotated[Identity, needs("recipients:write")], request: Request
    ) -> Any:
        if body.ends_at <= body.starts_at:
            raise ValidationFailed("ends_at must be after starts_at")
        p = await _person(_pool(request), body.person_id)
        identity.require_region(p["region_code"])
        if p["role"] not in ("township_duty_officer", "county_duty_officer"):
            raise ValidationFailed(f"{p['role']} is not a duty officer role")
        rid = await _pool(request).fetchval(
            """INSERT INTO alerting.duty_roster (person_id, starts_at, ends_at)
               VALUES ($1, $2, $3) RETURNING id""",
            body.person_id,
            body.starts_at,
            body.ends_at,
        )
        return {"id": rid, **body.model_dump()}

    @r.get("/duty-roster", response_model=list[RosterOut], tags=["recipients"])
    async def list_duty_shifts(
        identity: Annotated[Identity, needs("recipients:read")],
        request: Request,
        at: Instant | None = None,
    ) -> Any:
        """Shifts in the caller's region; with ``at``, only those covering that moment."""
        rows = await _pool(request).fetch(
            """SELECT r.id, r.person_id, r.starts_at, r.ends_at
                 FROM alerting.duty_roster r JOIN alerting.persons p ON p.id = r.person_id
                WHERE p.region_code LIKE $1 || '%'
                  AND ($2::timestamptz IS NULL OR (r.starts_at <= $2 AND r.ends_at > $2))
                ORDER BY r.starts_at""",
            identity.region_prefix,
            at,
        )
        return [dict(x.items()) for x in rows]

    # -- 叫应 ------------------------------------------------------------------------------

    @r.get("/confirm/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm_page(token: str, request: Request) -> HTMLResponse:
        """The page a confirmation link opens. Opening it changes nothing (link scanners open
        links too); the button posts the confirmation."""
        tid = read_token(request.app.state.settings.confirm_secret, token)
        row = await _pool(request).fetchrow(
            """SELECT t.confirmed_at, v.headline FROM alerting.confirm_tasks t
                 JOIN alerting.warning_versions v
                   ON v.warning_id = t.warning_id AND v.version = t.version
                WHERE t.id = $1""",
            tid,
        )
        if row is None:
            return _page("链接无效", "<p>没有找到这条预警。</p>", 404)
        head = html.escape(row["headline"])
        if row["confirmed_at"] is not None:
            return _page("已确认", f"<p>{head}</p><p>您已确认收到。</p>")
        return _page(
            "确认收到预警",
            f'<p class="notice">{head}</p><p>请确认您已收到这条预警，并按要求组织防范。</p>'
            "<form method=post><button type=submit>确认收到</button></form>",
        )

    @r.post("/confirm/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm_link(token: str, request: Request) -> HTMLResponse:
        tid = read_token(request.app.state.settings.confirm_secret, token)
        async with _pool(request).acquire() as conn, conn.transaction():
            await confirm_tasks(conn, [tid], "link", request.app.state.clock.now(), "link")
        return _page("已确认", "<p>您已确认收到预警，谢谢。</p>")

    @r.post(
        "/warnings/{warning_id}/confirmations", response_model=ConfirmOut, tags=["confirmations"]
    )
    async def confirm_for_person(
        warning_id: str,
        body: ConfirmIn,
        identity: Annotated[Identity, needs("confirmations:write")],
        request: Request,
    ) -> Any:
        """Confirms for a person (an app, or a duty officer who reached them by phone)."""
        pool = _pool(request)
        region = await pool.fetchval(
            "SELECT region_code FROM alerting.warnings WHERE id = $1", warning_id
        )
        if region is None or not identity.can_see_region(region):
            raise NotFound(f"no warning {warning_id!r}")
        async with pool.acquire() as conn, conn.transaction():
            ids = await conn.fetch(
                """SELECT id FROM alerting.confirm_tasks
                    WHERE warning_id = $1 AND person_id = $2""",
                warning_id,
                body.person_id,
            )
            if not ids:
                raise NotFound(f"person {body.person_id} has nothing to confirm on {warning_id}")
            done = await confirm_tasks(
                conn, [x["id"] for x in ids], "api", request.app.state.clock.now(), identity.subject
            )
        return {"confirmed": len(done)}

    @r.get("/confirmations/stats", response_model=list[ConfirmStat], tags=["confirmations"])
    async def get_confirm_stats(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        by: Literal["village", "township", "county"] = "township",
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        warning_id: str | None = None,
        since: Instant | None = None,
    ) -> Any:
        """叫应 rate and time-to-confirm per village, township or county."""
        digits = {"village": 12, "township": 9, "county": 6}[by]
        rows = await _pool(request).fetch(
            """SELECT rpad(left(region_code, $1), 12, '0') AS region_code,
                      count(*) AS required,
                      count(confirmed_at) AS confirmed,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY
                          extract(epoch FROM confirmed_at - created_at)) AS median_seconds,
                      percentile_cont(0.9) WITHIN GROUP (ORDER BY
                          extract(epoch FROM confirmed_at - created_at)) AS p90_seconds
                 FROM alerting.confirm_tasks
                WHERE region_code LIKE $2 || '%'
                  AND ($3::text IS NULL OR warning_id = $3)
                  AND ($4::timestamptz IS NULL OR created_at >= $4)
                GROUP BY 1 ORDER BY 1""",
            digits,
            identity.narrow(region_prefix),
            warning_id,
            since,
        )
        names = await request.app.state.places.describe_many({x["region_code"] for x in rows})
        return [
            {
                **dict(x.items()),
                "region_name": names[x["region_code"]].name,
                "rate": x["confirmed"] / x["required"] if x["required"] else None,
            }
            for x in rows
        ]

    @r.get(
        "/confirmations/unanswered-counties",
        response_model=list[UnansweredCounty],
        tags=["confirmations"],
    )
    async def list_unanswered_counties(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        older_than_s: Annotated[int, Query(ge=0, le=86400)] = 600,
    ) -> Any:
        """Counties with an open red warning older than ``older_than_s`` and not one confirmed
        response: the ones a higher level must prompt."""
        now = request.app.state.clock.now()
        rows = await _pool(request).fetch(
            """SELECT left(w.region_code, 6) || '000000' AS county_code,
                      array_agg(DISTINCT w.id ORDER BY w.id) AS warnings,
                      count(t.id) AS required, min(t.created_at) AS oldest
                 FROM alerting.warnings w
                 JOIN alerting.confirm_tasks t ON t.warning_id = w.id AND t.version = w.version
                WHERE w.state = ANY($3::text[]) AND w.level = 4
                  AND w.region_code LIKE $1 || '%'
                GROUP BY 1
               HAVING count(t.confirmed_at) = 0 AND min(t.created_at) <= $2
                ORDER BY 1""",
            identity.region_prefix,
            now - timedelta(seconds=older_than_s),
            list(STANDING),
        )
        names = await request.app.state.places.describe_many({x["county_code"] for x in rows})
        return [
            {
                **dict(x.items()),
                "county_name": names[x["county_code"]].name,
                "warnings": list(x["warnings"]),
            }
            for x in rows
        ]

    # -- provider callbacks ------------------------------------------------------------------

    def _check_callback(request: Request, token: str) -> None:
        expected = request.app.state.settings.callback_token
        if not expected or not hmac.compare_digest(token, expected):
            raise PermissionDenied("unknown callback")

    @r.post("/callbacks/{token}/tencent/sms-status", include_in_schema=False)
    async def tencent_status(token: str, request: Request) -> JSONResponse:
        """Tencent's delivery receipts: a JSON array of ``{mobile, report_status, errmsg, sid,
        user_receive_time, …}``."""
        _check_callback(request, token)
        items = await _json_list(request)
        receipts = [
            (
                str(i.get("sid", "")),
                None,
                i.get("report_status") == "SUCCESS",
                str(i.get("errmsg", "")),
            )
            for i in items
        ]
        await _apply_receipts(_pool(request), "tencent", receipts, request)
        return JSONResponse({"result": 0, "errmsg": "OK"})

    @r.post("/callbacks/{token}/tencent/sms-reply", include_in_schema=False)
    async def tencent_reply(token: str, request: Request) -> JSONResponse:
        """Tencent's uplink: ``{mobile, nationcode, text, sign, time, extend}``."""
        _check_callback(request, token)
        doc = await request.json()
        if isinstance(doc, dict):
            await _apply_reply(request, str(doc.get("mobile", "")), str(doc.get("text", "")))
        return JSONResponse({"result": 0, "errmsg": "OK"})

    @r.post("/callbacks/{token}/aliyun/sms-report", include_in_schema=False)
    async def aliyun_report(token: str, request: Request) -> JSONResponse:
        """Aliyun's SmsReport: ``[{phone_number, success, err_code, biz_id, out_id, …}]``."""
        _check_callback(request, token)
        items = await _json_list(request)
        receipts = [
            (
                str(i.get("biz_id", "")),
                str(i.get("phone_number", "")),
                bool(i.get("success")),
                str(i.get("err_code", "")),
            )
            for i in items
        ]
        await _apply_receipts(_pool(request), "aliyun", receipts, request)
        return JSONResponse({"code": 0, "msg": "接收成功"})

    @r.post("/callbacks/{token}/aliyun/sms-up", include_in_schema=False)
    async def aliyun_up(token: str, request: Request) -> JSONResponse:
        """Aliyun's SmsUp: ``[{phone_number, content, send_time, sign_name, dest_code, …}]``."""
        _check_callback(request, token)
        for i in await _json_list(request):
            await _apply_reply(request, str(i.get("phone_number", "")), str(i.get("content", "")))
        return JSONResponse({"code": 0, "msg": "接收成功"})

    return r


async def _json_list(request: Request) -> list[dict[str, Any]]:
    try:
        doc = await request.json()
    except ValueError as exc:
        raise ValidationFailed("the callback body is not JSON") from exc
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise ValidationFailed("the callback body is not a JSON array")
    return [i for i in doc if isinstance(i, dict)]


# a reply confirms when it starts with one of these (people answer 1, 收到, 确认, ok …)
CONFIRM_WORDS = ("1", "１", "收到", "确认", "已收到", "ok", "好")


def is_confirmation(text: str) -> bool:
    t = text.strip().lower()
    return t.startswith(CONFIRM_WORDS)


async def _apply_reply(request: Request, phone: str, text: str) -> None:
    if not phone or not is_confirmation(text):
        return
    async with _pool(request).acquire() as conn, conn.transaction():
        await confirm_by_phone(conn, phone, request.app.state.clock.now(), f"sms:{phone[-4:]}")


async def _apply_receipts(
    pool: asyncpg.Pool,
    provider: str,
    receipts: Sequence[tuple[str, str | None, bool, str]],
    request: Request,
) -> None:
    """Delivered receipts move ``sent`` rows to ``delivered``; failed ones to ``failed`` with the
    carrier's code. Aliyun refers to a batch and a number (``biz_id`` and the phone), Tencent to
    one message (``sid``, no phone)."""
    if not receipts:
        return
    await pool.execute(
        """UPDATE alerting.deliveries d
              SET state = CASE WHEN k.ok THEN 'delivered' ELSE 'failed' END,
                  delivered_at = CASE WHEN k.ok THEN $5::timestamptz END,
                  last_error = CASE WHEN k.ok THEN NULL ELSE 'carrier: ' || k.code END
             FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[]) AS k(ref, phone, ok, code)
            WHERE d.provider = $6 AND d.provider_ref = k.ref AND d.state = 'sent'
              AND (k.phone IS NULL
                   OR d.target IN (k.phone, '+86' || k.phone, substr(k.phone, 4)))""",
        [r[0] for r in receipts],
        [r[1] for r in receipts],
        [r[2] for r in receipts],
        [r[3] for r in receipts],
        request.app.state.clock.now(),
        provider,
    )
