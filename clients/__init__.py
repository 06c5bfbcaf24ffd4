"""Clients of the public API: the async SDK (`clients.sdk`) and what is built on it, the
`headshots` CLI (`clients.cli`) and the download folder with its contact sheet.

Nothing here imports a service package: a client needs only the generated `headshots.v1`
messages, grpcio and grpcio-status.
"""
