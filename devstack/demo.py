"""`make demo`: one headshot order end to end on this machine, through the public API.

Starts the embedded stack (PostgreSQL, NATS, the five services as processes), creates a
tenant and an API key through AdminService, uploads the selfies of a folder, shows the
per-photo checks, trains, generates, filters, selects, and writes `out/<order>/` with the
delivered images, `results.json` and a contact sheet `index.html` (the `headshots` CLI's
download and sheet, with a note on top for the tiny model); prints the time of each
stage and stops everything.

With the tiny models (the default) the images are noise: most or all of them are rejected
by the face stack, and the output says so and shows why. Nothing is made to look like a pass.

The small async client at the top (`GatewayClient`, `OrderRun`) is also what the e2e tests
and `bench/bench_e2e.py` drive the stack with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import mimetypes
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2

from clients import cli
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from services.common.grpc.errors import details_of, status_of

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = (ROOT / "tests" / "fixtures" / "faces" / "obama").resolve()
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}
# gRPC caps a message at 4 MiB by default; 1 MiB chunks stay well inside it.
CHUNK_BYTES = 1024 * 1024
TERMINAL = frozenset(
    {
        pb.ORDER_STATE_READY,
        pb.ORDER_STATE_FAILED,
        pb.ORDER_STATE_CANCELLED,
        pb.ORDER_STATE_DELETED,
        pb.ORDER_STATE_EXPIRED,
    }
)
# Environment variable through which the stack hands the gateway its operator token.
ADMIN_TOKEN_ENV = "HS_GATEWAY_ADMIN_TOKEN"
MIN_PHOTOS_ENV = "HS_LIMIT_MIN_PHOTOS"
# The fixture folder holds six photos; the platform asks for eight by default. The demo
# accepts fewer (and says so) rather than padding the set with copies.
DEMO_MIN_PHOTOS = 4
TINY_CANDIDATES = 64
REAL_CANDIDATES = 400


def state_name(state: int) -> str:
    return pb.OrderState.Name(state).removeprefix("ORDER_STATE_")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def photo_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"photo folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise SystemExit(f"no photos (jpg, png, webp, heic) in {folder}")
    return files


# ------------------------------------------------------------------------------ client


@dataclass
class StageClock:
    """When each order state was first seen by a watcher, and time spent in each state.

    A top-up round goes FILTERING -> GENERATING -> FILTERING again; time in a state is the
    sum over all its visits.
    """

    t0: float = field(default_factory=time.monotonic)
    current: int | None = None
    since: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    sequence: list[str] = field(default_factory=list)

    def see(self, state: int, now: float | None = None) -> bool:
        """Record `state` at `now`; True when it is a change."""
        now = time.monotonic() if now is None else now
        if state == self.current:
            return False
        if self.current is not None:
            name = state_name(self.current)
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self.since
        self.current, self.since = state, now
        name = state_name(state)
        self.first_seen.setdefault(name, now - self.t0)
        self.sequence.append(name)
        return True


@dataclass
class Upload:
    """Photos stored with their checks, and the refused ones as (filename, why)."""

    stored: pb.UploadPhotosResponse
    refused: list[tuple[str, str]]


@dataclass
class OrderRun:
    """What one order went through, as a client saw it."""

    order: pb.Order
    upload: Upload
    clock: StageClock
    upload_s: float
    wall_s: float
    updates: int = 0


class GatewayClient:
    """Thin async client of HeadshotService and AdminService for one tenant key (or admin)."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.channel = channel
        self.token = token
        self.api = pb_grpc.HeadshotServiceStub(channel)
        self.admin = pb_grpc.AdminServiceStub(channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    # ---- admin

    async def bootstrap_tenant(
        self, tenant_id: str, display_name: str = "", requests_per_minute: int = 0
    ) -> tuple[str, str]:
        """Create a tenant and an API key with the admin token; returns (tenant name, secret)."""
        tenant = await self.admin.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=pb.Tenant(
                    display_name=display_name or tenant_id,
                    requests_per_minute=requests_per_minute,
                ),
            ),
            metadata=self.md,
            timeout=30,
        )
        key = await self.admin.CreateApiKey(
            pb.CreateApiKeyRequest(parent=tenant.name, api_key=pb.ApiKey(display_name="e2e")),
            metadata=self.md,
            timeout=30,
        )
        return tenant.name, key.secret

    # ---- orders

    async def create_order(self, tenant: str, **fields: object) -> pb.Order:
        return await self.api.CreateOrder(
            pb.CreateOrderRequest(
                parent=tenant, order=pb.Order(**fields), request_id=str(uuid.uuid4())
            ),
            metadata=self.md,
            timeout=30,
        )

    async def upload_photos(
        self, order_name: str, files: Sequence[Path], chunk: int = CHUNK_BYTES
    ) -> Upload:
        """One client stream: each photo's first chunk names it; chunks stay under 4 MiB.

        A photo the checks refuse is not stored; the call then fails with INVALID_ARGUMENT
        whose details carry what was stored and, per refused photo, why. That is an answer
        to show, not an error: it comes back as `Upload.refused`."""

        async def requests() -> AsyncIterator[pb.UploadPhotosRequest]:
            first = True
            for path in files:
                data = path.read_bytes()
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                for i, start in enumerate(range(0, max(len(data), 1), chunk)):
                    req = pb.UploadPhotosRequest(data=data[start : start + chunk])
                    if first:
                        req.parent = order_name
                        first = False
                    if i == 0:
                        req.filename = path.name
                        req.content_type = ctype
                    yield req

        try:
            stored = await self.api.UploadPhotos(requests(), metadata=self.md, timeout=300)
            return Upload(stored, [])
        except grpc.aio.AioRpcError as err:
            status = status_of(err)
            if status is None or err.code() not in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ):
                raise
            stored = pb.UploadPhotosResponse()
            for d in status.details:
                if d.Is(stored.DESCRIPTOR):
                    d.Unpack(stored)
            refused = []
            for detail in details_of(err):
                if isinstance(detail, error_details_pb2.BadRequest):
                    for v in detail.field_violations:
                        name = v.field
                        if v.field.startswith("photos[") and v.field.endswith("]"):
                            index = int(v.field[len("photos[") : -1])
                            name = files[index].name if index < len(files) else v.field
                        refused.append((name, v.description))
            if not refused:
                raise
            return Upload(stored, refused)

    async def submit(self, order_name: str) -> pb.Order:
        return await self.api.SubmitOrder(
            pb.SubmitOrderRequest(name=order_name, request_id=str(uuid.uuid4())),
            metadata=self.md,
            timeout=60,
        )

    async def get_order(self, order_name: str) -> pb.Order:
        return await self.api.GetOrder(
            pb.GetOrderRequest(name=order_name), metadata=self.md, timeout=30
        )

    async def list_orders(self, tenant: str) -> list[pb.Order]:
        out: list[pb.Order] = []
        token = ""
        while True:
            resp = await self.api.ListOrders(
                pb.ListOrdersRequest(parent=tenant, page_size=50, page_token=token),
                metadata=self.md,
                timeout=30,
            )
            out.extend(resp.orders)
            token = resp.next_page_token
            if not token:
                return out

    async def watch(
        self,
        order_name: str,
        within_s: float,
        clock: StageClock | None = None,
        on_update: Callable[[pb.Order], None] | None = None,
    ) -> pb.Order:
        """Follow WatchOrder until the order is terminal; re-attaches if the stream breaks
        (a gateway restart, a transient network error). Raises TimeoutError with the last
        state seen."""
        clock = clock or StageClock()
        deadline = time.monotonic() + within_s
        last: pb.Order | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = state_name(last.state) if last else "nothing"
                raise TimeoutError(
                    f"{order_name} not terminal after {within_s:.0f}s; last state {seen}"
                    + (f" ({last.progress.detail})" if last and last.progress.detail else "")
                )
            call = self.api.WatchOrder(
                pb.WatchOrderRequest(name=order_name), metadata=self.md, timeout=remaining
            )
            try:
                async for resp in call:
                    last = resp.order
                    clock.see(last.state)
                    if on_update is not None:
                        on_update(last)
                    if last.state in TERMINAL:
                        call.cancel()
                        return last
            except grpc.aio.AioRpcError as err:
                if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                    await asyncio.sleep(0.5)
                    continue
                if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the loop turns it into TimeoutError with the last state
                raise
            # Stream ended without a terminal state (server closed it): watch again.
            await asyncio.sleep(0.2)

    async def list_results(
        self, order_name: str, include_rejected: bool = True
    ) -> tuple[list[pb.Result], pb.RejectionSummary]:
        out: list[pb.Result] = []
        summary = pb.RejectionSummary()
        token = ""
        while True:
            resp = await self.api.ListResults(
                pb.ListResultsRequest(
                    parent=order_name,
                    page_size=200,
                    page_token=token,
                    include_rejected=include_rejected,
                ),
                metadata=self.md,
                timeout=60,
            )
            out.extend(resp.results)
            if resp.HasField("summary"):
                summary = resp.summary
            token = resp.next_page_token
            if not token:
                return out, summary

    async def download(self, result_name: str) -> bytes:
        parts: list[bytes] = []
        async for resp in self.api.DownloadResult(
            pb.DownloadResultRequest(name=result_name), metadata=self.md, timeout=120
        ):
            parts.append(resp.data)
        return b"".join(parts)

    async def run_order(
        self,
        tenant: str,
        files: Sequence[Path],
        *,
        within_s: float,
        on_update: Callable[[pb.Order], None] | None = None,
        on_uploaded: Callable[[pb.Order, Upload], None] | None = None,
        **order_fields: object,
    ) -> OrderRun:
        """Create, upload, submit and watch one order to a terminal state."""
        t0 = time.monotonic()
        order = await self.create_order(tenant, **order_fields)
        upload = await self.upload_photos(order.name, files)
        upload_s = time.monotonic() - t0
        if on_uploaded is not None:
            on_uploaded(order, upload)
        clock = StageClock()
        await self.submit(order.name)
        final = await self.watch(order.name, within_s, clock, on_update)
        return OrderRun(final, upload, clock, upload_s, time.monotonic() - t0)


@contextlib.asynccontextmanager
async def open_channel(addr: str) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 20_000),
        ],
    )
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        yield channel
    finally:
        await channel.close()


# ------------------------------------------------------------------------------ output


def photo_check_lines(result: Upload) -> list[str]:
    upload = result.stored
    lines = []
    width = max(
        (len(n) for n in [p.filename for p in upload.photos] + [f for f, _ in result.refused]),
        default=10,
    )
    for i, p in enumerate(upload.photos, 1):
        verdict = "ok      " if p.usable else "REFUSED "
        facts = f"{p.width}x{p.height}, face {p.face_size_px:.0f}px, sharpness {p.sharpness:.0f}"
        if p.identity_distance:
            facts += f", identity distance {p.identity_distance:.2f}"
        lines.append(f"  {i:>2}. {p.filename:<{width}}  {verdict} {facts}")
        for f in p.findings:
            mark = "!" if f.blocking else "-"
            lines.append(f"        {mark} {f.code}: {f.message}")
    for filename, why in result.refused:
        lines.append(f"      {filename:<{width}}  REFUSED  {why}")
    sc = upload.set_check
    lines.append(
        f"  set: {sc.usable_count} usable of {len(upload.photos) + len(result.refused)},"
        f" variety {sc.variety_score:.2f}"
        + (f", different person: {', '.join(sc.different_person)}" if sc.different_person else "")
    )
    for f in sc.findings:
        lines.append(f"        {'!' if f.blocking else '-'} {f.code}: {f.message}")
    return lines


def result_record(r: pb.Result, file: str | None) -> dict[str, object]:
    return {
        "name": r.name,
        "id": r.name.rsplit("/", 1)[-1],
        "delivered": r.delivered,
        "rank": r.rank,
        "style": r.style_id,
        "seed": r.seed,
        "round": r.round,
        "model": r.model_id,
        "scores": MessageToDict(r.scores, preserving_proto_field_name=True),
        "rejection_reasons": list(r.rejection_reasons),
        "width": r.width,
        "height": r.height,
        "file": file,
    }


def tiny_notice(model_ids: Iterable[str], tiny: bool) -> str:
    if not tiny:
        return ""
    ids = sorted({m for m in model_ids if m})
    return (
        "These images come from the TINY test model"
        + (f" ({', '.join(ids)})" if ids else "")
        + ": it is built from configs with random weights, so its images are noise, not"
        " headshots. The face stack is real, so it rejects almost all of them, and the"
        " reasons below say why. Run with BASE_MODEL=/path/to/diffusers-folder for real"
        " headshots."
    )


# ------------------------------------------------------------------------------ demo


@dataclass
class DemoOptions:
    photos: Path
    base_model: Path | None
    candidates: int
    results: int
    out: Path
    run_dir: Path
    timeout: float
    download_rejected: int
    min_photos: int = 0


def stack_env(opts: DemoOptions, admin_token: str) -> dict[str, dict[str, str]]:
    gateway = {ADMIN_TOKEN_ENV: admin_token}
    if opts.min_photos:
        gateway[MIN_PHOTOS_ENV] = str(opts.min_photos)
    env: dict[str, dict[str, str]] = {"gateway": gateway}
    if opts.base_model is not None:
        for svc in ("trainer", "generator"):
            env.setdefault(svc, {})[f"HS_{svc.upper()}_BASE_MODEL"] = str(opts.base_model)
    return env


def print_progress(order: pb.Order, last: dict[str, object]) -> None:
    """One line per state change, and a progress line at most every 2 s."""
    now = time.monotonic()
    state = state_name(order.state)
    pr = order.progress
    if state != last.get("state"):
        last["state"] = state
        last["t"] = 0.0
        print(f"  -> {state}", flush=True)
    if pr.total and now - float(last.get("t", 0.0)) >= 2.0:  # type: ignore[arg-type]
        last["t"] = now
        eta = f", eta {pr.eta.seconds}s" if pr.eta.seconds else ""
        detail = f" {pr.detail}" if pr.detail else ""
        print(f"     {pr.done}/{pr.total} ({pr.fraction:.0%}){eta}{detail}", flush=True)


async def drive(opts: DemoOptions, stack: object, admin_token: str, times: dict[str, float]) -> int:
    from devstack.stack import Stack

    assert isinstance(stack, Stack)
    files = photo_files(opts.photos)
    async with open_channel(stack.procs["gateway"].addr) as channel:
        admin = GatewayClient(channel, admin_token)
        t = time.monotonic()
        tenant, secret = await admin.bootstrap_tenant(f"demo-{uuid.uuid4().hex[:6]}", "Demo")
        client = GatewayClient(channel, secret)
        times["tenant + API key"] = time.monotonic() - t
        print(f"tenant {tenant} with a fresh API key", flush=True)
        print(f"uploading {len(files)} photos from {opts.photos} ...", flush=True)
        if len(files) < 8:
            print(
                f"  (the platform asks for 8-20 selfies; this demo accepts {opts.min_photos}+)",
                flush=True,
            )

        def uploaded(order: pb.Order, upload: Upload) -> None:
            print(f"order {order.name}: per-photo checks", flush=True)
            cli.show_check(upload.stored, upload.refused)
            print("\n".join(photo_check_lines(upload)), flush=True)
            print("training, generating, filtering:", flush=True)

        last: dict[str, object] = {}
        try:
            run = await client.run_order(
                tenant,
                files,
                within_s=opts.timeout,
                on_update=lambda o: print_progress(o, last),
                on_uploaded=uploaded,
                display_name=f"demo of {opts.photos.name}",
                candidate_count=opts.candidates,
                result_count=opts.results,
            )
        except grpc.aio.AioRpcError as err:
            print(f"\nthe gateway refused the order: {err.code().name}: {err.details()}")
            return 1
        times["upload + checks"] = run.upload_s
        for stage in ("QUEUED", "TRAINING", "GENERATING", "FILTERING"):
            if stage in run.clock.seconds:
                times[stage.lower()] = run.clock.seconds[stage]
        order = run.order
        t = time.monotonic()
        rc = await write_order(client, stack.procs["gateway"].addr, order, opts)
        times["download + write"] = time.monotonic() - t
        return rc


async def write_order(client: GatewayClient, addr: str, order: pb.Order, opts: DemoOptions) -> int:
    """Images and index.html through the CLI's download; results.json and the plain-words
    note about the tiny model on top."""
    order_id = order.name.rsplit("/", 1)[-1]
    out = opts.out / order_id
    with grpc.insecure_channel(
        addr, options=[("grpc.max_receive_message_length", 16 << 20)]
    ) as channel:
        api = pb_grpc.HeadshotServiceStub(channel)
        sheet = await asyncio.to_thread(
            cli.download_order, api, order.name, out, client.token, opts.download_rejected
        )
    results, summary = await client.list_results(order.name, include_rejected=True)
    records = [result_record(r, downloaded_file(out, r)) for r in results]
    records.sort(key=lambda rec: (not rec["delivered"], rec["rank"], str(rec["id"])))
    tiny = opts.base_model is None
    notice = tiny_notice((r.model_id for r in results), tiny)
    doc = {
        "order": MessageToDict(order, preserving_proto_field_name=True),
        "model": "tiny (noise images)" if tiny else str(opts.base_model),
        "notice": notice,
        "summary": MessageToDict(summary, preserving_proto_field_name=True),
        "results": records,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2))
    if notice:
        add_notice(sheet, notice)
    print_summary(order, summary, len(results), notice)
    delivered = sum(1 for r in records if r["delivered"])
    print(f"\n  images:        {out}/ ({delivered} delivered)")
    print(f"  results.json:  {out / 'results.json'}")
    print(f"  contact sheet: {sheet}")
    return 0 if order.state == pb.ORDER_STATE_READY else 1


def downloaded_file(out: Path, r: pb.Result) -> str | None:
    """The file the CLI's download wrote for `r` (relative to `out`), if it kept it."""
    rid = r.name.rsplit("/", 1)[-1]
    stem = f"{r.rank:03d}-{rid}" if r.delivered else f"rejected/{rid}"
    for found in sorted(out.glob(stem + ".*")):
        return str(found.relative_to(out))
    return None


def add_notice(sheet: Path, notice: str) -> None:
    """Put the notice at the top of the contact sheet, under the title."""
    page = sheet.read_text(encoding="utf-8")
    banner = (
        '<p style="background:#fff3cd;border:1px solid #e0b000;padding:.8em;max-width:60em">'
        f"<b>Note:</b> {html.escape(notice)}</p>"
    )
    head, sep, rest = page.partition("</h1>")
    sheet.write_text(head + sep + "\n" + banner + rest if sep else banner + page, encoding="utf-8")


def print_summary(order: pb.Order, summary: pb.RejectionSummary, listed: int, notice: str) -> None:
    print(f"\norder {order.name}: {state_name(order.state)}")
    if order.failure_reason:
        print(f"  failure reason: {order.failure_reason}")
    print(
        f"  candidates {summary.candidates or listed}, passed every check"
        f" {summary.passed}, delivered {summary.delivered or order.delivered_count}"
    )
    by_reason = sorted(summary.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    if by_reason:
        print("  rejected, by reason (a candidate can count under several):")
        for code, n in by_reason:
            print(f"    {code:<28} {n}")
    if notice:
        print("\n  NOTE: " + notice)
    ret = order.retention
    when = [
        (label, ts.ToDatetime().isoformat(timespec="minutes"))
        for label, ts in (
            ("photos", ret.photos_delete_time),
            ("model", ret.model_delete_time),
            ("results", ret.results_delete_time),
        )
        if ts.seconds
    ]
    if when:
        print("  deletion schedule (UTC): " + ", ".join(f"{k} {v}" for k, v in when))


def print_times(times: dict[str, float]) -> None:
    print("\ntime per stage")
    for name, seconds in times.items():
        print(f"  {name:<20} {seconds:7.1f} s")
    print(f"  {'total':<20} {sum(times.values()):7.1f} s")


def check_models(base_model: Path | None) -> None:
    models = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models"))
    missing = [p for p in (models / "face",) if not p.is_dir()]
    if base_model is None and not (models / "tiny-sd15").is_dir():
        missing.append(models / "tiny-sd15")
    if base_model is not None and not (base_model / "model_index.json").is_file():
        raise SystemExit(f"BASE_MODEL {base_model} is not a diffusers folder (no model_index.json)")
    if missing:
        raise SystemExit(f"models missing: {', '.join(map(str, missing))}; run `make models`")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--base-model", type=Path, default=None)
    parser.add_argument("--candidates", type=int, default=0, help="default 64 tiny, 400 real")
    parser.add_argument("--results", type=int, default=0, help="default: the platform's (100)")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--download-rejected", type=int, default=64, help="rejected images kept for the sheet"
    )
    parser.add_argument(
        "--min-photos",
        type=int,
        default=DEMO_MIN_PHOTOS,
        help=f"photos an order needs (platform default 8; demo {DEMO_MIN_PHOTOS})",
    )
    ns = parser.parse_args(argv)
    photos = Path(ns.photos or DEFAULT_PHOTOS).expanduser().resolve()
    base_model = ns.base_model.expanduser().resolve() if ns.base_model else None
    check_models(base_model)
    opts = DemoOptions(
        photos=photos,
        base_model=base_model,
        candidates=ns.candidates or (REAL_CANDIDATES if base_model else TINY_CANDIDATES),
        results=ns.results,
        out=ns.out.resolve(),
        run_dir=(ns.run_dir or ROOT / "var" / "demo" / time.strftime("%Y%m%d-%H%M%S")).resolve(),
        timeout=ns.timeout,
        download_rejected=ns.download_rejected,
        min_photos=ns.min_photos,
    )
    photo_files(photos)  # fail before starting anything

    from devstack.stack import Stack

    admin_token = uuid.uuid4().hex + uuid.uuid4().hex
    stack = Stack(opts.run_dir, service_env=stack_env(opts, admin_token))
    times: dict[str, float] = {}
    print(f"starting the embedded stack in {opts.run_dir} ...", flush=True)
    t = time.monotonic()
    rc = 1
    try:
        stack.start(timeout=300)
        times["stack start"] = time.monotonic() - t
        print(f"stack up in {times['stack start']:.1f}s (logs: {opts.run_dir / 'logs'})")
        rc = asyncio.run(drive(opts, stack, admin_token, times))
    except KeyboardInterrupt:
        print("\ninterrupted")
    finally:
        t = time.monotonic()
        codes = stack.stop()
        times["stop"] = time.monotonic() - t
        bad = {k: v for k, v in codes.items() if v != 0}
        print_times(times)
        if bad:
            print(f"services that did not exit cleanly: {bad}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
