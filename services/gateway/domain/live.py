"""Live updates for the console, decided without I/O: what a change notification says, who may
hear of it, and how it is written on an event stream (server-sent events)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

KINDS = frozenset({"warning", "request", "publication", "confirmation", "delivery", "resync"})


@dataclass(frozen=True)
class Change:
    """A committed change to warnings: which kind, the warnings it touched with their regions,
    and whether there were more than it lists (then anyone in a region may refetch)."""

    kind: str
    warnings: tuple[tuple[str, str], ...]
    more: bool = False

    def seen_by(self, region_prefix: str) -> Change | None:
        """What an operator of ``region_prefix`` hears of this change: the warnings within their
        region, or nothing when none is (``more`` passes on: they may hold one of those)."""
        if self.kind == "resync":
            return self
        mine = tuple(w for w in self.warnings if w[1].startswith(region_prefix))
        if not mine and not self.more:
            return None
        return Change(self.kind, mine, self.more)

    def as_sse(self, event_id: int) -> bytes:
        data = orjson.dumps(
            {"kind": self.kind, "warnings": [w for w, _ in self.warnings], "more": self.more}
        )
        return b"id: %d\nevent: change\ndata: %s\n\n" % (event_id, data)


RESYNC = Change("resync", ())


def parse(payload: str) -> Change | None:
    """A notification from alerting's triggers (``{"kind", "warnings": [{"id", "region"}],
    "more"}``); None for anything else on the channel."""
    try:
        doc = orjson.loads(payload)
        kind = doc["kind"]
        warnings = tuple((str(w["id"]), str(w["region"])) for w in doc.get("warnings") or ())
        more = bool(doc.get("more", False))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if kind not in KINDS:
        return None
    return Change(kind, warnings, more)


def heartbeat() -> bytes:
    """A comment line: keeps proxies from closing an idle stream, and tells a dead one."""
    return b": keep-alive\n\n"
