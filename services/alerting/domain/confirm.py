"""Signed confirmation tokens for 叫应 links: ``<task id>.<mac>``.

The token names one confirmation task and is signed with the service's confirm secret, so it
cannot be guessed or moved to another task; it carries no personal data. It is short enough for a
link in a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from shared.errors import NotFound


def _mac(secret: str, task_id: int) -> str:
    d = hmac.new(secret.encode(), f"confirm:{task_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(d[:12]).rstrip(b"=").decode()


def make_token(secret: str, task_id: int) -> str:
    return f"{task_id}.{_mac(secret, task_id)}"


def read_token(secret: str, token: str) -> int:
    """The task id of a valid token; NotFound otherwise (a bad token reveals nothing)."""
    head, _, mac = token.partition(".")
    if not head.isdigit() or len(head) > 18:
        raise NotFound("no such confirmation link")
    task_id = int(head)
    if not hmac.compare_digest(mac, _mac(secret, task_id)):
        raise NotFound("no such confirmation link")
    return task_id
