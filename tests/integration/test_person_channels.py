"""WeChat, WeCom and e-mail to people: the stand-ins of the two platforms (tokens, expiry,
refusals) and a real local SMTP server, driven by a warning that went over the real broker."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import Message as MailMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.alerting.app import create_app as alerting_app
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakewechat import (
    WECHAT_APP_ID,
    WECHAT_APP_SECRET,
    WECOM_CORP_ID,
    WECOM_CORP_SECRET,
    WeChatState,
)
from shared.devstack.inprocess import serve
from shared.devstack.procs import free_port
from tests.helpers import eventually
from tests.integration.test_call_confirm import admin, risk_event, settings
from tests.kafka_util import produce


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[MailMessage] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


async def test_wechat_wecom_and_email_with_links_token_expiry_and_refusals(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    wechat = WeChatState()
    wechat.unfollowed = {"o-gone"}
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        async with serve(fake_app(wechat=wechat)) as fake:
            app = alerting_app(
                settings(
                    database,
                    broker,
                    topic_prefix,
                    fake,
                    wechat_base_url=fake,
                    wechat_app_id=WECHAT_APP_ID,
                    wechat_app_secret=WECHAT_APP_SECRET,
                    wechat_template_id="TPL-WARNING",
                    wecom_base_url=fake,
                    wecom_corp_id=WECOM_CORP_ID,
                    wecom_corp_secret=WECOM_CORP_SECRET,
                    wecom_agent_id=1000002,
                    smtp_host="127.0.0.1",
                    smtp_port=smtp.port,
                    smtp_sender="预警 <warnings@bureau.example>",
                ),
                clock=clock,
            )
            async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
                everything = [{"channels": ["wechat_mp", "wecom_app", "email"]}]
                people = [
                    {
                        "name": "村干部甲",
                        "role": "village_cadre",
                        "region_code": "110101001001",
                        "wechat_openid": "o-cadre",
                        "wecom_userid": "cadre",
                        "email": "cadre@village.example",
                        "subscriptions": everything,
                    },
                    {
                        "name": "离开的人",
                        "role": "grid_worker",
                        "region_code": "110101001002",
                        "wechat_openid": "o-gone",
                        "wecom_userid": "gone",
                        "email": "nobody@village.example",
                        "subscriptions": everything,
                    },
                ]
                for body in people:
                    r = await http.post("/v1/persons", json=body, headers=admin(clock))
                    assert r.status_code == 201, r.text
                wechat.unknown_users = {"gone"}
                topics = Topics(topic_prefix)
                await produce(
                    broker.bootstrap,
                    topics.risk_events,
                    [("RG1", risk_event(1, "red", "none", clock.now()))],
                )
                pool = app.state.runtime.pool

                async def settled(version: int) -> Any:
                    rows = await pool.fetch(
                        """SELECT target, channel, state, attempts, last_error
                             FROM alerting.deliveries
                            WHERE version = $1 AND channel <> 'kafka' ORDER BY target""",
                        version,
                    )
                    done = len(rows) == 6 and all(r["state"] in ("sent", "failed") for r in rows)
                    return rows if done else None

                rows = await eventually(lambda: settled(1), what="version 1 settled")
                state = {(r["target"], r["channel"]): r for r in rows}
                for target, channel in (
                    ("o-cadre", "wechat_mp"),
                    ("cadre", "wecom_app"),
                    ("cadre@village.example", "email"),
                ):
                    assert state[(target, channel)]["state"] == "sent"
                # refusals of a person are permanent: one attempt each
                for target, channel, reason in (
                    ("o-gone", "wechat_mp", "43004"),
                    ("gone", "wecom_app", "does not know user"),
                    ("nobody@village.example", "email", "550"),
                ):
                    row = state[(target, channel)]
                    assert (row["state"], row["attempts"]) == ("failed", 1)
                    assert reason in row["last_error"]

                (tpl,) = wechat.template_messages
                assert tpl["touser"] == "o-cadre"
                assert tpl["template_id"] == "TPL-WARNING"
                assert "暴雨红色预警" in tpl["data"]["first"]["value"]
                link = tpl["url"]
                (app_msg,) = wechat.app_messages
                assert app_msg["agentid"] == 1000002
                assert f"确认收到：{link}" in app_msg["text"]["content"]
                (mail,) = mailbox.messages
                assert mail["To"] == "cadre@village.example"
                assert "暴雨红色预警" in str(
                    email.header.make_header(email.header.decode_header(mail["Subject"]))
                )
                first_id = mail["Message-ID"]
                assert mail["X-Qianshao-Idempotency-Key"].startswith("1:")
                body = mail.get_payload(decode=True).decode()
                assert link in body
                assert wechat.token_requests == 2  # one token each, reused

                # the link in the message confirms, through its path
                path = "/v1/confirm/" + link.rsplit("/", 1)[1]
                assert (await http.post(path)).status_code == 200
                assert (
                    await pool.fetchval(
                        "SELECT confirmed_via FROM alerting.confirm_tasks WHERE person_id = 1"
                    )
                    == "link"
                )

                # tokens expire; the channels fetch new ones and send the cancellation
                wechat.expire_tokens()
                await produce(
                    broker.bootstrap,
                    topics.risk_events,
                    [("RG1", risk_event(2, "none", "red", clock.now()))],
                )
                rows2 = await eventually(lambda: settled(2), what="version 2 settled")
                sent2 = {(r["target"], r["channel"]) for r in rows2 if r["state"] == "sent"}
                assert sent2 == {
                    ("o-cadre", "wechat_mp"),
                    ("cadre", "wecom_app"),
                    ("cadre@village.example", "email"),
                }
                assert wechat.token_requests == 4
                assert len(wechat.template_messages) == 2
                assert "url" not in wechat.template_messages[1]  # nothing to confirm
                assert mailbox.messages[1]["Message-ID"] != first_id
    finally:
        smtp.stop()
