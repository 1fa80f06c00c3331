"""One error tree for the whole project.

    QianshaoError
    ├── ConfigurationError          settings that cannot work (default secret in production, …)
    ├── ValidationFailed            input that breaks a contract; carries a machine-readable reason
    │   └── UnknownStation          a reading for a station that is not registered
    ├── NotFound                    a named resource does not exist
    ├── Conflict                    the request clashes with the current state
    ├── PermissionDenied            authenticated, but not allowed (scope, region)
    ├── Unauthenticated             no or bad credentials
    └── DependencyError             a collaborator (DB, broker, provider) failed
        ├── DatabaseError
        ├── BrokerError
        └── ProviderError           an external channel; ``retriable`` says whether to try again

Third-party exceptions (asyncpg, aiokafka, httpx) are translated into this tree at the adapter that
calls them, and re-raised ``from`` the original. Service code raises these; the HTTP layer maps them
to RFC 9457 problem documents in :mod:`shared.http`.
"""

from __future__ import annotations


class QianshaoError(Exception):
    """Base of every error Qianshao raises on purpose."""

    code: str = "error"
    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retriable is not None:
            self.retriable = retriable


class ConfigurationError(QianshaoError):
    code = "configuration"


class ValidationFailed(QianshaoError):
    code = "validation"

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownStation(ValidationFailed):
    code = "unknown_station"

    def __init__(self, station_id: str) -> None:
        super().__init__(f"station {station_id!r} is not registered", reason="unknown_station")
        self.station_id = station_id


class NotFound(QianshaoError):
    code = "not_found"


class Conflict(QianshaoError):
    code = "conflict"


class Unauthenticated(QianshaoError):
    code = "unauthenticated"


class PermissionDenied(QianshaoError):
    code = "forbidden"


class DependencyError(QianshaoError):
    code = "dependency"
    retriable = True


class DatabaseError(DependencyError):
    code = "database"


class BrokerError(DependencyError):
    code = "broker"


class ProviderError(DependencyError):
    """An external delivery channel failed. ``retriable`` is False for permanent refusals;
    ``ambiguous`` says the provider may have taken the message all the same (the request went
    out and no answer came back), so it must be asked before anything is sent again."""

    code = "provider"

    def __init__(
        self,
        message: str,
        *,
        retriable: bool,
        provider_code: str | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.provider_code = provider_code
        self.ambiguous = ambiguous


def is_unavailable(exc: BaseException, transient: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether ``exc`` (or what caused it) says a dependency is out of reach: one of our
    retriable errors, a refused or dropped connection, a timeout, or one of the ``transient``
    errors of a driver (``shared.db.TRANSIENT``: a database shutting down or starting up). Such a
    failure is retried, never blamed on the message being processed."""
    kinds: tuple[type[BaseException], ...] = (OSError, TimeoutError, *transient)
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DependencyError) or (isinstance(e, QianshaoError) and e.retriable):
            return True
        if isinstance(e, kinds):
            return True
        e = e.__cause__
    return False
