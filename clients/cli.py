"""`headshots`: the command line for one headshot order, over the public gRPC API.

    headshots order create ./selfies --tenant acme        # upload + per-photo check
    headshots order submit tenants/acme/orders/o-...      # queue training
    headshots order watch  tenants/acme/orders/o-...      # progress bars until it ends
    headshots order download tenants/acme/orders/o-... ./out   # images + index.html
    headshots order erase  tenants/acme/orders/o-...      # erasure + receipt
    headshots run ./selfies ./out --tenant acme           # all of the above but erase
    headshots admin create-tenant acme / create-key acme / revoke-key tenants/acme/apiKeys/..

The API key comes from --key or HEADSHOTS_API_KEY, the admin token from --admin-token or
HS_GATEWAY_ADMIN_TOKEN, the address from --addr or HEADSHOTS_ADDR.

Every command is a few calls of the async SDK (`clients.sdk`), run with asyncio.run; this
module only turns their answers into tables, bars and files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from clients.download import DownloadedOrder, download_order
from clients.errors import error_details
from clients.order_states import stage_name
from clients.sdk import (
    ADMIN_TOKEN_ENV,
    HeadshotsClient,
    PhotoFolderError,
    Upload,
    connect,
    photo_files,
    state_name,
)
from headshots.v1 import headshots_pb2 as pb

app = typer.Typer(help="Headshot orders from the command line.", no_args_is_help=True)
order_app = typer.Typer(help="Create, submit, watch, download and erase orders.")
admin_app = typer.Typer(help="Tenants and API keys (operator's admin token).")
app.add_typer(order_app, name="order")
app.add_typer(admin_app, name="admin")
console = Console()

Addr = typer.Option("127.0.0.1:50051", "--addr", envvar="HEADSHOTS_ADDR", help="gateway gRPC")
Key = typer.Option(..., "--key", envvar="HEADSHOTS_API_KEY", help="tenant API key")
AdminToken = typer.Option(..., "--admin-token", envvar=ADMIN_TOKEN_ENV)
Tenant = typer.Option(..., envvar="HEADSHOTS_TENANT")
T = TypeVar("T")


def _fail(err: grpc.RpcError) -> typer.Exit:
    console.print(f"[red]{err.code().name}[/red]: {err.details()}")  # type: ignore[attr-defined]
    details = error_details(err)
    for field, why in details.field_violations:
        console.print(f"  [yellow]{field}[/yellow] {why}")
    for subject, why in details.quota_violations:
        console.print(f"  quota [yellow]{subject}[/yellow]: {why}")
    for subject, why in details.preconditions:
        console.print(f"  {subject}: {why}")
    return typer.Exit(1)


def _with_client(addr: str, secret: str, work: Callable[[HeadshotsClient], Awaitable[T]]) -> T:
    """Run `work` with a client on a fresh event loop; a failed call exits with its details."""

    async def main() -> T:
        # No wait for the connection: a gateway that is down answers UNAVAILABLE at once.
        async with connect(addr, secret, ready_within_s=None) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except grpc.RpcError as err:
        raise _fail(err) from None


def _photos(folder: Path) -> list[Path]:
    try:
        return photo_files(folder)
    except PhotoFolderError as err:
        raise typer.BadParameter(str(err)) from None


# ------------------------------------------------------------------------------ output


def show_check(upload: Upload) -> None:
    """The per-photo table (kept with its notes, refused with the code and why) and the
    set's check."""
    table = Table(title="photo check")
    for col in ("photo", "verdict", "size", "notes"):
        table.add_column(col)
    for p in upload.stored.photos:
        notes = "; ".join(f.message for f in p.findings) or "-"
        table.add_row(p.filename, "[green]kept[/green]", f"{p.width}x{p.height}", notes)
    for refused in upload.refused:
        table.add_row(refused.filename, f"[red]refused {refused.code}[/red]", "", refused.message)
    console.print(table)
    check = upload.stored.set_check
    if check.usable_count or check.different_person:
        console.print(
            f"usable photos in the order: {check.usable_count}; "
            f"variety {check.variety_score:.2f}"
            + (
                f"; different person: {', '.join(check.different_person)}"
                if check.different_person
                else ""
            )
        )


async def watch_with_bars(client: HeadshotsClient, order: str) -> pb.Order:
    """Watch the order to its end with two bars: the whole order and the current stage."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=console,
    ) as bars:
        overall = bars.add_task("order", total=1.0, detail="")
        stage = bars.add_task("stage", total=1, detail="")
        seen: list[int] = []

        def update(o: pb.Order) -> None:
            p = o.progress
            if not seen or o.state != seen[-1]:
                seen.append(o.state)
                bars.console.print(f"→ {state_name(o.state)}")
            bars.update(overall, completed=p.fraction, detail=state_name(o.state))
            bars.update(
                stage,
                description=stage_name(p.stage),
                total=max(1, p.total),
                completed=p.done,
                detail=p.detail,
            )

        last = await client.watch(order, on_update=update)
    if last.failure_reason:
        console.print(f"[red]failed:[/red] {last.failure_reason}")
    return last


async def download_with_sheet(
    client: HeadshotsClient, order: str, out: Path, keep_rejected: int
) -> DownloadedOrder:
    downloaded = await download_order(client, order, out, keep_rejected)
    summary = downloaded.summary
    console.print(
        f"{summary.delivered} delivered, {summary.candidates - summary.passed} rejected; "
        f"contact sheet: {downloaded.sheet}"
    )
    return downloaded


def show_receipt(receipt: pb.DeletionReceipt) -> None:
    table = Table(title=f"deletion receipt {receipt.receipt_id}")
    for col in ("data", "objects", "bytes", "when", "trigger"):
        table.add_column(col)
    for e in receipt.entries:
        table.add_row(
            e.data_class,
            str(e.object_count),
            str(e.byte_count),
            e.delete_time.ToDatetime().isoformat(timespec="seconds"),
            e.trigger,
        )
    console.print(table)


async def create_and_upload(
    client: HeadshotsClient, tenant: str, files: list[Path], **fields: object
) -> pb.Order:
    order = await client.create_order(tenant, **fields)
    console.print(f"order [bold]{order.name}[/bold]")
    show_check(await client.upload_photos(order.name, files))
    return order


# ------------------------------------------------------------------------------ orders


@order_app.command("create")
def create(
    folder: Path,
    tenant: str = Tenant,
    name: str = typer.Option("", help="display name"),
    style: list[str] = typer.Option([], help="style id (repeat); default: the platform's mix"),
    candidates: int = 0,
    results: int = 0,
    key: str = Key,
    addr: str = Addr,
) -> None:
    """Create an order and upload the selfies of FOLDER; prints the per-photo check."""
    files = _photos(folder)
    order = _with_client(
        addr,
        key,
        lambda client: create_and_upload(
            client,
            tenant,
            files,
            display_name=name or folder.name,
            style_ids=style,
            candidate_count=candidates,
            result_count=results,
        ),
    )
    print(order.name)


@order_app.command("submit")
def submit(order: str, key: str = Key, addr: str = Addr) -> None:
    """Queue training for the order."""
    o = _with_client(addr, key, lambda client: client.submit(order))
    console.print(f"{o.name}: {state_name(o.state)}")


@order_app.command("watch")
def watch(order: str, key: str = Key, addr: str = Addr) -> None:
    """Progress bars until the order is ready (or fails)."""
    last = _with_client(addr, key, lambda client: watch_with_bars(client, order))
    if last.state != pb.ORDER_STATE_READY:
        raise typer.Exit(2)


@order_app.command("download")
def download(
    order: str,
    out: Path,
    rejected: int = typer.Option(24, help="rejected images to keep for the sheet"),
    key: str = Key,
    addr: str = Addr,
) -> None:
    """Download the results into OUT with an index.html contact sheet."""
    _with_client(addr, key, lambda client: download_with_sheet(client, order, out, rejected))


@order_app.command("erase")
def erase(order: str, key: str = Key, addr: str = Addr) -> None:
    """Erase the order now and print the deletion receipt."""
    show_receipt(_with_client(addr, key, lambda client: client.erase(order)))


@app.command("run")
def run(
    folder: Path,
    out: Path,
    tenant: str = Tenant,
    candidates: int = 0,
    results: int = 0,
    key: str = Key,
    addr: str = Addr,
) -> None:
    """Create, upload, submit, watch and download one order."""
    files = _photos(folder)

    async def work(client: HeadshotsClient) -> pb.Order:
        order = await create_and_upload(
            client,
            tenant,
            files,
            display_name=folder.name,
            candidate_count=candidates,
            result_count=results,
        )
        await client.submit(order.name)
        last = await watch_with_bars(client, order.name)
        await download_with_sheet(client, order.name, out, 24)
        return last

    if _with_client(addr, key, work).state != pb.ORDER_STATE_READY:
        raise typer.Exit(2)


# ------------------------------------------------------------------------------ admin


@admin_app.command("create-tenant")
def create_tenant(
    tenant_id: str, display_name: str = "", token: str = AdminToken, addr: str = Addr
) -> None:
    t = _with_client(addr, token, lambda admin: admin.create_tenant(tenant_id, display_name))
    print(t.name)


@admin_app.command("create-key")
def create_key(
    tenant_id: str, display_name: str = "", token: str = AdminToken, addr: str = Addr
) -> None:
    """Prints the new key's secret (shown once) on stdout."""
    k = _with_client(addr, token, lambda admin: admin.create_api_key(tenant_id, display_name))
    console.print(f"{k.api_key.name} (shown once, store it now)", style="dim")
    print(k.secret)


@admin_app.command("revoke-key")
def revoke_key(name: str, token: str = AdminToken, addr: str = Addr) -> None:
    k = _with_client(addr, token, lambda admin: admin.revoke_api_key(name))
    print(f"{k.name} revoked")


if __name__ == "__main__":
    app()
