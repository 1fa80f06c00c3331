"""E-mail over SMTP (aiosmtplib).

The Message-ID is derived from the ledger's idempotency key, so a message sent again after a
crash carries the same id and mail systems that de-duplicate on it show it once. A refused
recipient or a 5xx reply is permanent; a 4xx reply or a connection failure may pass later.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from services.alerting.adapters.channels import DeliveryJob
from services.alerting.domain.messages import drill_prefix, full_text
from shared.errors import ProviderError


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._start_tls = start_tls
        self._timeout = timeout_s

    def message(self, job: DeliveryJob) -> EmailMessage:
        a = job.alert
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = job.target
        msg["Subject"] = f"{drill_prefix(a)}{a.headline}"
        msg["Date"] = formatdate(a.sent.timestamp())
        domain = self._sender.rsplit("@", 1)[-1].strip(">") or "localhost"
        digest = hashlib.sha256(job.idempotency_key.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<{digest}@{domain}>"
        msg["X-Qianshao-Idempotency-Key"] = job.idempotency_key
        msg["X-Qianshao-Warning"] = a.identifier
        body = job.message or full_text(a)
        if job.confirm_url:
            body += f"\n\n请点击确认收到：{job.confirm_url}"
        msg.set_content(body)
        return msg

    async def send(self, job: DeliveryJob) -> None:
        try:
            await aiosmtplib.send(
                self.message(job),
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._start_tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise ProviderError(f"smtp refused {job.target}: {exc}", retriable=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise ProviderError(
                f"smtp answered {exc.code}: {exc.message}",
                retriable=exc.code < 500,
                provider_code=str(exc.code),
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ProviderError(f"smtp failed: {exc!r}", retriable=True) from exc
