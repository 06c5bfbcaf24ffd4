"""Order time under a 10 s PostgreSQL outage during generation.

Starts the embedded stack with the e2e harness's fast settings (the tiny model, short ack
waits, a stuck-order timer of 90 s), runs one undisturbed order (the normal time), then a
second order in which PostgreSQL is stopped for `--outage` seconds as soon as the
generator reports its first batch, and measures:

- order_s: SubmitOrder -> terminal state of the disturbed order;
- normal_s: the same for the undisturbed order;
- excess_s: order_s - normal_s - outage (what the outage cost beyond its own length);
- dead letters left for the disturbed order and whether the reconciler had to re-queue.

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
                print(f"  PostgreSQL down {down_at:.1f}s..{time.monotonic() - t0:.1f}s", flush=True)
        final = await wait_terminal(client, order.name)
        order_s = time.monotonic() - t0
    dead = await dead_letters(stack, order.name)
    return {
        "order_s": round(order_s, 2),
        "state": state_name(final.state),
        "failure_reason": final.failure_reason,
        "dead_letters": len(dead),
        "requeued": "re-queued" in final.progress.detail,
    }


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
        for key in ("normal_s", "order_s", "excess_s", "dead_letters", "state")
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
    print(f"\n{'run':<10}{'normal s':>10}{'outage s':>10}{'order s':>10}{'excess s':>10}  state")
    for label, r in runs.items():
        print(
            f"{label:<10}{r['normal_s']:>10.1f}{r['outage_s']:>10.1f}{r['order_s']:>10.1f}"
            f"{r['excess_s']:>10.1f}  {r['state']} dead={r['dead_letters']}"
            f" requeued={r['requeued']}"
        )
    print(f"wrote {OUT}")
    if disturbed["state"] != "READY":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
