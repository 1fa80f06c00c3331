"""HTTP channels: a generic webhook signed with HMAC, and the WeCom group robot."""

from __future__ import annotations

import hashlib
import hmac
import time

import aiohttp
import httpx
import orjson

from services.alerting.adapters.channels import DeliveryJob
from shared.errors import ProviderError


def retriable_status(status: int) -> bool:
    return status == 408 or status == 429 or status >= 500


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel:
    """POSTs the warning version as JSON. Headers: ``Idempotency-Key`` (the ledger row's key, the
    same on every retry), ``X-Qianshao-Timestamp`` and, when the subscription has a secret,
    ``X-Qianshao-Signature: sha256=HMAC(secret, timestamp + "." + body)``."""

    name = "webhook"

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, job: DeliveryJob) -> None:
        body = orjson.dumps(job.alert.model_dump(mode="json"))
        await post_signed(self._session, job, body, "application/json", "webhook")


async def post_signed(
    session: aiohttp.ClientSession, job: DeliveryJob, body: bytes, content_type: str, what: str
) -> None:
    """POSTs ``body`` to the job's target with our idempotency key and, when the subscription
    has a secret, our HMAC signature; anything but 2xx is an error. On aiohttp's client
    directly: an endpoint post is the one request a burst makes per warning, and httpx's layer
    above aiohttp cost four times aiohttp's own CPU per request."""
    ts = str(int(time.time()))
    headers = {
        "Content-Type": content_type,
        "Idempotency-Key": job.idempotency_key,
        "X-Qianshao-Timestamp": ts,
    }
    if job.secret:
        headers["X-Qianshao-Signature"] = sign_webhook(job.secret, ts, body)
    try:
        async with session.post(job.target, data=body, headers=headers) as r:
            status = r.status
            await r.read()
    except TimeoutError as exc:
        raise ProviderError(f"{what} timed out: {exc!r}", retriable=True) from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(f"{what} unreachable: {exc!r}", retriable=True) from exc
    if status >= 300:
        raise ProviderError(
            f"{what} answered {status}",
            retriable=retriable_status(status),
            provider_code=str(status),
        )


# WeCom robot error codes after which a retry may succeed: system busy, frequency limits
WECOM_RETRIABLE = {-1, 45009, 45033}


class WeComRobotChannel:
    """The WeCom (企业微信) group robot: ``POST <webhook url>`` with
    ``{"msgtype": "text", "text": {"content": …}}``; success is ``{"errcode": 0}``."""

    name = "wecom_robot"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, job: DeliveryJob) -> None:
        a = job.alert
        prefix = "【演练】" if a.status == "Exercise" else ""
        content = f"{prefix}{a.headline}\n{a.description}\n编号：{a.identifier}"
        try:
            r = await self._client.post(
                job.target, json={"msgtype": "text", "text": {"content": content}}
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(f"wecom timed out: {exc!r}", retriable=True) from exc
        except httpx.TransportError as exc:
            raise ProviderError(f"wecom unreachable: {exc!r}", retriable=True) from exc
        if r.status_code != 200:
            raise ProviderError(
                f"wecom answered HTTP {r.status_code}", retriable=retriable_status(r.status_code)
            )
        try:
            doc = r.json()
            code = int(doc.get("errcode", -1))
        except (ValueError, AttributeError) as exc:
            raise ProviderError(
                "wecom answered something that is not JSON", retriable=True
            ) from exc
        if code != 0:
            raise ProviderError(
                f"wecom errcode {code}: {doc.get('errmsg')}",
                retriable=code in WECOM_RETRIABLE,
                provider_code=str(code),
            )
