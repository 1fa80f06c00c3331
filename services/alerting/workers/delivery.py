"""The delivery worker: drains the ledger.

    claim due rows (pending, or sending with an expired lease) ─▶ send, bounded concurrency
        ─▶ sent | pending again with backoff | failed after the last attempt

Claiming sets ``state='sending'`` with a lease in one statement (``FOR UPDATE SKIP LOCKED``), so
several replicas share the ledger without sending a row twice. A worker that dies mid-send leaves
its rows leased; they are claimed again when the lease expires, with the same idempotency key, so
the provider can recognise the repeat.

A resident broadcast's rows are 'queued' in batches of one request each (services/alerting/
publish.py): a round claims those batches the same way (lease, request names) with the room its
rows left, sends each as one request, and updates the batch's rows once — sent, or out into the
ordinary retry path above carrying the batch's attempts and request names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from services.alerting.adapters import ledger
from services.alerting.adapters.channels import BatchChannel, Channel, DeliveryJob, Outcome
from services.alerting.adapters.publications import BROADCAST_BATCH
from services.alerting.adapters.versions import load_versions
from services.alerting.domain.confirm import make_token
from shared.clock import Clock
from shared.contracts import AlertVersion
from shared.errors import ProviderError

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "qianshao_deliveries_total", "Delivery attempts by channel and result", ["channel", "result"]
)
SEND_SECONDS = Histogram(
    "qianshao_delivery_send_duration_seconds",
    "Time a provider took to accept a message",
    ["channel"],
)
RECONCILED = Counter(
    "qianshao_delivery_reconciled_total",
    "Rows of a send cut short by a crash: found at the provider, or sent again",
    ["channel", "result"],
)
READING_TO_DELIVERY = Histogram(
    "qianshao_reading_to_delivery_duration_seconds",
    "From the reading behind a warning version being taken to a provider accepting the version",
    ["channel"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
END_TO_END = Histogram(
    "qianshao_warning_delivery_duration_seconds",
    "From the warning version being created to the provider accepting it",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


# channels whose messages carry a confirmation link (an SMS is confirmed by replying)
LINK_CHANNELS = frozenset({"wechat_mp", "wecom_app", "email"})


class _Marks:
    """A round's rows sent one by one, marked sent ``size`` at a time in one statement per
    channel (and the rest when the round ends), not one update and commit each."""

    def __init__(
        self,
        mark: Callable[[str, Sequence[tuple[DeliveryJob, Outcome]]], Awaitable[None]],
        size: int = 200,
    ) -> None:
        self._mark = mark
        self._size = size
        self._sent: dict[str, list[tuple[DeliveryJob, Outcome]]] = {}

    async def add(self, channel: str, job: DeliveryJob) -> None:
        rows = self._sent.setdefault(channel, [])
        rows.append((job, Outcome()))
        if len(rows) >= self._size:
            await self._mark(channel, self._sent.pop(channel))

    async def flush(self) -> None:
        while self._sent:
            channel, rows = self._sent.popitem()
            await self._mark(channel, rows)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 1.0
    cap_s: float = 300.0
    # after an ambiguous failure, how long to let the provider finish before asking it
    ambiguous_wait_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter, capped."""
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


class DeliveryWorker:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        channels: Mapping[str, Channel],
        clock: Clock,
        policy: RetryPolicy,
        batch: int = 200,
        concurrency: int = 50,
        poll_s: float = 0.5,
        lease_s: float = 60.0,
        rng: random.Random | None = None,
        batch_channels: Mapping[str, BatchChannel] | None = None,
        confirm_base_url: str | None = None,
        confirm_secret: str = "",
        loops: int = 1,
        lanes: Sequence[ledger.Lane] = (),
    ) -> None:
        self._pool = pool
        self._channels = channels
        self._clock = clock
        self._policy = policy
        self._batch = batch
        self._concurrency = concurrency
        self._sems: dict[str, asyncio.Semaphore] = {}  # per channel: none starves another
        self._poll_s = poll_s
        self._lease = timedelta(seconds=lease_s)
        self._rng = rng or random.Random()
        self._batch_channels = dict(batch_channels or {})
        self._confirm_base = confirm_base_url.rstrip("/") if confirm_base_url else None
        self._confirm_secret = confirm_secret
        self._loops = loops
        self._lanes: list[ledger.Lane | None] = list(lanes) or [None]
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _sem(self, channel: str) -> asyncio.Semaphore:
        sem = self._sems.get(channel)
        if sem is None:
            sem = self._sems[channel] = asyncio.Semaphore(self._concurrency)
        return sem

    async def run(self) -> None:
        """In each lane, ``loops`` rounds in flight at once: one claims while another waits on
        a provider; a lane's slow provider holds up that lane only."""
        await asyncio.gather(
            *(self._loop(lane) for lane in self._lanes for _ in range(self._loops))
        )

    async def _loop(self, lane: ledger.Lane | None) -> None:
        while not self._stopping.is_set():
            try:
                n = await self.run_once(lane)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("delivery round failed; retrying", extra={"error": repr(exc)})
                n = 0
            if n:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def run_once(self, lane: ledger.Lane | None = None) -> int:
        """One round: claim what is due (of ``lane``'s channels; all without one), send it,
        mark it."""
        now = self._clock.now()
        claim = uuid.uuid4().hex[:20]
        # every provider request of this round is named "<claim>.<channel>.<n>"
        rows = await ledger.claim(
            self._pool,
            "deliveries",
            now=now,
            lease=self._lease,
            limit=self._batch,
            claim_id=claim,
            lane=lane,
        )
        room = self._batch - len(rows)
        batches = await self._claim_batches(now, claim, room, lane) if room > 0 else []
        if not rows and not batches:
            return 0
        members = await self._batch_rows([b["id"] for b in batches])
        alerts = await self._load_alerts(
            {(r["warning_id"], r["version"]) for r in (*rows, *members)}
        )
        secrets = await self._load_secrets({r["recipient"] for r in rows})
        tasks = await self._load_confirm_tasks(rows)
        singles: list[tuple[DeliveryJob, str, int]] = []
        by_channel: dict[str, list[tuple[DeliveryJob, int]]] = {}
        interrupted: dict[tuple[str, tuple[str, ...]], list[tuple[DeliveryJob, int]]] = {}
        for r in rows:
            job = DeliveryJob(
                delivery_id=r["id"],
                idempotency_key=r["idempotency_key"],
                recipient=r["recipient"],
                target=r["target"],
                secret=secrets.get(r["recipient"]),
                alert=alerts[(r["warning_id"], r["version"])],
                message=r["message"],
                confirm=r["id"] in tasks,
                confirm_url=self._confirm_url(r["channel"], tasks.get(r["id"])),
            )
            if r["channel"] in self._batch_channels:
                if r["was"] == "sending" and r["old_keys"]:
                    interrupted.setdefault((r["channel"], tuple(r["old_keys"])), []).append(
                        (job, r["attempts"])
                    )
                else:
                    by_channel.setdefault(r["channel"], []).append((job, r["attempts"]))
            else:
                singles.append((job, r["channel"], r["attempts"]))
        for (name, keys), items in interrupted.items():
            # ask first; what the provider did not take is sent like any other row
            by_channel.setdefault(name, []).extend(await self._recover(name, keys, items))
        marks = _Marks(self._mark_sent)
        work = [self._deliver(job, ch, attempts, marks) for job, ch, attempts in singles]
        for name, items in by_channel.items():
            channel = self._batch_channels[name]
            items.sort(key=lambda x: (x[0].alert.warning_id, x[0].alert.version))
            for n, i in enumerate(range(0, len(items), channel.max_batch)):
                chunk = items[i : i + channel.max_batch]
                work.append(self._deliver_batch(channel, chunk, f"{claim}.{name}.{n}"))
        work += self._queued_work(batches, members, alerts, claim)
        renewal = asyncio.create_task(
            self._keep_leased(claim, [r["id"] for r in rows], [b["id"] for b in batches])
        )
        try:
            await asyncio.gather(*work)
            await marks.flush()
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        if batches:
            await self._pool.execute(
                """UPDATE alerting.delivery_batches SET state = 'done'
                    WHERE id = ANY($1::bigint[]) AND state = 'sending'""",
                [b["id"] for b in batches],
            )
        return len(rows) + len(members)

    async def _keep_leased(self, claim: str, row_ids: list[int], batch_ids: list[int]) -> None:
        """Renew the round's leases every third of a lease while it is still sending, so that a
        slow round is never taken for a dead one and sent again by another; a dead round stops
        renewing. Only what this claim still holds is touched."""
        every = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            until = self._clock.now() + self._lease
            try:
                if row_ids:
                    await ledger.renew_lease(self._pool, "deliveries", row_ids, until, claim)
                if batch_ids:
                    await ledger.renew_lease(
                        self._pool, "delivery_batches", batch_ids, until, claim
                    )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("lease renewal failed", extra={"error": repr(exc)})

    async def _claim_batches(
        self, now: datetime, claim: str, room: int, lane: ledger.Lane | None
    ) -> list[asyncpg.Record]:
        """Queued broadcast batches, claimed like ledger rows (lease, request names), as many as
        fill the round's room."""
        return await ledger.claim(
            self._pool,
            "delivery_batches",
            now=now,
            lease=self._lease,
            limit=max(1, room // BROADCAST_BATCH),
            claim_id=claim,
            lane=lane,
        )

    async def _batch_rows(self, batch_ids: list[int]) -> list[asyncpg.Record]:
        if not batch_ids:
            return []
        return await self._pool.fetch(
            """SELECT id, warning_id, version, recipient, channel, target, idempotency_key,
                      message, batch_id
                 FROM alerting.deliveries
                WHERE batch_id = ANY($1::bigint[]) AND state = 'queued'""",
            batch_ids,
        )

    def _queued_work(
        self,
        batches: Sequence[asyncpg.Record],
        members: Sequence[asyncpg.Record],
        alerts: Mapping[tuple[str, int], AlertVersion],
        claim: str,
    ) -> list[Coroutine[Any, Any, None]]:
        """One request per claimed batch (resident SMS: no secrets, no confirmation links)."""
        rows_of: dict[int, list[asyncpg.Record]] = {}
        for r in members:
            rows_of.setdefault(r["batch_id"], []).append(r)
        work: list[Coroutine[Any, Any, None]] = []
        for n, b in enumerate(batches):
            rows = rows_of.get(b["id"], [])
            if not rows:
                continue
            items = [
                (
                    DeliveryJob(
                        delivery_id=r["id"],
                        idempotency_key=r["idempotency_key"],
                        recipient=r["recipient"],
                        target=r["target"],
                        secret=None,
                        alert=alerts[(r["warning_id"], r["version"])],
                        message=r["message"],
                    ),
                    b["attempts"],
                )
                for r in rows
            ]
            old = tuple(b["old_keys"]) if b["was"] == "sending" and b["old_keys"] else ()
            work.append(
                self._deliver_queued(
                    b["channel"],
                    items,
                    old,
                    list(b["attempt_keys"]),
                    f"{claim}.{b['channel']}.b{n}",
                )
            )
        return work

    async def _deliver_queued(
        self,
        name: str,
        items: list[tuple[DeliveryJob, int]],
        old_keys: tuple[str, ...],
        keys: list[str],
        key: str,
    ) -> None:
        channel = self._batch_channels.get(name)
        if channel is None:
            err = ProviderError(f"no batch channel {name!r} configured", retriable=False)
            for job, attempts in items:
                await self._failed(job, name, attempts, err)
            return
        if old_keys:  # a round died with this batch out: ask the provider first
            items = await self._recover(name, old_keys, items, batch_keys=keys)
        for i in range(0, len(items), channel.max_batch):
            await self._deliver_batch(
                channel, items[i : i + channel.max_batch], f"{key}.{i}", keys=keys
            )

    async def _recover(
        self,
        name: str,
        keys: tuple[str, ...],
        items: list[tuple[DeliveryJob, int]],
        *,
        batch_keys: list[str] | None = None,
    ) -> list[tuple[DeliveryJob, int]]:
        channel = self._batch_channels[name]
        jobs = [j for j, _ in items]
        try:
            found = await channel.reconcile(jobs, keys, self._clock.now())
        except ProviderError as exc:
            # cannot tell: wait for the provider rather than risk sending twice
            log.warning("reconciliation failed; retrying later", extra={"error": exc.message})
            unknown = ProviderError(
                f"could not ask the provider: {exc.message}", retriable=True, ambiguous=True
            )
            for job, attempts in items:
                await self._failed(job, name, attempts, unknown, keys=batch_keys)
            return []
        taken = [(j, o) for j, o in zip(jobs, found, strict=True) if o is not None]
        if taken:
            await self._mark_sent(name, taken)
            RECONCILED.labels(name, "taken").inc(len(taken))
        rest = [(j, a) for (j, a), o in zip(items, found, strict=True) if o is None]
        RECONCILED.labels(name, "resent").inc(len(rest))
        return rest

    async def _mark_sent(self, name: str, sent: Sequence[tuple[DeliveryJob, Outcome]]) -> None:
        now = self._clock.now()
        await self._pool.execute(
            """UPDATE alerting.deliveries d
                  SET state = 'sent', sent_at = $2, last_error = NULL,
                      provider = u.provider, provider_ref = u.ref,
                      attempts = greatest(d.attempts, 1)
                 FROM unnest($1::bigint[], $3::text[], $4::text[]) AS u(id, provider, ref)
                WHERE d.id = u.id AND d.state IN ('sending', 'queued')""",
            [j.delivery_id for j, _ in sent],
            now,
            [o.provider for _, o in sent],
            [o.provider_ref for _, o in sent],
        )
        DELIVERIES.labels(name, "sent").inc(len(sent))
        for j, _ in sent:
            self._observe(name, j, now)

    async def _deliver_batch(
        self,
        channel: BatchChannel,
        items: list[tuple[DeliveryJob, int]],
        key: str,
        *,
        keys: list[str] | None = None,
    ) -> None:
        """One request; ``keys``: for rows of a queued batch, the request names the batch carries
        (given to a row that leaves the batch for the ordinary retry path)."""
        jobs = [j for j, _ in items]
        async with self._sem(channel.name):
            try:
                with SEND_SECONDS.labels(channel.name).time():
                    outcomes = await channel.send_batch(jobs, key)
            except ProviderError as exc:
                outcomes = [Outcome(error=exc) for _ in jobs]
            except Exception as exc:
                log.exception("channel raised unexpectedly")
                err = ProviderError(repr(exc), retriable=True)
                outcomes = [Outcome(error=err) for _ in jobs]
        sent = [(j, o) for j, o in zip(jobs, outcomes, strict=True) if o.error is None]
        if sent:
            await self._mark_sent(channel.name, sent)
        for (job, attempts), o in zip(items, outcomes, strict=True):
            if o.error is not None:
                await self._failed(job, channel.name, attempts, o.error, keys=keys)

    async def _deliver(
        self, job: DeliveryJob, channel_name: str, attempts: int, marks: _Marks
    ) -> None:
        channel = self._channels.get(channel_name)
        async with self._sem(channel_name):
            try:
                if channel is None:
                    raise ProviderError(f"no channel {channel_name!r} configured", retriable=False)
                with SEND_SECONDS.labels(channel_name).time():
                    await channel.send(job)
            except ProviderError as exc:
                await self._failed(job, channel_name, attempts, exc)
                return
            except Exception as exc:
                log.exception("channel raised unexpectedly")
                await self._failed(
                    job, channel_name, attempts, ProviderError(repr(exc), retriable=True)
                )
                return
        await marks.add(channel_name, job)

    @staticmethod
    def _observe(channel: str, job: DeliveryJob, now: datetime) -> None:
        END_TO_END.labels(channel).observe(max(0.0, (now - job.alert.sent).total_seconds()))
        if job.alert.cause_time is not None and job.message is None:
            READING_TO_DELIVERY.labels(channel).observe(
                max(0.0, (now - job.alert.cause_time).total_seconds())
            )

    async def _failed(
        self,
        job: DeliveryJob,
        channel_name: str,
        attempts: int,
        exc: ProviderError,
        *,
        keys: list[str] | None = None,
    ) -> None:
        """A row out of a queued batch (``keys`` given) takes the batch's attempts and request
        names with it: an ambiguous failure is then reconciled like any leased row."""
        final = not exc.retriable or attempts >= self._policy.max_attempts
        if final:
            await self._pool.execute(
                """UPDATE alerting.deliveries
                      SET state = 'failed', last_error = $2, attempts = greatest(attempts, $3)
                    WHERE id = $1 AND state IN ('sending', 'queued')""",
                job.delivery_id,
                exc.message[:1000],
                attempts,
            )
            DELIVERIES.labels(channel_name, "failed").inc()
            log.warning(
                "delivery failed for good",
                extra={"delivery_id": job.delivery_id, "error": exc.message},
            )
            return
        delay = self._policy.delay(attempts, self._rng)
        if exc.ambiguous:
            delay = max(delay, self._policy.ambiguous_wait_s)
        # an ambiguous failure stays 'sending', like a crash: the provider is asked first
        await self._pool.execute(
            """UPDATE alerting.deliveries
                  SET state = $4, last_error = $2, next_attempt_at = $3,
                      attempts = greatest(attempts, $5),
                      attempt_keys = coalesce($6::text[], attempt_keys)
                WHERE id = $1 AND state IN ('sending', 'queued')""",
            job.delivery_id,
            exc.message[:1000],
            self._clock.now() + timedelta(seconds=delay),
            "sending" if exc.ambiguous else "pending",
            attempts,
            keys,
        )
        DELIVERIES.labels(channel_name, "retry").inc()

    async def _load_confirm_tasks(self, rows: Sequence[asyncpg.Record]) -> dict[int, int]:
        """The 叫应 task behind each warning row to a person who must confirm it."""
        want = [
            r for r in rows if r["purpose"] == "warning" and r["recipient"].startswith("person:")
        ]
        if not want:
            return {}
        pids = [int(r["recipient"].split(":", 1)[1]) for r in want]
        tasks = await self._pool.fetch(
            """SELECT t.id, t.warning_id, t.version, t.person_id FROM alerting.confirm_tasks t
                 JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS k(wid, ver, pid)
                   ON t.warning_id = k.wid AND t.version = k.ver AND t.person_id = k.pid""",
            [r["warning_id"] for r in want],
            [r["version"] for r in want],
            pids,
        )
        by_key = {(t["warning_id"], t["version"], t["person_id"]): t["id"] for t in tasks}
        out = {}
        for r, pid in zip(want, pids, strict=True):
            tid = by_key.get((r["warning_id"], r["version"], pid))
            if tid is not None:
                out[r["id"]] = tid
        return out

    def _confirm_url(self, channel: str, task_id: int | None) -> str | None:
        if task_id is None or self._confirm_base is None or channel not in LINK_CHANNELS:
            return None
        return f"{self._confirm_base}/{make_token(self._confirm_secret, task_id)}"

    async def _load_alerts(self, keys: set[tuple[str, int]]) -> dict[tuple[str, int], AlertVersion]:
        return await load_versions(self._pool, keys)

    async def _load_secrets(self, recipients: set[str]) -> dict[str, str]:
        ids = [int(r.split(":", 1)[1]) for r in recipients if r.startswith("sub:")]
        if not ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT id, secret FROM alerting.subscriptions WHERE id = ANY($1::bigint[])", ids
        )
        return {f"sub:{r['id']}": r["secret"] for r in rows if r["secret"]}
