"""WeChat official-account template messages and WeCom (企业微信) application messages.

Both APIs take an ``access_token`` that the channel fetches with its credentials and keeps until
shortly before it expires. A token the platform calls invalid or expired (40001, 40014, 42001) is
dropped and fetched again, once, within the same send.

- WeChat: ``GET /cgi-bin/token?grant_type=client_credential&appid&secret``, then
  ``POST /cgi-bin/message/template/send?access_token=…`` with ``{touser, template_id, url,
  data}``; success is ``{"errcode": 0, "msgid": …}``. 43004: the person no longer follows the
  account, a permanent refusal.
- WeCom: ``GET /cgi-bin/gettoken?corpid&corpsecret``, then ``POST /cgi-bin/message/send?
  access_token=…`` with ``{touser, msgtype: "text", agentid, text: {content}}``; a user the
  platform does not know comes back in ``invaliduser``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import httpx

from services.alerting.adapters.channels import DeliveryJob
from services.alerting.domain.lifecycle import HAZARD_CN
from services.alerting.domain.messages import drill_prefix, full_text, what_to_do
from shared.contracts import Level
from shared.errors import ProviderError

BEIJING = timezone(timedelta(hours=8))
TOKEN_ERRORS = {40001, 40014, 42001}
# busy, frequency limits: a later attempt may pass
RETRIABLE = {-1, 45009, 45033, 45047}


class AccessToken:
    """A platform access token, fetched on demand and kept until a minute before it expires."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        params: dict[str, str],
        what: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._url = url
        self._params = params
        self._what = what
        self._monotonic = monotonic
        self._token: str | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    def drop(self, stale: str) -> None:
        """Forget ``stale``; a token fetched since by another send is kept."""
        if self._token == stale:
            self._token = None

    async def get(self) -> str:
        # one fetch at a time: WeChat invalidates the previous token when it issues a new one,
        # and both platforms cap the fetches per day
        async with self._lock:
            if self._token is not None and self._monotonic() < self._until:
                return self._token
            return await self._fetch()

    async def _fetch(self) -> str:
        doc = await call(self._client, "GET", self._url, self._what, params=self._params)
        token = doc.get("access_token")
        if not token:
            raise ProviderError(
                f"{self._what} token refused: {doc.get('errcode')} {doc.get('errmsg')}",
                retriable=False,
                provider_code=str(doc.get("errcode")),
            )
        self._token = str(token)
        self._until = self._monotonic() + max(60.0, float(doc.get("expires_in", 7200)) - 60.0)
        return self._token


async def call(
    client: httpx.AsyncClient, method: str, url: str, what: str, **kw: Any
) -> dict[str, Any]:
    try:
        r = await client.request(method, url, **kw)
    except httpx.TimeoutException as exc:
        raise ProviderError(f"{what} timed out: {exc!r}", retriable=True) from exc
    except httpx.TransportError as exc:
        raise ProviderError(f"{what} unreachable: {exc!r}", retriable=True) from exc
    if r.status_code != 200:
        raise ProviderError(f"{what} answered HTTP {r.status_code}", retriable=True)
    try:
        doc = r.json()
    except ValueError as exc:
        raise ProviderError(f"{what} answered something that is not JSON", retriable=True) from exc
    if not isinstance(doc, dict):
        raise ProviderError(f"{what} answered an unknown shape", retriable=True)
    return doc


class _TokenChannel:
    name = ""
    what = ""

    def __init__(self, client: httpx.AsyncClient, token: AccessToken, send_url: str) -> None:
        self._client = client
        self._token = token
        self._send_url = send_url

    def body(self, job: DeliveryJob) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, job: DeliveryJob, doc: dict[str, Any]) -> None:
        """Raise for a success that is not one (WeCom's ``invaliduser``)."""

    async def send(self, job: DeliveryJob) -> None:
        body = self.body(job)
        for attempt in (1, 2):
            token = await self._token.get()
            doc = await call(
                self._client,
                "POST",
                self._send_url,
                self.what,
                params={"access_token": token},
                json=body,
            )
            code = int(doc.get("errcode", -1))
            if code == 0:
                self.check(job, doc)
                return
            if code in TOKEN_ERRORS and attempt == 1:
                self._token.drop(token)
                continue
            raise ProviderError(
                f"{self.what} errcode {code}: {doc.get('errmsg')}",
                retriable=code in RETRIABLE or code in TOKEN_ERRORS,
                provider_code=str(code),
            )


class WeChatTemplateChannel(_TokenChannel):
    name = "wechat_mp"
    what = "wechat"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        app_id: str,
        app_secret: str,
        template_id: str,
    ) -> None:
        base = base_url.rstrip("/")
        token = AccessToken(
            client,
            f"{base}/cgi-bin/token",
            {"grant_type": "client_credential", "appid": app_id, "secret": app_secret},
            "wechat",
        )
        super().__init__(client, token, f"{base}/cgi-bin/message/template/send")
        self._template = template_id

    def body(self, job: DeliveryJob) -> dict[str, Any]:
        a = job.alert
        level = Level.parse(a.level)
        doc: dict[str, Any] = {
            "touser": job.target,
            "template_id": self._template,
            "data": {
                "first": {"value": f"{drill_prefix(a)}{a.headline}"},
                "keyword1": {"value": f"{HAZARD_CN.get(a.hazard, a.hazard)}{level.chinese}预警"},
                "keyword2": {"value": a.sent.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")},
                "keyword3": {"value": a.identifier},
                "remark": {
                    "value": what_to_do(a) + ("请点击确认收到。" if job.confirm_url else "")
                },
            },
        }
        if job.confirm_url:
            doc["url"] = job.confirm_url
        return doc


class WeComAppChannel(_TokenChannel):
    name = "wecom_app"
    what = "wecom app"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        corp_id: str,
        corp_secret: str,
        agent_id: int,
    ) -> None:
        base = base_url.rstrip("/")
        token = AccessToken(
            client,
            f"{base}/cgi-bin/gettoken",
            {"corpid": corp_id, "corpsecret": corp_secret},
            "wecom app",
        )
        super().__init__(client, token, f"{base}/cgi-bin/message/send")
        self._agent = agent_id

    def body(self, job: DeliveryJob) -> dict[str, Any]:
        text = job.message or full_text(job.alert)
        if job.confirm_url:
            text += f"\n确认收到：{job.confirm_url}"
        return {
            "touser": job.target,
            "msgtype": "text",
            "agentid": self._agent,
            "text": {"content": text},
            "enable_duplicate_check": 1,
            "duplicate_check_interval": 1800,
        }

    def check(self, job: DeliveryJob, doc: dict[str, Any]) -> None:
        invalid = str(doc.get("invaliduser") or "")
        if job.target in invalid.split("|"):
            raise ProviderError(
                f"wecom app does not know user {job.target!r}",
                retriable=False,
                provider_code="invaliduser",
            )
