"""SMS and voice: two SMS provider shapes with failover, and a text-to-speech voice call.

- :class:`AliyunSms`: Aliyun ``SendBatchSms`` (RPC style, HMAC-SHA1 signature v1.0), up to 100
  numbers per request, one template parameter set per number.
- :class:`TencentSms`: Tencent Cloud ``SendSms`` (API 3.0, TC3-HMAC-SHA256), up to 200 numbers
  per request sharing one template parameter set, one status per number.
- :class:`FailoverSms`: the ``sms`` channel. It sends through the primary and, when a whole
  request fails for a reason on the provider's side (5xx, timeout, system error, no balance,
  credentials refused), through the secondary; the primary then rests for a cool-down. A refusal
  of one number (an invalid or black-listed number) is the recipient's, not the provider's: it
  fails that number without failover.
- :class:`AliyunVoice`: Aliyun ``SingleCallByTts``, the 叫应 fallback.

Neither SMS provider is idempotent on its side, so each request carries our key (Aliyun
``OutId``, Tencent ``SessionContext``), derived from the ledger keys of its jobs, and the ledger
leases rows so that a request is repeated only after a crash between the send and the write.

The template on both providers is a single variable holding the text (``${content}`` on Aliyun,
``{1}`` on Tencent); the signature is added by the provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from services.alerting.adapters.channels import BatchChannel, DeliveryJob, Outcome, under
from services.alerting.adapters.channels.http import retriable_status
from services.alerting.domain.lifecycle import BEIJING
from services.alerting.domain.messages import sms_text, voice_text
from shared.errors import ProviderError


def transport_error(what: str, exc: httpx.HTTPError) -> ProviderError:
    """A request that never reached the provider is a plain failure; one that may have reached
    it (sent, then no answer) is ambiguous."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProviderError(f"{what} unreachable: {exc!r}", retriable=True)
    return ProviderError(f"{what} gave no answer: {exc!r}", retriable=True, ambiguous=True)


def job_text(job: DeliveryJob) -> str:
    if job.message is not None:
        return job.message
    return sms_text(job.alert, confirm=job.confirm)


def _pct(s: str) -> str:
    return quote(s, safe="-_.~")


def aliyun_signature(secret: str, method: str, params: dict[str, str]) -> str:
    """Aliyun RPC signature v1.0 over the sorted, percent-encoded query."""
    canon = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{_pct('/')}&{_pct(canon)}"
    mac = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


# Aliyun codes that are about the provider or our account, not the number: fail over
ALIYUN_PROVIDER_CODES = {
    "isp.SYSTEM_ERROR",
    "isp.RAM_PERMISSION_DENY",
    "isv.AMOUNT_NOT_ENOUGH",
    "isv.OUT_OF_SERVICE",
    "isv.ACCOUNT_ABNORMAL",
    "Throttling.User",
    "InvalidAccessKeyId.NotFound",
    "SignatureDoesNotMatch",
    "SignatureNonceUsed",
}


# refusals of one number that may pass later (its per-number frequency limit)
ALIYUN_RETRIABLE_NUMBER = {"isv.BUSINESS_LIMIT_CONTROL"}


class AliyunRpc:
    """Signed calls to an Aliyun RPC endpoint (``Action=…`` over POST form)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        version: str = "2017-05-25",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._endpoint = endpoint.rstrip("/") + "/"
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._version = version
        self._now = now

    async def call(self, action: str, params: dict[str, str], what: str) -> dict[str, Any]:
        p = {
            "Action": action,
            "Version": self._version,
            "Format": "JSON",
            "AccessKeyId": self._key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": self._now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "RegionId": "cn-hangzhou",
            **params,
        }
        p["Signature"] = aliyun_signature(self._secret, "POST", p)
        try:
            r = await self._client.post(self._endpoint, data=p)
        except httpx.HTTPError as exc:
            raise transport_error(what, exc) from exc
        try:
            doc: dict[str, Any] = r.json()
        except ValueError as exc:
            raise ProviderError(
                f"{what} answered HTTP {r.status_code}, not JSON", retriable=True
            ) from exc
        code = str(doc.get("Code", ""))
        if r.status_code >= 500 or code in ALIYUN_PROVIDER_CODES:
            raise ProviderError(
                f"{what} {code or r.status_code}: {doc.get('Message')}",
                retriable=True,
                provider_code=code or str(r.status_code),
            )
        if r.status_code >= 400 and not code:
            raise ProviderError(
                f"{what} answered HTTP {r.status_code}",
                retriable=retriable_status(r.status_code),
            )
        return doc


class AliyunSms:
    name = "sms"
    provider = "aliyun"
    max_batch = 100

    def __init__(self, rpc: AliyunRpc, *, sign_name: str, template_code: str) -> None:
        self._rpc = rpc
        self._sign = sign_name
        self._template = template_code

    async def send_batch(self, jobs: Sequence[DeliveryJob], key: str) -> list[Outcome]:
        doc = await self._rpc.call(
            "SendBatchSms",
            {
                "PhoneNumberJson": orjson.dumps([j.target for j in jobs]).decode(),
                "SignNameJson": orjson.dumps([self._sign] * len(jobs)).decode(),
                "TemplateCode": self._template,
                "TemplateParamJson": orjson.dumps(
                    [{"content": job_text(j)} for j in jobs]
                ).decode(),
                "OutId": key,
            },
            "aliyun sms",
        )
        code = str(doc.get("Code"))
        if code == "OK":
            ref = str(doc.get("BizId"))
            return [Outcome(provider=self.provider, provider_ref=ref) for _ in jobs]
        # a refusal of the request's content (a bad number, a template mismatch): with one
        # number, it is that number's; with several, try each alone so the good ones go out
        err = ProviderError(
            f"aliyun sms {code}: {doc.get('Message')}",
            retriable=code in ALIYUN_RETRIABLE_NUMBER,
            provider_code=code,
        )
        if len(jobs) == 1:
            return [Outcome(error=err, provider=self.provider)]
        out: list[Outcome] = []
        for i, j in enumerate(jobs):
            out.extend(await self.send_batch([j], f"{key}.{i}"))
        return out

    async def reconcile(
        self, jobs: Sequence[DeliveryJob], keys: Sequence[str], now: datetime
    ) -> list[Outcome | None]:
        """After a crash mid-send: did a message with our key reach each number?
        ``QuerySendDetails`` per number, today and yesterday (Beijing dates)."""
        out: list[Outcome | None] = []
        for j in jobs:
            found: Outcome | None = None
            for day in {
                now.astimezone(BEIJING).date(),
                (now - timedelta(days=1)).astimezone(BEIJING).date(),
            }:
                doc = await self._rpc.call(
                    "QuerySendDetails",
                    {
                        "PhoneNumber": j.target,
                        "SendDate": day.strftime("%Y%m%d"),
                        "PageSize": "50",
                        "CurrentPage": "1",
                    },
                    "aliyun sms query",
                )
                details = (doc.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
                for d in details:
                    out_id = str(d.get("OutId") or "")
                    if under(out_id, keys):
                        found = Outcome(
                            provider=self.provider, provider_ref=str(d.get("BizId") or "")
                        )
            out.append(found)
        return out


def tc3_string_to_sign(host: str, service: str, timestamp: int, payload: bytes) -> str:
    """Steps 1 and 2 of Tencent Cloud's signature v3: the canonical request of a JSON POST to
    ``/`` signing ``content-type`` and ``host``, and the string to sign over its hash."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:application/json; charset=utf-8\nhost:{host}\n",
            "content-type;host",
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    return "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )


def tc3_authorization(
    secret_id: str, secret_key: str, host: str, service: str, timestamp: int, payload: bytes
) -> str:
    """The ``Authorization`` header of Tencent Cloud API 3.0 (TC3-HMAC-SHA256)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = tc3_string_to_sign(host, service, timestamp, payload)

    def _h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = _h(_h(_h(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={sig}"
    )


# Tencent error codes of a whole request that a retry, or the other provider, may get through
TENCENT_PROVIDER_PREFIXES = (
    "InternalError",
    "RequestLimitExceeded",
    "LimitExceeded.AppDailyLimit",
    "FailedOperation.InsufficientBalanceInSmsPackage",
    "AuthFailure",
    "UnauthorizedOperation",
)
# per-number codes worth retrying later (the number's rate limits)
TENCENT_RETRIABLE_NUMBER = ("LimitExceeded.PhoneNumber", "InternalError")


class TencentSms:
    name = "sms"
    provider = "tencent"
    max_batch = 200

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        endpoint: str,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        sign_name: str,
        template_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._endpoint = endpoint.rstrip("/") + "/"
        self._host = httpx.URL(self._endpoint).host
        self._id = secret_id
        self._key = secret_key
        self._app = sdk_app_id
        self._sign = sign_name
        self._template = template_id
        self._clock = clock

    async def send_batch(self, jobs: Sequence[DeliveryJob], key: str) -> list[Outcome]:
        # one request carries one parameter set: send each distinct text as its own request
        by_text: dict[str, list[int]] = {}
        for i, j in enumerate(jobs):
            by_text.setdefault(job_text(j), []).append(i)
        out: list[Outcome] = [Outcome()] * len(jobs)
        for n, (text, idx) in enumerate(by_text.items()):
            results = await self._send([jobs[i] for i in idx], text, f"{key}.{n}")
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return out

    async def _send(self, jobs: list[DeliveryJob], text: str, key: str) -> list[Outcome]:
        numbers = [j.target if j.target.startswith("+") else f"+86{j.target}" for j in jobs]
        payload = orjson.dumps(
            {
                "PhoneNumberSet": numbers,
                "SmsSdkAppId": self._app,
                "SignName": self._sign,
                "TemplateId": self._template,
                "TemplateParamSet": [text],
                "SessionContext": key,
            }
        )
        resp = await self._call("SendSms", payload)
        if "Error" in resp:
            code = str(resp["Error"].get("Code"))
            msg = f"tencent sms {code}: {resp['Error'].get('Message')}"
            if code.startswith(TENCENT_PROVIDER_PREFIXES):
                raise ProviderError(msg, retriable=True, provider_code=code)
            err = ProviderError(msg, retriable=False, provider_code=code)
            return [Outcome(error=err, provider=self.provider) for _ in jobs]
        statuses = {s.get("PhoneNumber"): s for s in resp.get("SendStatusSet", [])}
        out = []
        for number in numbers:
            s = statuses.get(number)
            if s is None:
                err = ProviderError("tencent sms left the number out", retriable=True)
                out.append(Outcome(error=err, provider=self.provider))
            elif s.get("Code") == "Ok":
                out.append(Outcome(provider=self.provider, provider_ref=str(s.get("SerialNo"))))
            else:
                code = str(s.get("Code"))
                err = ProviderError(
                    f"tencent sms {code}: {s.get('Message')}",
                    retriable=code.startswith(TENCENT_RETRIABLE_NUMBER),
                    provider_code=code,
                )
                out.append(Outcome(error=err, provider=self.provider))
        return out

    async def _call(self, action: str, payload: bytes) -> dict[str, Any]:
        ts = int(self._clock())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Host": self._host,
            "X-TC-Action": action,
            "X-TC-Version": "2021-01-11",
            "X-TC-Timestamp": str(ts),
            "X-TC-Region": "ap-guangzhou",
            "Authorization": tc3_authorization(self._id, self._key, self._host, "sms", ts, payload),
        }
        try:
            r = await self._client.post(self._endpoint, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error("tencent sms", exc) from exc
        if r.status_code != 200:
            raise ProviderError(
                f"tencent sms answered HTTP {r.status_code}",
                retriable=True,
                provider_code=str(r.status_code),
            )
        try:
            resp: dict[str, Any] = r.json()["Response"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError("tencent sms answered an unknown shape", retriable=True) from exc
        return resp

    async def reconcile(
        self, jobs: Sequence[DeliveryJob], keys: Sequence[str], now: datetime
    ) -> list[Outcome | None]:
        """After a crash mid-send: ``PullSmsSendStatusByPhoneNumber`` for each number over the
        last day, looking for our ``SessionContext``."""
        out: list[Outcome | None] = []
        for j in jobs:
            number = j.target if j.target.startswith("+") else f"+86{j.target}"
            resp = await self._call(
                "PullSmsSendStatusByPhoneNumber",
                orjson.dumps(
                    {
                        "BeginTime": int(now.timestamp()) - 86400,
                        "EndTime": int(now.timestamp()) + 60,
                        "Offset": 0,
                        "Limit": 100,
                        "PhoneNumber": number,
                        "SmsSdkAppId": self._app,
                    }
                ),
            )
            if "Error" in resp:
                raise ProviderError(
                    f"tencent sms status query: {resp['Error'].get('Code')}", retriable=True
                )
            found: Outcome | None = None
            for s in resp.get("PullSmsSendStatusSet") or []:
                ctx = str(s.get("SessionContext") or "")
                if under(ctx, keys):
                    found = Outcome(provider=self.provider, provider_ref=str(s.get("SerialNo")))
            out.append(found)
        return out


class FailoverSms:
    """The ``sms`` channel: primary, then secondary when the primary fails as a provider."""

    name = "sms"

    def __init__(
        self,
        providers: Sequence[BatchChannel],
        *,
        cooldown_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise ValueError("at least one SMS provider")
        self._providers = list(providers)
        self._cooldown = cooldown_s
        self._monotonic = monotonic
        self._resting_until = [0.0] * len(self._providers)
        # batches are as large as the largest provider takes; a provider that takes fewer
        # gets them in parts
        self.max_batch = max(p.max_batch for p in self._providers)
        self.failovers = 0

    def _order(self) -> list[int]:
        now = self._monotonic()
        idx = list(range(len(self._providers)))
        # providers at rest go last, not away: with all of them failing, one still gets tried
        return sorted(idx, key=lambda i: (self._resting_until[i] > now, i))

    async def reconcile(
        self, jobs: Sequence[DeliveryJob], keys: Sequence[str], now: datetime
    ) -> list[Outcome | None]:
        """Which of ``jobs`` some provider already took under ``key`` (a send cut short by a
        crash). A provider that cannot answer counts as "not taken": the job is sent again."""
        found: list[Outcome | None] = [None] * len(jobs)
        for p in self._providers:
            missing = [i for i, f in enumerate(found) if f is None]
            if not missing:
                break
            try:
                answers = await p.reconcile([jobs[i] for i in missing], keys, now)
            except ProviderError:
                continue
            for i, a in zip(missing, answers, strict=True):
                found[i] = a
        return found

    async def send_batch(self, jobs: Sequence[DeliveryJob], key: str) -> list[Outcome]:
        """Each provider in turn takes what is left, in parts of its own size
        (``<key>.<provider>.<part>``); once a provider fails, the parts it has not taken go to
        the next. A part it did take is never offered to another."""
        out: list[Outcome | None] = [None] * len(jobs)
        left = list(range(len(jobs)))
        last: ProviderError | None = None
        for n, i in enumerate(self._order()):
            if not left:
                break
            if n:
                self.failovers += 1
            provider = self._providers[i]
            size = provider.max_batch
            untaken: list[int] = []
            for part, start in enumerate(range(0, len(left), size)):
                idx = left[start : start + size]
                if untaken:
                    untaken.extend(idx)
                    continue
                try:
                    got = await provider.send_batch([jobs[k] for k in idx], f"{key}.{i}.{part}")
                except ProviderError as exc:
                    if exc.ambiguous:
                        # the message may be out: another provider could send it twice
                        raise
                    last = exc
                    self._resting_until[i] = self._monotonic() + self._cooldown
                    untaken.extend(idx)
                    continue
                for k, o in zip(idx, got, strict=True):
                    out[k] = o
            left = untaken
        if left:
            assert last is not None
            for k in left:
                out[k] = Outcome(error=last)
        return [o if o is not None else Outcome(error=last) for o in out]


class AliyunVoice:
    """``SingleCallByTts``: reads the warning to the person who has not confirmed it."""

    name = "voice"

    def __init__(self, rpc: AliyunRpc, *, show_number: str, tts_code: str) -> None:
        self._rpc = rpc
        self._show = show_number
        self._tts = tts_code

    async def send(self, job: DeliveryJob) -> None:
        doc = await self._rpc.call(
            "SingleCallByTts",
            {
                "CalledShowNumber": self._show,
                "CalledNumber": job.target,
                "TtsCode": self._tts,
                "TtsParam": orjson.dumps({"content": voice_text(job.alert)}).decode(),
                "OutId": job.idempotency_key[:64],
            },
            "aliyun voice",
        )
        code = str(doc.get("Code"))
        if code != "OK":
            raise ProviderError(
                f"aliyun voice {code}: {doc.get('Message')}", retriable=False, provider_code=code
            )
