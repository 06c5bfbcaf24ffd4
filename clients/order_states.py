"""Order states as a client sees them: names, which ones end an order, and how long an
order spent in each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from headshots.v1 import headshots_pb2 as pb

# States an order never leaves: a watcher stops at the first of them.
TERMINAL_STATES = frozenset(
    {
        pb.ORDER_STATE_READY,
        pb.ORDER_STATE_FAILED,
        pb.ORDER_STATE_CANCELLED,
        pb.ORDER_STATE_DELETED,
        pb.ORDER_STATE_EXPIRED,
    }
)


def state_name(state: int) -> str:
    """ORDER_STATE_READY -> "READY"."""
    return pb.OrderState.Name(state).removeprefix("ORDER_STATE_")  # type: ignore[arg-type]


def stage_name(stage: int) -> str:
    """STAGE_TRAINING -> "training"."""
    return pb.Stage.Name(stage).removeprefix("STAGE_").lower()  # type: ignore[arg-type]


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
