"""Per-order data keys, wrapped by the master key, in `keyring.data_keys` (ARCHITECTURE §7).

Crypto-shredding: `destroy` replaces an order's wrapped key with NULL and stamps
`destroyed_at`; from then on no process can decrypt that order's blobs, wherever copies of
them are. The row stays as proof (its key id's hash goes on the deletion receipt).

Other processes see a destroy within `cache_ttl` (at most 1 s) on reads; writes re-check the
database after storing the blob (see EncryptedBlobStore.put), so no process can leave a
readable-looking blob behind an erasure.

Rotation: construct with the new master key as current and the old one in
`previous_master_keys` (so keys wrapped by either unwrap), call `rewrap_all`, then drop the
old key from configuration. `rewrap_all(new, new_id)` also works from a Keyring still
holding the old key as current; afterwards it uses the new one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import ProgrammingError

from services.common.keys.crypto import check_key, generate_data_key, unwrap_key, wrap_key
from services.common.storage.base import check_id

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from services.common.settings import ServiceSettings

SCHEMA = "keyring"
MAX_CACHE_TTL = 1.0
_CACHE_PRUNE_AT = 4096

metadata = sa.MetaData(schema=SCHEMA)
# The one declaration of the keyring schema: its baseline migration creates it from here.
data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("key_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
    # NULL once destroyed (crypto-shredding); the row stays as proof of erasure.
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
    sa.Column("master_key_id", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "order_id", name="data_keys_pkey"),
    # A live key always has key material; a destroyed one never does.
    sa.CheckConstraint(
        "(destroyed_at IS NULL) = (wrapped_key IS NOT NULL)", name="data_keys_live_has_key"
    ),
)
# Rotation scans rows still wrapped by an old master key.
sa.Index(
    "data_keys_master_key_id_live",
    data_keys.c.master_key_id,
    postgresql_where=sa.text("destroyed_at IS NULL"),
)


class KeyringError(Exception):
    """The keyring cannot serve keys (schema missing, unknown master key id, ...)."""


class KeyDestroyed(Exception):
    """The order's data key was destroyed (erasure), or never existed (KeyMissing)."""

    def __init__(self, tenant_id: str, order_id: str, message: str | None = None) -> None:
        super().__init__(
            message or f"data key of tenants/{tenant_id}/orders/{order_id} has been destroyed"
        )
        self.tenant_id = tenant_id
        self.order_id = order_id


class KeyMissing(KeyDestroyed):
    def __init__(self, tenant_id: str, order_id: str) -> None:
        super().__init__(
            tenant_id, order_id, f"no data key for tenants/{tenant_id}/orders/{order_id}"
        )


@dataclass(frozen=True, slots=True)
class DataKey:
    tenant_id: str
    order_id: str
    key_id: uuid.UUID
    key: bytes = field(repr=False)
    master_key_id: str


def key_id_hash(key_id: uuid.UUID) -> str:
    """What a deletion receipt shows: sha256 of the key id's hex, not the id itself."""
    return hashlib.sha256(key_id.hex.encode()).hexdigest()


def load_master_key(settings: ServiceSettings) -> bytes:
    """HS_MASTER_KEY (base64 of 32 bytes) → bytes, with a clear error when malformed."""
    if settings.master_key is None:
        raise ValueError("HS_MASTER_KEY is not set")
    try:
        raw = base64.b64decode(settings.master_key.get_secret_value().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("HS_MASTER_KEY is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"HS_MASTER_KEY must decode to 32 bytes (AES-256), got {len(raw)}")
    return raw


class Keyring:
    def __init__(
        self,
        engine: AsyncEngine,
        master_key: bytes,
        master_key_id: str,
        *,
        previous_master_keys: Mapping[str, bytes] | None = None,
        cache_ttl: float = MAX_CACHE_TTL,
    ) -> None:
        if not 0 <= cache_ttl <= MAX_CACHE_TTL:
            raise ValueError(f"cache_ttl must be within [0, {MAX_CACHE_TTL}] s (erasure latency)")
        if not master_key_id:
            raise ValueError("master_key_id must be a non-empty string")
        self.engine = engine
        self._master_id = master_key_id
        self._masters: dict[str, bytes] = {
            k: check_key(v, f"previous master key {k!r}")
            for k, v in (previous_master_keys or {}).items()
        }
        self._masters[master_key_id] = check_key(master_key, "master key")
        self._ttl = cache_ttl
        self._cache: dict[tuple[str, str], tuple[DataKey, float]] = {}

    @property
    def master_key_id(self) -> str:
        return self._master_id

    # ---- reads and creation ----------------------------------------------------------------

    async def get_or_create(self, tenant_id: str, order_id: str) -> DataKey:
        """The order's data key, created on first use (concurrent callers get the same one)."""
        _check_ids(tenant_id, order_id)
        cached = self._cached(tenant_id, order_id)
        if cached is not None:
            return cached
        key_id = uuid.uuid4()
        wrapped = wrap_key(self._masters[self._master_id], generate_data_key(), str(key_id))
        insert = (
            postgresql.insert(data_keys)
            .values(
                tenant_id=tenant_id,
                order_id=order_id,
                key_id=key_id,
                wrapped_key=wrapped,
                master_key_id=self._master_id,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "order_id"])
            .returning(*data_keys.c)
        )
        async with self._begin() as conn:
            row = (await conn.execute(insert)).first()
            if row is None:  # it existed already (or another process just made it)
                row = (await conn.execute(_select(tenant_id, order_id))).first()
        if row is None:  # pragma: no cover - a concurrent DELETE of the row
            raise KeyMissing(tenant_id, order_id)
        return self._remember(self._unwrap(row))

    async def get(self, tenant_id: str, order_id: str) -> DataKey:
        """The order's data key; KeyDestroyed after erasure, KeyMissing if never created."""
        _check_ids(tenant_id, order_id)
        cached = self._cached(tenant_id, order_id)
        if cached is not None:
            return cached
        async with self._connect() as conn:
            row = (await conn.execute(_select(tenant_id, order_id))).first()
        if row is None:
            raise KeyMissing(tenant_id, order_id)
        return self._remember(self._unwrap(row))

    async def ensure_live(self, tenant_id: str, order_id: str) -> None:
        """Raise KeyDestroyed if the key is destroyed *now* (database, not cache)."""
        _check_ids(tenant_id, order_id)
        query = sa.select(data_keys.c.destroyed_at).where(
            data_keys.c.tenant_id == tenant_id, data_keys.c.order_id == order_id
        )
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise KeyMissing(tenant_id, order_id)
        if row.destroyed_at is not None:
            self._cache.pop((tenant_id, order_id), None)
            raise KeyDestroyed(tenant_id, order_id)

    # ---- erasure ---------------------------------------------------------------------------

    async def destroy(self, tenant_id: str, order_id: str) -> str:
        """Shred the order's data key; returns sha256(key_id.hex) for the receipt.

        Idempotent. An order that never had a key gets a destroyed tombstone, so nothing
        can create one (and write readable blobs) after its erasure.
        """
        _check_ids(tenant_id, order_id)
        stmt = postgresql.insert(data_keys).values(
            tenant_id=tenant_id,
            order_id=order_id,
            key_id=uuid.uuid4(),
            wrapped_key=None,
            master_key_id=self._master_id,
            destroyed_at=sa.func.now(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "order_id"],
            set_={
                "wrapped_key": None,
                "destroyed_at": sa.func.coalesce(data_keys.c.destroyed_at, sa.func.now()),
            },
        ).returning(data_keys.c.key_id)
        async with self._begin() as conn:
            key_id = (await conn.execute(stmt)).scalar_one()
        self._cache.pop((tenant_id, order_id), None)
        return key_id_hash(key_id)

    # ---- rotation --------------------------------------------------------------------------

    async def rewrap_all(self, new_master: bytes, new_master_id: str, *, batch: int = 500) -> int:
        """Re-wrap every live data key under `new_master`; returns how many were re-wrapped.

        Blobs are untouched (their data keys do not change). Each row is updated only if it
        still has the wrapping we read and is not destroyed, so a concurrent destroy wins.
        """
        check_key(new_master, "new master key")
        if self._masters.get(new_master_id, new_master) != new_master:
            raise ValueError(f"master key id {new_master_id!r} already names a different key")
        self._masters[new_master_id] = new_master
        done, after, unknown = 0, uuid.UUID(int=0), set[str]()
        while True:
            query = (
                sa.select(data_keys)
                .where(
                    data_keys.c.destroyed_at.is_(None),
                    data_keys.c.master_key_id != new_master_id,
                    data_keys.c.key_id > after,
                )
                .order_by(data_keys.c.key_id)
                .limit(batch)
            )
            async with self._begin() as conn:
                rows = (await conn.execute(query)).all()
                for row in rows:
                    if row.master_key_id not in self._masters:
                        unknown.add(row.master_key_id)
                        continue
                    key = self._unwrap(row).key
                    update = (
                        sa.update(data_keys)
                        .where(
                            data_keys.c.key_id == row.key_id,
                            data_keys.c.master_key_id == row.master_key_id,
                            data_keys.c.destroyed_at.is_(None),
                        )
                        .values(
                            wrapped_key=wrap_key(new_master, key, str(row.key_id)),
                            master_key_id=new_master_id,
                        )
                    )
                    done += (await conn.execute(update)).rowcount  # type: ignore[attr-defined]
            if len(rows) < batch:
                break
            after = rows[-1].key_id
        self._master_id = new_master_id
        self._cache.clear()
        if unknown:
            raise KeyringError(
                f"re-wrapped {done} key(s) but some are wrapped by unknown master key id(s) "
                f"{sorted(unknown)}: pass them in previous_master_keys and run again"
            )
        return done

    # ---- internals -------------------------------------------------------------------------

    def _unwrap(self, row: Any) -> DataKey:
        if row.destroyed_at is not None or row.wrapped_key is None:
            raise KeyDestroyed(row.tenant_id, row.order_id)
        master = self._masters.get(row.master_key_id)
        if master is None:
            raise KeyringError(
                f"data key of tenants/{row.tenant_id}/orders/{row.order_id} is wrapped by "
                f"master key {row.master_key_id!r}, which this process does not have"
            )
        key = unwrap_key(master, bytes(row.wrapped_key), str(row.key_id))
        return DataKey(row.tenant_id, row.order_id, row.key_id, key, row.master_key_id)

    def _cached(self, tenant_id: str, order_id: str) -> DataKey | None:
        hit = self._cache.get((tenant_id, order_id))
        if hit is None:
            return None
        if hit[1] <= time.monotonic():
            self._cache.pop((tenant_id, order_id), None)
            return None
        return hit[0]

    def _remember(self, key: DataKey) -> DataKey:
        if self._ttl > 0:
            now = time.monotonic()
            if len(self._cache) >= _CACHE_PRUNE_AT:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            self._cache[(key.tenant_id, key.order_id)] = (key, now + self._ttl)
        return key

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        with _schema_hint():
            async with self.engine.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        with _schema_hint():
            async with self.engine.connect() as conn:
                yield conn


def _check_ids(tenant_id: str, order_id: str) -> None:
    check_id(tenant_id, "tenant id")
    check_id(order_id, "order id")


def _select(tenant_id: str, order_id: str) -> sa.Select[Any]:
    return sa.select(data_keys).where(
        data_keys.c.tenant_id == tenant_id, data_keys.c.order_id == order_id
    )


@contextlib.contextmanager
def _schema_hint() -> Iterator[None]:
    try:
        yield
    except ProgrammingError as e:
        if "does not exist" in str(e.orig):
            raise KeyringError(
                "keyring.data_keys does not exist: run `await db.migrate(url, 'keyring')` first"
            ) from e
        raise
