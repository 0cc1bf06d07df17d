"""API keys with scopes, as FastAPI dependencies.

Only SHA-256 hashes of keys are configured (``CELREC_API_KEYS``: ``sha256hex:scope,scope``
entries), so the settings, the environment and the process never hold a usable key. A
request presents its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (never
in the query string, which access logs record); the key's hash is compared with every
configured hash in constant time. Scopes: ``events:write`` (POST /events),
``scores:read`` (scores, recommendations, model), ``admin`` (everything). No configured
key: authentication is off.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from schemas.api import ErrorResponse
from service.errors import ApiError

SCOPES = ("events:write", "scores:read", "admin")
ADMIN = "admin"
_ENTRY = re.compile(r"([0-9a-fA-F]{64}):([a-z:,]+)")

AUTH_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "no API key, or an unknown one"},
    403: {"model": ErrorResponse, "description": "the API key lacks the scope"},
}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Keyring:
    """The configured key hashes and their scopes."""

    entries: tuple[tuple[bytes, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, setting: str) -> Keyring:
        entries = []
        for raw in re.split(r"[\s;]+", setting.strip()):
            if not raw:
                continue
            match = _ENTRY.fullmatch(raw)
            scopes = frozenset(match.group(2).split(",")) if match else frozenset()
            if match is None or not scopes or not scopes <= set(SCOPES):
                # the settings pattern already refuses this; never echo the entry itself
                raise ValueError("CELREC_API_KEYS: an entry is not sha256hex:scope[,scope]")
            entries.append((bytes.fromhex(match.group(1)), scopes))
        return cls(tuple(entries))

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def scopes_of(self, key: str) -> frozenset[str] | None:
        """The key's scopes, or None for an unknown key; compares with every entry."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: frozenset[str] | None = None
        for hashed, scopes in self.entries:
            if hmac.compare_digest(digest, hashed):
                found = scopes
        return found


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def require_scope(keyring: Keyring, scope: str,
                  open_access: bool = False) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: 401 without a known key, 403 without ``scope`` (or admin)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(request: Request) -> None:
        if open_access or not keyring.enabled:
            return
        key = presented_key(request)
        scopes = keyring.scopes_of(key) if key is not None else None
        if scopes is None:
            message = "unknown API key" if key is not None else \
                "an API key is required (X-API-Key or Authorization: Bearer)"
            raise ApiError(401, "unauthorized", message,
                           headers={"WWW-Authenticate": "Bearer"})
        if scope not in scopes and ADMIN not in scopes:
            raise ApiError(403, "forbidden", f"the API key lacks the {scope} scope")

    return check


def hash_key_main(scopes: str, generate: bool, read_key: Callable[[], str]) -> int:
    """``celrec hash-key``: print the CELREC_API_KEYS entry of a key (read from stdin)."""
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    if not wanted or not set(wanted) <= set(SCOPES):
        print(f"celrec hash-key: --scopes must be a comma-separated subset of {SCOPES}")
        return 2
    key = new_key() if generate else read_key().strip()
    if not key:
        print("celrec hash-key: no key on stdin (or pass --generate)")
        return 2
    if generate:
        print(f"key (give to the client, shown once): {key}")
    print(f"CELREC_API_KEYS entry: {hash_key(key)}:{','.join(wanted)}")
    return 0
