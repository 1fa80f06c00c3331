from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.alerting.domain.grouping import GroupPolicy
from services.alerting.domain.lifecycle import ExpiryPolicy
from services.alerting.domain.storm import StormPolicy
from shared.settings import ServiceSettings


class AlertingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QIANSHAO_ALERTING_", extra="ignore", frozen=True)

    port: int = 8003
    topic_prefix: str = ""
    consumer_group: str = "alerting"
    run_consumer: bool = True
    run_delivery: bool = True
    # a warning covers the stations of one region at this level of the division code
    group_admin_level: Literal["village", "township", "county"] = "township"
    # the issuing body's code on the national release system (GB/T 35965.1 profile): 14 digits,
    # ZZZZZZ the division (the county's 6-digit code), DDD the department, UUU the unit, XX a
    # serial, as the platform assigns them to the bureau; identifiers are
    # <sender code>_<Beijing time YYYYMMDDHHMISS>_<serial>
    sender_code: str = Field(default="11010100000000", pattern=r"^\d{14}$")
    sender_name: str = "Qianshao demo bureau"
    # ledger rows one delivery round claims, and rounds in flight at once per process: one
    # claims while the other waits on providers. Every claimed row is an update, and each claim
    # walks the due index past rows other rounds hold, so few large claims cost the database
    # least: a million-number broadcast took 94 s at 1,000 × 4 and 60 s at 10,000 × 2
    # (bench/alerting). Claims go by priority, so people's messages wait at most for a round.
    delivery_batch: int = Field(default=10_000, ge=1)
    delivery_concurrency: int = Field(default=50, ge=1)
    delivery_loops: int = Field(default=2, ge=1, le=32)
    # channels claimed and sent apart from the others, each group by loops of its own (and the
    # channels of no group by one more set): a provider that times out holds up its own lane,
    # never SMS to the people who must act
    delivery_lanes: list[list[str]] = Field(
        default_factory=lambda: [
            ["sms"],
            ["voice"],
            ["kafka"],
            ["webhook", "wecom_robot", "cap_push", "national_push"],
            ["wechat_mp", "wecom_app", "email"],
        ]
    )
    delivery_poll_s: float = 0.5
    delivery_timeout_s: float = 5.0
    max_attempts: int = Field(default=8, ge=1)
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    ambiguous_wait_s: float = 30.0
    lease_s: float = 60.0

    # risk events of a poll are decided in slices growing from 8 up to this many, each committed
    # on its own: the first warnings of a burst go out while later ones are still being decided
    consumer_slice: int = Field(default=200, ge=1)

    # drill mode: every warning created is a drill (CAP status Exercise), for drill recipients only
    drill: bool = False

    # 叫应: orange warnings need confirmation too (red always does)
    confirm_orange: bool = False
    confirm_voice_after_s: float = Field(default=600.0, gt=0)  # T1
    confirm_escalate_after_s: float = Field(default=1800.0, gt=0)  # T2
    confirm_sweep_s: float = Field(default=15.0, gt=0)
    # links in messages: <public base>/<token>; tokens are signed with this secret
    confirm_base_url: str | None = None
    confirm_secret: str = "dev-confirm-secret-change-me-before-real-use"  # noqa: S105

    # SMS: providers tried in this order ("aliyun", "tencent"); one without settings is skipped
    sms_providers: tuple[Literal["aliyun", "tencent"], ...] = ("aliyun", "tencent")
    sms_failover_cooldown_s: float = 60.0
    aliyun_endpoint: str | None = None  # https://dysmsapi.aliyuncs.com
    aliyun_voice_endpoint: str | None = None  # https://dyvmsapi.aliyuncs.com
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: str = ""
    aliyun_sign_name: str = "应急管理局"
    aliyun_template_code: str = ""
    aliyun_voice_show_number: str = ""
    aliyun_voice_tts_code: str = ""
    tencent_endpoint: str | None = None  # https://sms.tencentcloudapi.com
    tencent_secret_id: str = ""
    tencent_secret_key: str = ""
    tencent_sdk_app_id: str = ""
    tencent_sign_name: str = "应急管理局"
    tencent_template_id: str = ""

    def secret_fields(self) -> tuple[str, ...]:
        return ("internal_secret", "confirm_secret")

    # providers' callbacks (receipts, SMS replies) post to /v1/callbacks/<this token>/…;
    # empty refuses them all
    callback_token: str = ""

    # WeChat official account (template messages) and WeCom application messages
    wechat_base_url: str | None = None  # https://api.weixin.qq.com
    wechat_app_id: str = ""
    wechat_app_secret: str = ""
    wechat_template_id: str = ""
    wecom_base_url: str | None = None  # https://qyapi.weixin.qq.com
    wecom_corp_id: str = ""
    wecom_corp_secret: str = ""
    wecom_agent_id: int = 0

    # e-mail over SMTP
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "qianshao@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_start_tls: bool | None = None

    # public warnings: the levels whose publication needs an approver (default: all), and how
    # long a request may wait before it is escalated to the county's leaders
    approval_levels: tuple[Literal["blue", "yellow", "orange", "red"], ...] = (
        "blue",
        "yellow",
        "orange",
        "red",
    )
    approval_timeout_s: float = Field(default=600.0, gt=0)
    # officers' warnings: the levels at which issuing, updating or cancelling one needs a second
    # person's approval (four eyes)
    officer_approval_levels: tuple[Literal["blue", "yellow", "orange", "red"], ...] = (
        "orange",
        "red",
    )

    # group timers (seconds; see services.alerting.domain.grouping)
    group_wait_s: float = Field(default=0.0, ge=0)
    group_interval_s: float = Field(default=300.0, ge=0)
    repeat_interval_s: float = Field(default=14400.0, ge=0)
    flap_window_s: float = Field(default=1800.0, gt=0)
    flap_threshold: int = Field(default=4, ge=2)
    flap_hold_s: float = Field(default=900.0, ge=0)
    dispatch_sweep_s: float = Field(default=1.0, gt=0)
    # (source hazard, target hazard): an open source warning mutes lower target warnings in
    # the same region; the defaults let the consequence of the rain speak for it
    inhibit_rules: tuple[tuple[str, str], ...] = (
        ("flood", "rainstorm"),
        ("geohazard", "rainstorm"),
    )

    def group_policy(self) -> GroupPolicy:
        return GroupPolicy(
            group_wait=timedelta(seconds=self.group_wait_s),
            group_interval=timedelta(seconds=self.group_interval_s),
            repeat_interval=timedelta(seconds=self.repeat_interval_s),
            flap_window=timedelta(seconds=self.flap_window_s),
            flap_threshold=self.flap_threshold,
            flap_hold=timedelta(seconds=self.flap_hold_s),
        )

    # storm mode: at most this many messages per person and channel in the window; the rest
    # go out as one digest (0 turns it off; red and 叫应 messages are never held)
    storm_limit: int = Field(default=6, ge=0)
    storm_window_s: float = Field(default=3600.0, gt=0)

    # expiry (services.alerting.domain.lifecycle.expiry_action): each version's CAP expires is
    # its sent time + validity; a warning risk still backs is renewed (an Update) renew_ahead
    # before it runs out; one risk has not backed for evidence_timeout is expired when it runs
    # out. Risk re-announces standing levels every 900 s by default, so the timeout spans three
    # of them.
    warning_validity_s: float = Field(default=86_400.0, gt=0)
    renew_ahead_s: float = Field(default=1_800.0, ge=0)
    evidence_timeout_s: float = Field(default=2_700.0, gt=0)
    expiry_sweep_s: float = Field(default=60.0, gt=0)

    # feeds gone silent (stations.health.v1, risk's no_data): the enterprise's safety officer and
    # the region's duty officers are told; after this long still offline, the level above them
    feed_notices: bool = True
    feed_escalate_after_s: float = Field(default=7_200.0, gt=0)
    feed_sweep_s: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _renew_inside_validity(self) -> AlertingSettings:
        if self.renew_ahead_s >= self.warning_validity_s:
            raise ValueError("renew_ahead_s must be shorter than warning_validity_s")
        return self

    def expiry_policy(self) -> ExpiryPolicy:
        return ExpiryPolicy(
            validity=timedelta(seconds=self.warning_validity_s),
            renew_ahead=timedelta(seconds=self.renew_ahead_s),
            evidence_timeout=timedelta(seconds=self.evidence_timeout_s),
        )

    def storm_policy(self) -> StormPolicy:
        return StormPolicy(self.storm_limit, timedelta(seconds=self.storm_window_s))
