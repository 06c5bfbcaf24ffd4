"""Resource names and the id format: `tenants/{t}/orders/{o}/photos/{p}` and friends.

One home for the id scheme every service relies on: the gateway parses names with it, blob
keys and job ids embed ids checked by it, and the keyring refuses anything else.
"""

from __future__ import annotations

import re
import secrets

# Lower-case letters, digits and dashes, starting with a letter or digit: safe in URLs, blob
# keys, NATS subjects and PostgreSQL text without escaping.
ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ID_RULE = "[a-z0-9][a-z0-9-]{0,62}"

TENANT_RE = re.compile(r"^tenants/([^/]+)$")
ORDER_RE = re.compile(r"^tenants/([^/]+)/orders/([^/]+)$")
PHOTO_RE = re.compile(r"^tenants/([^/]+)/orders/([^/]+)/photos/([^/]+)$")
RESULT_RE = re.compile(r"^tenants/([^/]+)/orders/([^/]+)/results/([^/]+)$")
KEY_RE = re.compile(r"^tenants/([^/]+)/apiKeys/([^/]+)$")
RECEIPT_RE = re.compile(r"^tenants/([^/]+)/deletionReceipts/([^/]+)$")
# The shape of each name, for people (error messages, docs).
PATTERNS: dict[re.Pattern[str], str] = {
    TENANT_RE: "tenants/{tenant}",
    ORDER_RE: "tenants/{tenant}/orders/{order}",
    PHOTO_RE: "tenants/{tenant}/orders/{order}/photos/{photo}",
    RESULT_RE: "tenants/{tenant}/orders/{order}/results/{result}",
    KEY_RE: "tenants/{tenant}/apiKeys/{key}",
    RECEIPT_RE: "tenants/{tenant}/deletionReceipts/{receipt}",
}


class InvalidId(ValueError):
    """An id that does not follow the platform's id format."""


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidId(f"{what} {value!r} is not a valid id ({ID_RULE})")
    return value


def is_id(value: str) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def parse(name: str, pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """The ids of `name` when it matches `pattern` and every id is well formed, else None."""
    m = pattern.match(name or "")
    if m is None or not all(is_id(g) for g in m.groups()):
        return None
    return m.groups()


def new_id(prefix: str, nbytes: int = 8) -> str:
    """A fresh random id such as `o-1f3a...`: `prefix` names the kind of resource."""
    return check_id(f"{prefix}-{secrets.token_hex(nbytes)}")


def tenant_name(tenant_id: str) -> str:
    return f"tenants/{tenant_id}"


def order_name(tenant_id: str, order_id: str) -> str:
    return f"tenants/{tenant_id}/orders/{order_id}"


def photo_name(tenant_id: str, order_id: str, photo_id: str) -> str:
    return f"{order_name(tenant_id, order_id)}/photos/{photo_id}"


def result_name(tenant_id: str, order_id: str, result_id: str) -> str:
    return f"{order_name(tenant_id, order_id)}/results/{result_id}"


def api_key_name(tenant_id: str, key_id: str) -> str:
    return f"tenants/{tenant_id}/apiKeys/{key_id}"


def receipt_name(tenant_id: str, receipt_id: str) -> str:
    return f"tenants/{tenant_id}/deletionReceipts/{receipt_id}"
