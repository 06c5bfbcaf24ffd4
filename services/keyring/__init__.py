"""The `keyring` schema: wrapped per-order data keys (see services/common/keyring.py).

Not a service process; it only holds the schema's Alembic tree, applied with
`await services.common.db.migrate(url, "keyring")` by whichever process starts the stack.
"""
