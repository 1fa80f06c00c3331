"""The states a warning, a version and a ledger row go through, as the schema spells them.

Each is a ``StrEnum``, so a member is the very text stored in its column and passed to asyncpg;
the tuples below are the sets the code asks about ("is this warning still standing?")."""

from __future__ import annotations

from enum import StrEnum


class WarningState(StrEnum):
    """``alerting.warnings.state``."""

    draft = "draft"
    pending_approval = "pending_approval"
    issued = "issued"  # its latest version is the Alert
    updated = "updated"  # its latest version is an Update
    cancelled = "cancelled"  # the all-clear: nothing stands any more
    expired = "expired"  # its time ran out with risk no longer backing it (not an all-clear)


# a group has at most one open warning (a partial unique index)
OPEN = (
    WarningState.draft,
    WarningState.pending_approval,
    WarningState.issued,
    WarningState.updated,
)
# issued and not yet over: what people have been (or are being) told stands
STANDING = (WarningState.issued, WarningState.updated)


class MsgType(StrEnum):
    """CAP ``msgType`` of a version."""

    Alert = "Alert"
    Update = "Update"
    Cancel = "Cancel"

    @property
    def state(self) -> WarningState:
        """The warning's state once this version is its latest."""
        return _STATE_AFTER[self]


_STATE_AFTER = {
    MsgType.Alert: WarningState.issued,
    MsgType.Update: WarningState.updated,
    MsgType.Cancel: WarningState.cancelled,
}


class Dispatch(StrEnum):
    """``alerting.warning_versions.dispatch``: whether a version went out to its recipients."""

    scheduled = "scheduled"  # waits for its group timer (``dispatch_at``)
    dispatched = "dispatched"  # its ledger rows were written when it was made
    released = "released"  # held back, then let go (a silence ended, the inhibitor went)
    silenced = "silenced"  # held back by a silence
    inhibited = "inhibited"  # held back by a higher warning of another hazard
    superseded = "superseded"  # a later version went out first; this one never will


TOLD = (Dispatch.dispatched, Dispatch.released)  # its recipients heard of it
HELD = (Dispatch.silenced, Dispatch.inhibited)
WAITING = (Dispatch.scheduled, *HELD)  # not out yet, and may still go


class Delivery(StrEnum):
    """``alerting.deliveries.state``: a ledger row."""

    queued = "queued"  # a resident's row in a broadcast batch, claimed with its batch
    pending = "pending"
    sending = "sending"  # claimed under a lease (or its provider's answer is not known)
    sent = "sent"
    delivered = "delivered"  # the provider's receipt said so
    failed = "failed"
    confirmed = "confirmed"
    held = "held"  # storm mode: waits for the person's digest
    digested = "digested"  # went out in a digest


class Purpose(StrEnum):
    """``alerting.deliveries.purpose``: what a ledger row is for."""

    warning = "warning"  # a version itself
    reminder = "reminder"  # 【持续】: an open warning said again
    digest = "digest"  # storm mode's 【汇总】 of held messages
    voice = "voice"  # 叫应: the call to someone who has not confirmed
    escalation = "escalation"  # 叫应: the notice to the next level up
    relay = "relay"  # someone else's warning, relayed
    expiry = "expiry"  # a warning expired: the duty officers are asked to check
    feed = "feed"  # a feed went offline, stays offline (escalation) or is back


# what storm mode counts against a person's limit
COUNTED = (Purpose.warning, Purpose.reminder, Purpose.digest, Purpose.feed)
