"""The filter calibration set (tests/fixtures/filter-calibration) run through the scorer.

Shared by tests/unit/test_filter_calibration.py and bench/bench_filter_calibration.py: one
manifest reader, one definition of "caught" per label, one confusion table.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.faces.face_stack import FaceStack
from services.faces.identity import IdentityModel
from services.filter.scoring import CandidateScorer
from services.filter.worker import CandidateVerdict

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = ROOT / "tests" / "fixtures" / "filter-calibration"
FACES = ROOT / "tests" / "fixtures" / "faces"

# The reasons that count as catching each label; `good` must get none at all.
EXPECTED: dict[str, frozenset[str]] = {
    "eyes_closed": frozenset({"EYES_CLOSED"}),
    "wink": frozenset({"EYES_CLOSED"}),
    "gaze_iris": frozenset({"EYES_INCONSISTENT", "EYES_CLOSED"}),
    "hand_malformed": frozenset({"BROKEN_HAND"}),
    "partial": frozenset({"PARTIAL_FACE"}),
    "good": frozenset(),
}
LABELS = tuple(EXPECTED)


@dataclass(frozen=True)
class Item:
    file: str
    label: str
    kind: str  # real, generated, synthetic
    note: str

    @property
    def path(self) -> Path:
        if self.file.startswith("faces/"):
            return FACES / self.file[len("faces/") :]
        return CALIBRATION / self.file


@dataclass(frozen=True)
class Outcome:
    item: Item
    reasons: tuple[str, ...]

    @property
    def caught(self) -> bool:
        """For a defect: one of its reasons fired. For a good image: nothing fired."""
        expected = EXPECTED[self.item.label]
        if not expected:
            return not self.reasons
        return bool(expected & set(self.reasons))


def manifest() -> list[Item]:
    with (CALIBRATION / "MANIFEST.csv").open() as f:
        return [Item(r["file"], r["label"], r["kind"], r["note"]) for r in csv.DictReader(f)]


def scorer(stack: FaceStack, identity: IdentityModel) -> CandidateScorer:
    return CandidateScorer(stack, identity)


def run(scorer: CandidateScorer, items: Sequence[Item], batch: int = 8) -> list[Outcome]:
    """Score every image (no selfie reference: likeness is not what this set measures)."""
    out: list[Outcome] = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        verdicts: list[CandidateVerdict] = scorer.score(
            [it.path.read_bytes() for it in chunk], None
        )
        out += [Outcome(it, tuple(v.reasons)) for it, v in zip(chunk, verdicts, strict=True)]
    return out


@dataclass(frozen=True)
class Rate:
    label: str
    n: int
    caught: int  # defects: caught; good: passed
    real: int  # how many of n are real or generated (not synthetic)
    real_caught: int

    @property
    def rate(self) -> float:
        return self.caught / self.n if self.n else 0.0


def rates(outcomes: Sequence[Outcome]) -> dict[str, Rate]:
    result = {}
    for label in LABELS:
        rows = [o for o in outcomes if o.item.label == label]
        real = [o for o in rows if o.item.kind != "synthetic"]
        result[label] = Rate(
            label,
            len(rows),
            sum(o.caught for o in rows),
            len(real),
            sum(o.caught for o in real),
        )
    return result


def confusion(outcomes: Sequence[Outcome]) -> dict[str, Counter[str]]:
    """label → how often each reason fired on it ("(none)" for a clean pass)."""
    table: dict[str, Counter[str]] = {label: Counter() for label in LABELS}
    for o in outcomes:
        table[o.item.label].update(o.reasons or ("(none)",))
    return table


def format_table(outcomes: Sequence[Outcome]) -> str:
    r = rates(outcomes)
    table = confusion(outcomes)
    reasons = sorted({k for c in table.values() for k in c})
    head = f"{'label':<16}{'n':>4}{'caught':>8}{'rate':>7}{'real':>9}  " + "  ".join(reasons)
    lines = [head]
    for label in LABELS:
        x = r[label]
        cells = "  ".join(f"{table[label].get(k, 0):>{len(k)}}" for k in reasons)
        real = f"{x.real_caught}/{x.real}"
        lines.append(f"{label:<16}{x.n:>4}{x.caught:>8}{x.rate:>7.0%}{real:>9}  {cells}")
    lines.append("(good: caught = passed with no reason; real = not synthetic, caught/n)")
    return "\n".join(lines)


@dataclass(frozen=True)
class HandRuleCost:
    rule: str
    malformed_caught: int
    malformed: int
    real_caught: int  # of the real (not synthetic) malformed-hand renders
    real: int
    good_lost: int
    good: int


def hand_rule_costs(stack: FaceStack, items: Sequence[Item]) -> list[HandRuleCost]:
    """What the hand rule in use, and its strictest product form, catch and cost.

    The strict form, "any hand the landmark model confirms rejects the candidate", is the
    issue's product rule taken literally (a headshot rarely needs a hand); it is the upper
    bound of what a rule that does not look at the hand's shape can catch.
    """
    from dataclasses import replace

    from services.faces.hand_check import HandThresholds, judge_hands
    from services.faces.image_io import decode_image

    t = HandThresholds.load()
    rules = {
        "hand rule in use (hand_check.judge_hands)": lambda hs, face: judge_hands(hs, face, t),
        "any visible hand rejects": lambda hs, face: judge_hands(
            hs, face, replace(t, sure_presence=2.0)
        ),
    }
    counts = {name: [0, 0, 0, 0, 0, 0] for name in rules}
    stack.hand_detector.palm_threshold = t.palm_score
    for it in items:
        if it.label not in ("good", "hand_malformed"):
            continue
        image = decode_image(it.path.read_bytes())
        faces = [f for f in stack.detect([image])[0] if f.score >= 0.5]
        hands = stack.hand_detector.detect([image])[0]
        for name, rule in rules.items():
            rejected = not rule(hands, faces[0] if faces else None).well_formed
            c = counts[name]
            if it.label == "good":
                c[4] += rejected
                c[5] += 1
            else:
                c[0] += rejected
                c[1] += 1
                if it.kind != "synthetic":
                    c[2] += rejected
                    c[3] += 1
    return [HandRuleCost(name, *c) for name, c in counts.items()]
