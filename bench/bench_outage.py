"""Order time under a 10 s PostgreSQL outage during generation.

Starts the embedded stack with the e2e harness's fast settings (the tiny model, short ack
waits, a stuck-order timer of 90 s), runs one undisturbed order (the normal time), then a
second order in which PostgreSQL is stopped for `--outage` seconds as soon as the
generator reports its first batch, and measures:

- order_s: SubmitOrder -> terminal state of the disturbed order;
- normal_s: the same for the undisturbed order;
- excess_s: order_s - normal_s - outage (what the outage cost beyond its own length; on a
  machine shared with other work the two orders' speeds differ, so read it with tail_s);
- tail_s: PostgreSQL back -> terminal state (the rest of the work plus any stall);
- dead letters left for the disturbed order and the reconciler's re-queues of it (from the
  gateway's log: a re-queue means the order stalled until the stuck-order timer).

Runs are kept by `--label` (e.g. "before" and "after" a change) in
bench/results/outage.json, so one table shows both.

    python bench/bench_outage.py [--label after] [--outage 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devstack.demo import GatewayClient, open_channel, state_name  # noqa: E402
from devstack.stack import Stack  # noqa: E402
from headshots.v1 import headshots_pb2 as pb  # noqa: E402
from headshots.v1 import jobs_pb2  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    ADMIN_TOKEN,
    FACES,
    ORDER_FIELDS,
    STAGE_SUBJECTS,
    dead_letters,
    first_event,
    make_stack,
)

RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "outage.json"
WITHIN_S = 1800.0


def mid_work(event: jobs_pb2.OrderEvent) -> bool:
    return event.total > 0 and 0 < event.done < event.total


async def one_order(stack: Stack, outage_s: float) -> dict[str, object]:
    photos = sorted((FACES / "obama").glob("*.jpg"))
    async with open_channel(stack.procs["gateway"].addr) as channel:
        admin = GatewayClient(channel, ADMIN_TOKEN)
        tenant, secret = await admin.bootstrap_tenant(f"bench-outage-{int(time.time())}")
        client = GatewayClient(channel, secret)
        order = await client.create_order(tenant, display_name="bench outage", **ORDER_FIELDS)
        await client.upload_photos(order.name, photos)
        subject = STAGE_SUBJECTS["generator"]
        back_at = 0.0
        async with first_event(stack, subject, order.name, mid_work) as generating:
            t0 = time.monotonic()
            await client.submit(order.name)
            if outage_s > 0:
                await asyncio.wait_for(generating, WITHIN_S)
                assert stack.postgres is not None
                down_at = time.monotonic() - t0
                stack.postgres.stop()
                await asyncio.sleep(outage_s)
                stack.postgres.start()
                back_at = time.monotonic() - t0
                print(f"  PostgreSQL down {down_at:.1f}s..{back_at:.1f}s", flush=True)
        final = await wait_terminal(client, order.name)
        order_s = time.monotonic() - t0
    dead = await dead_letters(stack, order.name)
    return {
        "order_s": round(order_s, 2),
        "tail_s": round(order_s - back_at, 2),
        "requeues": requeues(stack, order.name),
        "state": state_name(final.state),
        "failure_reason": final.failure_reason,
        "dead_letters": len(dead),
    }


def requeues(stack: Stack, order_name: str) -> int:
    """Re-queues of the order in the gateway's log (one line per re-queue)."""
    order_id = order_name.rsplit("/", 1)[1]
    lines = stack.procs["gateway"].log_path.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if order_id in line and "requeue" in line)


async def wait_terminal(client: GatewayClient, name: str) -> pb.Order:
    """Polls GetOrder (a watch stream would break during the outage), riding out errors."""
    deadline = time.monotonic() + WITHIN_S
    terminal = (pb.ORDER_STATE_READY, pb.ORDER_STATE_FAILED)
    while True:
        try:
            order = await client.get_order(name)
            if order.state in terminal:
                return order
        except Exception as err:  # the API may refuse while PostgreSQL is down
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never reached a terminal state") from err
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never reached a terminal state")
        await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--run-dir", type=Path, help="keep the stack's folder (logs) here")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        stack = make_stack(ns.run_dir or Path(tmp))
        # The harness asks for 24 training steps, but the trainer clamps an explicit step
        # count to its minimum (100); the floor is lowered so the harness gets what it asks.
        stack.service_env["trainer"]["HS_TRAINER_MIN_STEPS"] = "24"
        try:
            stack.start(timeout=300)
            normal = asyncio.run(one_order(stack, 0.0))
            print(f"  undisturbed: {normal}", flush=True)
            disturbed = asyncio.run(one_order(stack, ns.outage))
            print(f"  outage: {disturbed}", flush=True)
        finally:
            stack.stop()
    normal_s = float(normal["order_s"])  # type: ignore[arg-type]
    order_s = float(disturbed["order_s"])  # type: ignore[arg-type]
    run = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "outage_s": ns.outage,
        "normal_s": normal_s,
        "order_s": order_s,
        "excess_s": round(order_s - normal_s - ns.outage, 2),
        **{k: v for k, v in disturbed.items() if k != "order_s"},
    }
    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs = dict(doc.get("runs", {}))
    runs[ns.label] = run
    summary = {
        f"{label}_{key}": r[key]
        for label, r in runs.items()
        for key in ("normal_s", "order_s", "excess_s", "tail_s", "dead_letters", "requeues")
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "bench": "outage",
                "what": f"order time with PostgreSQL stopped {ns.outage:g} s during generation",
                "machine": {"cpus": os.cpu_count()},
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )
    head = ("run", "normal s", "outage s", "order s", "excess s", "tail s")
    print("\n" + "".join(f"{h:>10}" for h in head) + "  state")
    for label, r in runs.items():
        nums = (r["normal_s"], r["outage_s"], r["order_s"], r["excess_s"], r.get("tail_s", 0.0))
        print(
            f"{label:>10}"
            + "".join(f"{v:>10.1f}" for v in nums)
            + f"  {r['state']} dead letters={r['dead_letters']} re-queues={r.get('requeues')}"
        )
    print(f"wrote {OUT}")
    # The tiny model draws no faces, so the filter's NOTHING_PASSED verdict also means every
    # stage ran to its end; any other failure is the outage's doing.
    reason = str(disturbed["failure_reason"])
    if disturbed["state"] != "READY" and not reason.startswith("NOTHING_PASSED"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
