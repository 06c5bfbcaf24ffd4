"""The operator's view of the dead-letter stream: count, replay, purge.

    python -m services.common.bus.deadletters list [-v] [SELECTION]
    python -m services.common.bus.deadletters replay [SELECTION]
    python -m services.common.bus.deadletters purge --yes [SELECTION]

    SELECTION: [--cause C] [--subject S] [--order O] [--seq N ...] (default: all)

Runs in any of the platform's images (it needs only NATS: HS_NATS_URL, or `--nats-url`).
`list` prints the count by cause and subject (`-v`: one line per dead letter). `replay`
publishes each selected dead letter's payload to its original subject under a new message
id (`replay:<stream>:<seq>`, so the duplicate window cannot drop it; workers are idempotent
by job and the gateway by event id) and removes it from the dead-letter stream. `purge`
removes without replaying. The gateway's reconciler already clears dead letters of orders
that ended READY, expired or were erased; what is left belongs to FAILED orders or to
orders still in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.deadletter import (
    cause_of,
    iter_dead_letters,
    order_of,
    remove_dead_letter,
)
from services.common.settings import ServiceSettings


@dataclass(frozen=True)
class Selection:
    cause: str | None = None
    subject: str | None = None
    order: str | None = None
    seqs: frozenset[int] = frozenset()

    def matches(self, seq: int, dead: jobs_pb2.DeadLetter) -> bool:
        if self.seqs and seq not in self.seqs:
            return False
        if self.cause and cause_of(dead.reason) != self.cause:
            return False
        if self.subject and dead.subject != self.subject:
            return False
        owner = order_of(dead)
        return not self.order or (owner is not None and owner[1] == self.order)


async def selected(bus: Bus, sel: Selection) -> list[tuple[int, jobs_pb2.DeadLetter]]:
    return [(seq, d) async for seq, d in iter_dead_letters(bus) if sel.matches(seq, d)]


def replay_msg_id(dead: jobs_pb2.DeadLetter) -> str:
    return f"replay:{dead.stream}:{dead.stream_seq}"


async def count(bus: Bus, sel: Selection) -> Counter[tuple[str, str]]:
    return Counter((cause_of(d.reason), d.subject) for _, d in await selected(bus, sel))


async def replay(bus: Bus, sel: Selection) -> list[int]:
    """Re-publish the selected dead letters to their subjects; returns the DEADLETTER
    sequences replayed (and removed)."""
    done = []
    for seq, dead in await selected(bus, sel):
        await bus.publish(dead.subject, dead.payload, msg_id=replay_msg_id(dead))
        await remove_dead_letter(bus, seq)
        done.append(seq)
    return done


async def purge(bus: Bus, sel: Selection) -> list[int]:
    done = []
    for seq, _dead in await selected(bus, sel):
        if await remove_dead_letter(bus, seq):
            done.append(seq)
    return done


def describe(seq: int, dead: jobs_pb2.DeadLetter) -> str:
    owner = order_of(dead)
    when = dead.time.ToDatetime().isoformat(timespec="seconds") if dead.HasField("time") else "?"
    return (
        f"{seq:>6}  {when}  {cause_of(dead.reason):<10}  {dead.subject:<24}"
        f"  order={owner[1] if owner else '?'}  deliveries={dead.deliveries}  {dead.reason}"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m services.common.bus.deadletters", description=__doc__.splitlines()[0]
    )
    p.add_argument("--nats-url", default=None, help="default: HS_NATS_URL")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("list", "replay", "purge"):
        c = sub.add_parser(name)
        c.add_argument("--cause", help="permanent | retries | crashed | dependency | unknown")
        c.add_argument("--subject", help="original subject, e.g. jobs.generate")
        c.add_argument("--order", help="order id, e.g. o-0a4d86d538f2812e")
        c.add_argument("--seq", type=int, action="append", default=[], help="DEADLETTER seq")
        if name == "list":
            c.add_argument("-v", "--verbose", action="store_true", help="one line each")
        if name == "purge":
            c.add_argument("--yes", action="store_true", help="really delete")
    return p


async def run(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    sel = Selection(ns.cause, ns.subject, ns.order, frozenset(ns.seq))
    url = ns.nats_url or ServiceSettings().nats_url
    bus = await Bus.connect(url, "deadletters-cli")
    try:
        if ns.command == "list":
            found = await selected(bus, sel)
            counts = Counter((cause_of(d.reason), d.subject) for _, d in found)
            print(f"{len(found)} dead letter(s)")
            for (cause, subject), n in sorted(counts.items()):
                print(f"{n:>6}  {cause:<10}  {subject}")
            if ns.verbose:
                for seq, dead in found:
                    print(describe(seq, dead))
        elif ns.command == "replay":
            done = await replay(bus, sel)
            print(f"replayed {len(done)} dead letter(s): {done}")
        else:
            if not ns.yes:
                print("purge deletes dead letters for good; add --yes", file=sys.stderr)
                return 2
            done = await purge(bus, sel)
            print(f"purged {len(done)} dead letter(s): {done}")
    finally:
        await bus.close()
    return 0


def main() -> None:
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
