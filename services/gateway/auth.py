"""API keys and the operator token.

A key reads `hs_<key_id>_<secret>`: `key_id` (12 hex characters) is public and indexes the
row, `secret` is 32 random bytes (base64url) shown once at creation. Only
`sha256(pepper || salt || secret)` is stored, with a per-key random salt; the pepper comes
from settings (a Kubernetes Secret), so a copy of the table alone cannot confirm a guess.
A slow password hash (bcrypt, argon2) is not needed here: the secret has 256 bits of
entropy, so there is nothing to brute-force, and every request pays the hash.

Failed authentication is throttled per client address and per key prefix (the key id, or
the admin token as one key; `ratelimit.AuthThrottle`): past the limit a call is refused
before the secret is looked at. Which address a call counts against is
`client_ip.client_address`'s decision (the peer, or the client behind a trusted proxy).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.grpc.errors import ApiError
from services.gateway.client_ip import NO_PROXIES, PEER_KEY, TrustedProxies, client_address
from services.gateway.ratelimit import AuthThrottle
from services.gateway.tables import api_keys, tenants

KEY_RE = re.compile(r"^hs_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
PREFIX_CHARS = 8


def request_metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """A call's metadata (lower-case keys) with its peer address under PEER_KEY."""
    md = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    md.pop(PEER_KEY, None)
    md[PEER_KEY] = context.peer() or ""
    return md


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret: str  # the whole `hs_..._...` string, shown once
    salt: bytes
    digest: bytes

    @property
    def prefix(self) -> str:
        return self.secret[: len("hs_") + 12 + 1 + PREFIX_CHARS]


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_id: str


def digest(pepper: bytes, salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(pepper + salt + secret.encode()).digest()


def new_key(pepper: bytes) -> NewKey:
    key_id = secrets.token_hex(6)
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    secret = f"hs_{key_id}_{raw}"
    salt = secrets.token_bytes(16)
    return NewKey(key_id, secret, salt, digest(pepper, salt, secret))


def bearer_token(metadata: dict[str, str]) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthenticated(message: str = "a valid API key is required") -> ApiError:
    # One message for missing, malformed, unknown and revoked keys: no oracle for attackers.
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, reason="API_KEY_INVALID")


class Authenticator:
    def __init__(
        self,
        engine: AsyncEngine,
        pepper: bytes,
        admin_token: str | None,
        throttle: AuthThrottle | None = None,
        proxies: TrustedProxies = NO_PROXIES,
    ) -> None:
        self.engine = engine
        self.pepper = pepper
        self.admin_token = admin_token
        self.throttle = throttle or AuthThrottle()
        self.proxies = proxies

    def _refuse(self, subjects: Iterable[str], error: ApiError) -> ApiError:
        self.throttle.failed(subjects)
        return error

    async def tenant_of(self, metadata: dict[str, str]) -> Caller:
        token = bearer_token(metadata)
        match = KEY_RE.match(token or "")
        subjects = [f"addr:{client_address(metadata, self.proxies)}"]
        if match is not None:
            subjects.append(f"key:{match.group(1)}")
        self.throttle.check(subjects)
        try:
            return await self._tenant_of(token, match)
        except ApiError as err:
            if err.code == grpc.StatusCode.UNAUTHENTICATED:
                self.throttle.failed(subjects)
            raise

    async def _tenant_of(self, token: str | None, match: re.Match[str] | None) -> Caller:
        if match is None:
            raise unauthenticated()
        key_id = match.group(1)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        api_keys.c.tenant_id,
                        api_keys.c.salt,
                        api_keys.c.hash,
                        api_keys.c.revoked_at,
                    ).where(api_keys.c.key_id == key_id)
                )
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            raise unauthenticated()
        assert token is not None
        if not hmac.compare_digest(digest(self.pepper, bytes(row.salt), token), bytes(row.hash)):
            raise unauthenticated()
        return Caller(row.tenant_id, key_id)

    def check_admin(self, metadata: dict[str, str]) -> None:
        token = bearer_token(metadata)
        if not self.admin_token:
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                "the admin API is disabled (HS_GATEWAY_ADMIN_TOKEN is not set)",
                reason="ADMIN_DISABLED",
            )
        # The admin token is one key: its "prefix" subject is the admin API itself.
        subjects = (f"addr:{client_address(metadata, self.proxies)}", "key:admin")
        self.throttle.check(subjects)
        if token is None or not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            raise self._refuse(
                subjects,
                ApiError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "a valid admin token is required",
                    reason="ADMIN",
                ),
            )

    async def store_key(self, tenant_id: str, display_name: str) -> tuple[NewKey, datetime]:
        key = new_key(self.pepper)
        async with self.engine.begin() as conn:
            exists = (
                await conn.execute(
                    sa.select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant_id)
                )
            ).one_or_none()
            if exists is None:
                raise ApiError(grpc.StatusCode.NOT_FOUND, "tenant not found")
            created = (
                await conn.execute(
                    sa.insert(api_keys)
                    .values(
                        key_id=key.key_id,
                        tenant_id=tenant_id,
                        display_name=display_name,
                        salt=key.salt,
                        hash=key.digest,
                    )
                    .returning(api_keys.c.created_at)
                )
            ).scalar_one()
        return key, created
