"""Local stand-ins for the SMS and voice providers, speaking their request and response shapes.

- Aliyun RPC (``POST /aliyun/`` form-encoded, HMAC-SHA1 signature checked):
  ``SendBatchSms`` answers ``{"Code": "OK", "BizId": …, "RequestId": …}``; ``SingleCallByTts``
  answers ``{"Code": "OK", "CallId": …}``.
- Tencent Cloud API 3.0 (``POST /tencent/``, TC3-HMAC-SHA256 checked): ``SendSms`` answers
  ``{"Response": {"SendStatusSet": [...], "RequestId": …}}``, one status per number.

Knobs on :class:`SmsState`, per provider: ``down`` (HTTP 503), ``slow_s`` (sleep before answering,
for timeouts), ``error_code`` (a provider error for the whole request), and ``bad_numbers``
(refused one by one). Each provider posts delivery receipts to ``receipt_url`` when set, in its
own callback shape. Every number a message went to is counted, so a test can assert "exactly
once per person".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.alerting.adapters.channels.sms import aliyun_signature, tc3_authorization
from services.alerting.domain.lifecycle import BEIJING
from services.alerting.domain.messages import sms_segments

log = logging.getLogger("fakeproviders")

ALIYUN_KEY_ID = "fake-aliyun-key"
ALIYUN_SECRET = "fake-aliyun-secret"  # noqa: S105 - a local stand-in's credential
TENCENT_SECRET_ID = "fake-tencent-id"  # noqa: S105
TENCENT_SECRET_KEY = "fake-tencent-key"  # noqa: S105


@dataclass
class ProviderKnobs:
    down: bool = False
    slow_s: float = 0.0
    error_code: str | None = None
    bad_numbers: set[str] = field(default_factory=set)
    receipt_url: str | None = None
    requests: int = 0


@dataclass
class SmsState:
    aliyun: ProviderKnobs = field(default_factory=ProviderKnobs)
    tencent: ProviderKnobs = field(default_factory=ProviderKnobs)
    # (provider, number) → messages accepted; texts kept for the last ``keep`` messages
    received: Counter[tuple[str, str]] = field(default_factory=Counter)
    texts: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    keep: int = 10_000
    # number → (provider, request key, reference, text, time) of each message, for the status
    # queries; a load test with a million numbers turns it off
    log: dict[str, list[tuple[str, str, str, str, datetime]]] = field(default_factory=dict)
    keep_log: bool = True
    # called with each message received (the demo prints them)
    on_text: Callable[[dict[str, Any]], None] | None = None
    segments: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def per_number(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_, number), n in self.received.items():
            out[number] += n
        return out

    def record(
        self,
        provider: str,
        numbers: list[str],
        text: str,
        key: str = "",
        refs: list[str] | None = None,
    ) -> None:
        sent = datetime.now(UTC)
        received = self.received
        for n in numbers:
            received[(provider, n)] += 1
        if self.keep_log:
            for n, ref in zip(numbers, refs or [""] * len(numbers), strict=True):
                self.log.setdefault(n, []).append((provider, key, ref, text, sent))
        self.segments += sms_segments(text) * len(numbers)
        entry = {
            "provider": provider,
            "numbers": numbers if len(numbers) <= 10 else [*numbers[:10], "…"],
            "text": text,
            "received_at": sent.isoformat(),
        }
        self.texts.append(entry)
        if self.on_text is not None:
            self.on_text(entry)
        if len(self.texts) > 2 * self.keep:
            del self.texts[: self.keep]

    def later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# Tencent serial numbers: unique within the process, cheap enough for a million numbers
_serials = itertools.count(10**27 + int(time.time() * 1000) * 10**9)


def _digits(number: str) -> str:
    return number.removeprefix("+86") if number.startswith("+86") else number


async def _post(url: str, body: Any) -> None:
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            await c.post(
                url, content=orjson.dumps(body), headers={"content-type": "application/json"}
            )
    except httpx.HTTPError as exc:
        log.warning("receipt post failed: %r", exc)


async def _knobs_gate(k: ProviderKnobs, sending: bool) -> Response | None:
    """Down answers 503; slow delays sends (queries answer at once)."""
    k.requests += 1
    if k.slow_s and sending:
        await asyncio.sleep(k.slow_s)
    if k.down:
        return JSONResponse({"message": "service unavailable"}, status_code=503)
    return None


def router(state: SmsState) -> APIRouter:
    r = APIRouter()

    @r.post("/aliyun/")
    async def aliyun(request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        k = state.aliyun
        gate = await _knobs_gate(k, params.get("Action") == "SendBatchSms")
        if gate is not None:
            return gate
        rid = str(uuid.uuid4()).upper()
        sig = params.pop("Signature", "")
        if params.get("AccessKeyId") != ALIYUN_KEY_ID:
            return JSONResponse(
                {
                    "Code": "InvalidAccessKeyId.NotFound",
                    "Message": "Specified access key is not found.",
                    "RequestId": rid,
                },
                status_code=404,
            )
        if sig != aliyun_signature(ALIYUN_SECRET, "POST", params):
            return JSONResponse(
                {
                    "Code": "SignatureDoesNotMatch",
                    "Message": "Specified signature is not matched with our calculation.",
                    "RequestId": rid,
                },
                status_code=400,
            )
        if k.error_code:
            return JSONResponse(
                {"Code": k.error_code, "Message": "fake provider error", "RequestId": rid}
            )
        action = params.get("Action")
        if action == "QuerySendDetails":
            number = _digits(params.get("PhoneNumber", ""))
            day = params.get("SendDate", "")
            found = [
                {
                    "PhoneNum": number,
                    "SendStatus": 3,
                    "ErrCode": "DELIVERED",
                    "TemplateCode": "",
                    "Content": text,
                    "SendDate": at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                    "ReceiveDate": at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                    "OutId": key,
                }
                for provider, key, _, text, at in state.log.get(number, [])
                if provider == "aliyun" and at.astimezone(BEIJING).strftime("%Y%m%d") == day
            ]
            return JSONResponse(
                {
                    "Code": "OK",
                    "Message": "OK",
                    "RequestId": rid,
                    "TotalCount": len(found),
                    "SmsSendDetailDTOs": {"SmsSendDetailDTO": found},
                }
            )
        if action == "SingleCallByTts":
            number = params.get("CalledNumber", "")
            call_id = f"{uuid.uuid4().int % 10**9}^{uuid.uuid4().int % 10**11}"
            state.calls.append(
                {
                    "number": number,
                    "tts": orjson.loads(params.get("TtsParam", "{}")),
                    "out_id": params.get("OutId"),
                }
            )
            return JSONResponse(
                {"Code": "OK", "Message": "OK", "CallId": call_id, "RequestId": rid}
            )
        if action != "SendBatchSms":
            return JSONResponse(
                {"Code": "InvalidAction.NotFound", "Message": action, "RequestId": rid},
                status_code=404,
            )
        try:
            numbers = orjson.loads(params["PhoneNumberJson"])
            signs = orjson.loads(params["SignNameJson"])
            tparams = orjson.loads(params.get("TemplateParamJson", "[]"))
        except (KeyError, orjson.JSONDecodeError):
            return JSONResponse(
                {"Code": "isv.INVALID_JSON_PARAM", "Message": "JSON参数不合法", "RequestId": rid}
            )
        if not (len(numbers) == len(signs) == len(tparams)) or not 1 <= len(numbers) <= 100:
            return JSONResponse(
                {"Code": "isv.INVALID_PARAMETERS", "Message": "参数异常", "RequestId": rid}
            )
        bad = [n for n in numbers if _digits(n) in k.bad_numbers]
        if bad:
            return JSONResponse(
                {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": rid}
            )
        biz_id = f"{uuid.uuid4().int % 10**15}^0"
        by_text: dict[str, list[str]] = {}
        for n, s, p in zip(numbers, signs, tparams, strict=True):
            by_text.setdefault(f"【{s}】{p.get('content', '')}", []).append(_digits(n))
        for text, nums in by_text.items():
            state.record("aliyun", nums, text, params.get("OutId", ""), [biz_id] * len(nums))
        if k.receipt_url:
            now = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            state.later(
                _post(
                    k.receipt_url,
                    [
                        {
                            "phone_number": _digits(n),
                            "send_time": now,
                            "report_time": now,
                            "success": True,
                            "err_code": "DELIVERED",
                            "err_msg": "用户接收成功",
                            "sms_size": "1",
                            "biz_id": biz_id,
                            "out_id": params.get("OutId", ""),
                        }
                        for n in numbers
                    ],
                )
            )
        return JSONResponse({"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": rid})

    @r.post("/tencent/")
    async def tencent(request: Request) -> Response:
        body = await request.body()
        k = state.tencent
        gate = await _knobs_gate(k, request.headers.get("x-tc-action") == "SendSms")
        if gate is not None:
            return gate
        rid = str(uuid.uuid4())

        def error(code: str, message: str) -> JSONResponse:
            return JSONResponse(
                {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": rid}}
            )

        try:
            ts = int(request.headers.get("x-tc-timestamp", ""))
        except ValueError:
            return error("AuthFailure.InvalidAuthorization", "timestamp missing")
        expected = tc3_authorization(
            TENCENT_SECRET_ID, TENCENT_SECRET_KEY, request.headers.get("host", ""), "sms", ts, body
        )
        if request.headers.get("authorization") != expected:
            return error(
                "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
            )
        action = request.headers.get("x-tc-action")
        if action == "PullSmsSendStatusByPhoneNumber":
            q = orjson.loads(body)
            number = _digits(str(q.get("PhoneNumber", "")))
            begin, end = int(q.get("BeginTime", 0)), int(q.get("EndTime", 2**40))
            items = [
                {
                    "UserReceiveTime": int(at.timestamp()),
                    "CountryCode": "86",
                    "SubscriberNumber": number,
                    "PhoneNumber": f"+86{number}",
                    "SerialNo": ref,
                    "ReportStatus": "SUCCESS",
                    "Description": "DELIVRD",
                    "SessionContext": key,
                }
                for provider, key, ref, _, at in state.log.get(number, [])
                if provider == "tencent" and begin <= at.timestamp() <= end
            ]
            return JSONResponse(
                {
                    "Response": {
                        "PullSmsSendStatusSet": items[: int(q.get("Limit", 100))],
                        "RequestId": rid,
                    }
                }
            )
        if action != "SendSms":
            return error("InvalidAction", "action not found")
        if k.error_code:
            return error(k.error_code, "fake provider error")
        try:
            doc = orjson.loads(body)
            numbers: list[str] = doc["PhoneNumberSet"]
            tparams: list[str] = doc.get("TemplateParamSet", [])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error("InvalidParameter", "bad request body")
        if not 1 <= len(numbers) <= 200:
            return error("LimitExceeded.PhoneNumberCountLimit", "at most 200 numbers")
        text = f"【{doc.get('SignName', '')}】{tparams[0] if tparams else ''}"
        statuses = []
        good = []
        for n in numbers:
            if _digits(n) in k.bad_numbers:
                statuses.append(
                    {
                        "SerialNo": "",
                        "PhoneNumber": n,
                        "Fee": 0,
                        "SessionContext": doc.get("SessionContext", ""),
                        "Code": "InvalidParameterValue.IncorrectPhoneNumber",
                        "Message": "incorrect number",
                        "IsoCode": "CN",
                    }
                )
                continue
            serial = f"5000:{next(_serials)}"
            good.append((n, serial))
            statuses.append(
                {
                    "SerialNo": serial,
                    "PhoneNumber": n,
                    "Fee": sms_segments(text),
                    "SessionContext": doc.get("SessionContext", ""),
                    "Code": "Ok",
                    "Message": "send success",
                    "IsoCode": "CN",
                }
            )
        state.record(
            "tencent",
            [_digits(n) for n, _ in good],
            text,
            str(doc.get("SessionContext", "")),
            [serial for _, serial in good],
        )
        if k.receipt_url and good:
            now = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            state.later(
                _post(
                    k.receipt_url,
                    [
                        {
                            "user_receive_time": now,
                            "nationcode": "86",
                            "mobile": _digits(n),
                            "report_status": "SUCCESS",
                            "errmsg": "DELIVRD",
                            "description": "用户短信送达成功",
                            "sid": serial,
                        }
                        for n, serial in good
                    ],
                )
            )
        return Response(
            orjson.dumps({"Response": {"SendStatusSet": statuses, "RequestId": rid}}),
            media_type="application/json",
        )

    @r.get("/sms/stats")
    async def stats() -> JSONResponse:
        """Totals, cheap enough to poll during a load test."""
        return JSONResponse(
            {
                "messages": sum(state.received.values()),
                "numbers": len(state.received),
                "requests": {"aliyun": state.aliyun.requests, "tencent": state.tencent.requests},
                "segments": state.segments,
                "last": state.texts[-1] if state.texts else None,
            }
        )

    @r.get("/sms/received")
    async def received() -> JSONResponse:
        return JSONResponse(
            {
                "per_number": dict(state.per_number()),
                "texts": state.texts[-200:],
                "calls": state.calls[-200:],
                "segments": state.segments,
            }
        )

    return r
