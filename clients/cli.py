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
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from pathlib import Path

import grpc
import typer
from google.rpc import error_details_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from services.common.grpc.errors import details_of, status_of
from services.gateway.contact_sheet import SheetItem, write_contact_sheet

app = typer.Typer(help="Headshot orders from the command line.", no_args_is_help=True)
order_app = typer.Typer(help="Create, submit, watch, download and erase orders.")
admin_app = typer.Typer(help="Tenants and API keys (operator's admin token).")
app.add_typer(order_app, name="order")
app.add_typer(admin_app, name="admin")
console = Console()

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}
CHUNK = 1024 * 1024
FINAL = {
    pb.ORDER_STATE_READY,
    pb.ORDER_STATE_EXPIRED,
    pb.ORDER_STATE_FAILED,
    pb.ORDER_STATE_CANCELLED,
    pb.ORDER_STATE_DELETED,
}
Addr = typer.Option("127.0.0.1:50051", "--addr", envvar="HEADSHOTS_ADDR", help="gateway gRPC")
Key = typer.Option(..., "--key", envvar="HEADSHOTS_API_KEY", help="tenant API key")
AdminToken = typer.Option(..., "--admin-token", envvar="HS_GATEWAY_ADMIN_TOKEN")


def _channel(addr: str) -> grpc.Channel:
    return grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 16 << 20)])


def _md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def _state(state: int) -> str:
    return pb.OrderState.Name(state).removeprefix("ORDER_STATE_")


def _fail(err: grpc.RpcError) -> typer.Exit:
    console.print(f"[red]{err.code().name}[/red]: {err.details()}")  # type: ignore[attr-defined]
    for d in details_of(err):
        if isinstance(d, error_details_pb2.BadRequest):
            for v in d.field_violations:
                console.print(f"  [yellow]{v.field}[/yellow] {v.description}")
        elif isinstance(d, error_details_pb2.QuotaFailure):
            for v in d.violations:
                console.print(f"  quota [yellow]{v.subject}[/yellow]: {v.description}")
        elif isinstance(d, error_details_pb2.PreconditionFailure):
            for v in d.violations:
                console.print(f"  {v.subject}: {v.description}")
    return typer.Exit(1)


def photo_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise typer.BadParameter(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise typer.BadParameter(f"no photos (jpg, png, webp, heic) in {folder}")
    return files


def _upload_stream(parent: str, files: list[Path]) -> Iterator[pb.UploadPhotosRequest]:
    for n, path in enumerate(files):
        data = path.read_bytes()
        for start in range(0, max(1, len(data)), CHUNK):
            msg = pb.UploadPhotosRequest(data=data[start : start + CHUNK])
            if start == 0:
                msg.filename = path.name
                msg.content_type = mimetypes.guess_type(path.name)[0] or ""
            if n == 0 and start == 0:
                msg.parent = parent
            yield msg


def show_check(stored: pb.UploadPhotosResponse, refused: list[tuple[str, str]]) -> None:
    table = Table(title="photo check")
    for col in ("photo", "verdict", "size", "notes"):
        table.add_column(col)
    for p in stored.photos:
        notes = "; ".join(f.message for f in p.findings) or "-"
        table.add_row(p.filename, "[green]kept[/green]", f"{p.width}x{p.height}", notes)
    for field, description in refused:
        code, _, rest = description.partition(": ")
        table.add_row(field, f"[red]refused {code}[/red]", "", rest)
    console.print(table)
    check = stored.set_check
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


def upload_folder(api: pb_grpc.HeadshotServiceStub, order: str, folder: Path, key: str) -> bool:
    """Upload every photo of the folder; True when all were kept."""
    files = photo_files(folder)
    try:
        stored = api.UploadPhotos(_upload_stream(order, files), metadata=_md(key))
        show_check(stored, [])
        return True
    except grpc.RpcError as err:
        status = status_of(err)
        if status is None or err.code() not in (  # type: ignore[attr-defined]
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ):
            raise
        kept = pb.UploadPhotosResponse()
        for d in status.details:
            if d.Is(kept.DESCRIPTOR):
                d.Unpack(kept)
        refused = [
            (
                files[int(v.field[7:-1])].name if v.field.startswith("photos[") else v.field,
                v.description,
            )
            for d in details_of(err)
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]
        show_check(kept, refused)
        return False


@order_app.command("create")
def create(
    folder: Path,
    tenant: str = typer.Option(..., envvar="HEADSHOTS_TENANT"),
    name: str = typer.Option("", help="display name"),
    style: list[str] = typer.Option([], help="style id (repeat); default: the platform's mix"),
    candidates: int = 0,
    results: int = 0,
    key: str = Key,
    addr: str = Addr,
) -> None:
    """Create an order and upload the selfies of FOLDER; prints the per-photo check."""
    api = pb_grpc.HeadshotServiceStub(_channel(addr))
    try:
        order = api.CreateOrder(
            pb.CreateOrderRequest(
                parent=f"tenants/{tenant}",
                order=pb.Order(
                    display_name=name or folder.name,
                    style_ids=style,
                    candidate_count=candidates,
                    result_count=results,
                ),
            ),
            metadata=_md(key),
        )
        console.print(f"order [bold]{order.name}[/bold]")
        upload_folder(api, order.name, folder, key)
    except grpc.RpcError as err:
        raise _fail(err) from None
    print(order.name)


@order_app.command("submit")
def submit(order: str, key: str = Key, addr: str = Addr) -> None:
    """Queue training for the order."""
    api = pb_grpc.HeadshotServiceStub(_channel(addr))
    try:
        o = api.SubmitOrder(pb.SubmitOrderRequest(name=order), metadata=_md(key))
    except grpc.RpcError as err:
        raise _fail(err) from None
    console.print(f"{o.name}: {_state(o.state)}")


def watch_order(api: pb_grpc.HeadshotServiceStub, order: str, key: str) -> pb.Order:
    last = pb.Order()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=console,
    ) as bars:
        overall = bars.add_task("order", total=1.0, detail="")
        stage = bars.add_task("stage", total=1, detail="")
        for update in api.WatchOrder(pb.WatchOrderRequest(name=order), metadata=_md(key)):
            o, p = update.order, update.order.progress
            if o.state != last.state:
                bars.console.print(f"→ {_state(o.state)}")
            bars.update(overall, completed=p.fraction, detail=_state(o.state))
            stage_name = pb.Stage.Name(p.stage).removeprefix("STAGE_").lower()
            bars.update(
                stage,
                description=stage_name,
                total=max(1, p.total),
                completed=p.done,
                detail=p.detail,
            )
            last = o
    if last.failure_reason:
        console.print(f"[red]failed:[/red] {last.failure_reason}")
    return last


@order_app.command("watch")
def watch(order: str, key: str = Key, addr: str = Addr) -> None:
    """Progress bars until the order is ready (or fails)."""
    api = pb_grpc.HeadshotServiceStub(_channel(addr))
    try:
        last = watch_order(api, order, key)
    except grpc.RpcError as err:
        raise _fail(err) from None
    if last.state != pb.ORDER_STATE_READY:
        raise typer.Exit(2)


def download_order(
    api: pb_grpc.HeadshotServiceStub, order: str, out: Path, key: str, rejected: int
) -> Path:
    o = api.GetOrder(pb.GetOrderRequest(name=order), metadata=_md(key))
    listing: list[pb.Result] = []
    token = ""
    while True:
        page = api.ListResults(
            pb.ListResultsRequest(
                parent=order, include_rejected=True, page_size=200, page_token=token
            ),
            metadata=_md(key),
        )
        listing.extend(page.results)
        summary = page.summary
        token = page.next_page_token
        if not token:
            break
    out.mkdir(parents=True, exist_ok=True)
    items = []
    kept_rejected = 0
    for r in listing:
        rid = r.name.rsplit("/", 1)[-1]
        file = None
        if r.delivered or kept_rejected < rejected:
            ext = mimetypes.guess_extension(r.content_type or "image/png") or ".png"
            file = f"{r.rank:03d}-{rid}{ext}" if r.delivered else f"rejected/{rid}{ext}"
            data = b"".join(
                c.data
                for c in api.DownloadResult(
                    pb.DownloadResultRequest(name=r.name), metadata=_md(key)
                )
            )
            (out / file).parent.mkdir(parents=True, exist_ok=True)
            (out / file).write_bytes(data)
            kept_rejected += 0 if r.delivered else 1
        items.append(SheetItem(r, file))
    sheet = write_contact_sheet(out / "index.html", o, items, summary)
    console.print(
        f"{summary.delivered} delivered, {summary.candidates - summary.passed} rejected; "
        f"contact sheet: {sheet}"
    )
    return sheet


@order_app.command("download")
def download(
    order: str,
    out: Path,
    rejected: int = typer.Option(24, help="rejected images to keep for the sheet"),
    key: str = Key,
    addr: str = Addr,
) -> None:
    """Download the results into OUT with an index.html contact sheet."""
    api = pb_grpc.HeadshotServiceStub(_channel(addr))
    try:
        download_order(api, order, out, key, rejected)
    except grpc.RpcError as err:
        raise _fail(err) from None


@order_app.command("erase")
def erase(order: str, key: str = Key, addr: str = Addr) -> None:
    """Erase the order now and print the deletion receipt."""
    api = pb_grpc.HeadshotServiceStub(_channel(addr))
    try:
        receipt = api.DeleteOrder(pb.DeleteOrderRequest(name=order), metadata=_md(key))
    except grpc.RpcError as err:
        raise _fail(err) from None
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


@app.command("run")
def run(
    folder: Path,
    out: Path,
    tenant: str = typer.Option(..., envvar="HEADSHOTS_TENANT"),
    candidates: int = 0,
    results: int = 0,
    key: str = Key,
    addr: str = Addr,
) -> None:
    """Create, upload, submit, watch and download one order."""
    api = pb_grpc.HeadshotServiceStub(_channel(addr))
    try:
        order = api.CreateOrder(
            pb.CreateOrderRequest(
                parent=f"tenants/{tenant}",
                order=pb.Order(
                    display_name=folder.name, candidate_count=candidates, result_count=results
                ),
            ),
            metadata=_md(key),
        )
        console.print(f"order [bold]{order.name}[/bold]")
        upload_folder(api, order.name, folder, key)
        api.SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=_md(key))
        last = watch_order(api, order.name, key)
        download_order(api, order.name, out, key, 24)
    except grpc.RpcError as err:
        raise _fail(err) from None
    if last.state != pb.ORDER_STATE_READY:
        raise typer.Exit(2)


@admin_app.command("create-tenant")
def create_tenant(
    tenant_id: str, display_name: str = "", token: str = AdminToken, addr: str = Addr
) -> None:
    admin = pb_grpc.AdminServiceStub(_channel(addr))
    try:
        t = admin.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id, tenant=pb.Tenant(display_name=display_name)
            ),
            metadata=_md(token),
        )
    except grpc.RpcError as err:
        raise _fail(err) from None
    print(t.name)


@admin_app.command("create-key")
def create_key(
    tenant_id: str, display_name: str = "", token: str = AdminToken, addr: str = Addr
) -> None:
    """Prints the new key's secret (shown once) on stdout."""
    admin = pb_grpc.AdminServiceStub(_channel(addr))
    try:
        k = admin.CreateApiKey(
            pb.CreateApiKeyRequest(
                parent=f"tenants/{tenant_id}", api_key=pb.ApiKey(display_name=display_name)
            ),
            metadata=_md(token),
        )
    except grpc.RpcError as err:
        raise _fail(err) from None
    console.print(f"{k.api_key.name} (shown once, store it now)", style="dim")
    print(k.secret)


@admin_app.command("revoke-key")
def revoke_key(name: str, token: str = AdminToken, addr: str = Addr) -> None:
    admin = pb_grpc.AdminServiceStub(_channel(addr))
    try:
        k = admin.RevokeApiKey(pb.RevokeApiKeyRequest(name=name), metadata=_md(token))
    except grpc.RpcError as err:
        raise _fail(err) from None
    print(f"{k.name} revoked")


if __name__ == "__main__":
    app()
