"""A circuit breaker per upstream service.

- **Closed.** Calls pass. A run of ``threshold`` consecutive failures opens the breaker.
  Failures are transport errors, timeouts and 502/503/504 answers.
- **Open.** Calls fail at once with 503 and a Retry-After header, for ``open_s`` seconds. A sick
  service is not hammered, and callers do not wait out a timeout each.
- **Half-open.** After that time, one trial call passes. Success closes the breaker; failure
  opens it again.

Pure: every method takes the monotonic time ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    threshold: int = 5
    open_s: float = 10.0
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and now - self.opened_at >= self.open_s:
            self.state = "half_open"
            self.trial_in_flight = False
        if self.state == "half_open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def retry_after(self, now: float) -> int:
        return max(1, round(self.open_s - (now - self.opened_at)))

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.state, self.failures, self.trial_in_flight = "closed", 0, False
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state, self.opened_at, self.trial_in_flight = "open", now, False
