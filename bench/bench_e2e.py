"""One order end to end with the tiny model: wall time, time per stage, platform overhead.

Starts the embedded stack (every service its own process), runs one order of the Obama
selfies through the public API, and measures:
- wall time from CreateOrder to READY, and the time the order spent in each state
  (first-seen times of the states streamed by WatchOrder);
- model seconds: the growth of `hs_model_seconds_total` scraped from every service's
  /metrics before and after the order (the services count the time inside model calls:
  face stack, training steps, sampling);
- platform overhead: the time the order waited that no model call on its critical path
  explains: upload minus the selfie analysis, the queue, training minus the training
  steps, generation + final filtering minus the sampling. Candidate scoring runs on
  another process while sampling continues (pipelined), so it is off the critical path:
  its seconds are reported but not subtracted, and the sum of all model seconds can
  exceed the wall time. What remains is queues, I/O, encryption, database, NATS and
  process hand-offs. Prints a table and writes bench/results/e2e.json (`summary` holds the
headline numbers).

    python bench/bench_e2e.py [--candidates 64] [--photos DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from clients.sdk import HeadshotsClient, open_channel, photo_files, state_name  # noqa: E402
from devstack.demo import DEFAULT_PHOTOS, TINY_CANDIDATES, demo_stack  # noqa: E402
from devstack.stack import Stack  # noqa: E402
from headshots.v1 import headshots_pb2 as pb  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STAGES = ("QUEUED", "TRAINING", "GENERATING", "FILTERING")


def scrape_model_seconds(stack: Stack) -> dict[str, float]:
    """hs_model_seconds_total per "service/model" (a service that exports none is absent)."""
    out: dict[str, float] = {}
    for name, proc in stack.procs.items():
        url = f"http://127.0.0.1:{proc.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            out[name] = float("nan")
            continue
        for family in text_string_to_metric_families(text):
            if family.name == "hs_model_seconds":  # the parser drops the _total suffix
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        out[f"{name}/{sample.labels['model']}"] = sample.value
    return out


async def run_order(stack: Stack, token: str, photos: Path, candidates: int) -> dict[str, object]:
    async with open_channel(stack.procs["gateway"].addr) as channel:
        admin = HeadshotsClient(channel, token)
        tenant, secret = await admin.bootstrap_tenant("bench-e2e")
        client = admin.with_token(secret)
        before = scrape_model_seconds(stack)
        run = await client.run_order(
            tenant,
            photo_files(photos),
            within_s=1800,
            display_name="bench e2e",
            candidate_count=candidates,
        )
        after = scrape_model_seconds(stack)
        results, summary = await client.list_results(run.order.name, include_rejected=True)
    model = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
    return {
        "order": run.order.name,
        "state": state_name(run.order.state),
        "failure_reason": run.order.failure_reason,
        "wall_s": run.wall_s,
        "upload_s": run.upload_s,
        "stage_s": {s.lower(): run.clock.seconds.get(s, 0.0) for s in STAGES},
        "states_seen": run.clock.sequence,
        # Offsets of each state's first sighting from the order's start (bench/gpu/order.py).
        "first_seen_s": dict(run.clock.first_seen),
        "model_s_by_service": model,
        "candidates": summary.candidates or len(results),
        "passed": summary.passed,
        "delivered": summary.delivered,
        "ok": run.order.state == pb.ORDER_STATE_READY,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=TINY_CANDIDATES)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ns = parser.parse_args()
    token = os.urandom(16).hex()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        # The fixture folder has six photos, one a re-encoded copy of another: the demo's
        # stack, with its minimum (the platform's is eight), for every service.
        stack = demo_stack(Path(tmp), token)
        t0 = time.monotonic()
        try:
            stack.start(timeout=300)
            start_s = time.monotonic() - t0
            doc = asyncio.run(run_order(stack, token, ns.photos, ns.candidates))
        finally:
            stack.stop()
    model: dict[str, float] = doc["model_s_by_service"]  # type: ignore[assignment]
    model_total = sum(model.values())
    wall = float(doc["wall_s"])  # type: ignore[arg-type]
    stage_s: dict[str, float] = doc["stage_s"]  # type: ignore[assignment]
    overhead_parts = {
        # Upload, CreateOrder and SubmitOrder (which analyses the set again, for the
        # reference embedding) minus both selfie analyses.
        "api calls": wall - sum(stage_s.values()) - model.get("filter/analyze_selfies", 0.0),
        "queued": stage_s["queued"],
        "training": stage_s["training"] - model.get("trainer/lora", 0.0),
        "generating+filtering": stage_s["generating"]
        + stage_s["filtering"]
        - model.get("generator/diffusion", 0.0),
    }
    overhead = sum(overhead_parts.values())
    summary = {
        "order_wall_s": round(wall, 2),
        "upload_s": round(float(doc["upload_s"]), 2),  # type: ignore[arg-type]
        **{f"{k}_s": round(v, 2) for k, v in stage_s.items()},
        "model_s": round(model_total, 2),
        "platform_overhead_s": round(overhead, 2),
        "platform_overhead_share": round(overhead / wall, 3) if wall else None,
        **{f"overhead_{k.replace(' ', '_')}_s": round(v, 2) for k, v in overhead_parts.items()},
        "candidates": doc["candidates"],
        "state": doc["state"],
    }
    full = {
        "bench": "e2e",
        "what": "one order end to end, tiny model, embedded stack, every service a process",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "stack_start_s": round(start_s, 2),
        "summary": summary,
        "detail": doc,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "e2e.json").write_text(json.dumps(full, indent=2))

    print(f"\none order, tiny model, {doc['candidates']} candidates ({os.cpu_count()} CPUs)")
    print(f"{'metric':<28}{'seconds':>10}{'share':>9}")
    print("-" * 47)
    rows = [("stack start", start_s, None), ("order wall (create->READY)", wall, 1.0)]
    rows += [("  upload + checks", float(doc["upload_s"]), None)]  # type: ignore[arg-type]
    rows += [(f"  {k}", v, v / wall if wall else None) for k, v in stage_s.items()]
    rows += [("model calls (all services)", model_total, model_total / wall if wall else None)]
    for svc, v in sorted(doc["model_s_by_service"].items()):  # type: ignore[union-attr]
        if v:
            rows.append((f"  {svc}", v, None))
    rows += [("platform overhead", overhead, overhead / wall if wall else None)]
    rows += [(f"  {k}", v, None) for k, v in overhead_parts.items()]
    for name, secs, share in rows:
        print(f"{name:<28}{secs:>10.2f}{'' if share is None else f'{share:>9.1%}'}")
    print(f"state {doc['state']}; wrote {RESULTS / 'e2e.json'}")
    if not doc["ok"]:
        print(f"order did not reach READY: {doc['failure_reason']}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
