"""The identity evaluation: a labelled set of real photos through AnalyzeSelfies' own code.

The set (tests/fixtures/identity/README.md): 36 members of Congress with two official
portraits each, taken for different Congresses (genuine pairs that are NOT duplicates), 14
second versions of one of those shots re-processed by the source (mirrored, re-cropped,
re-encoded: true near-copies), one person's 8 selfies from two sessions (6-photo uploads),
40 people of the London set (neutral and smiling, one session; mostly Black, East and West
Asian), the fixture photos of Obama (5 shots, one stored twice) and Biden (3 shots), and
40 one-photo members of Congress (impostors only). Near-copies are also
made here from every genuine shot: resized, cropped, re-encoded (labelled synthetic).

Every photo is analysed alone by `SelfieAnalyzer.analyze_photos` (the per-photo half of
AnalyzeSelfies, which a batch cannot change: tests/unit/test_identity_eval.py checks it);
uploads are then assembled from those results and judged by `SelfieAnalyzer.judge`, the
set half, exactly as a call with those photos would be.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from services.faces.duplicates import near_duplicates
from services.filter.analysis import SelfieAnalyzer, _Photo

ROOT = Path(__file__).resolve().parents[1]
IDENTITY = ROOT / "tests" / "fixtures" / "identity"
FACES = ROOT / "tests" / "fixtures" / "faces"


@dataclass(frozen=True)
class Item:
    key: str  # unique name of the photo in the set
    path: Path
    person: str
    shot: str  # photos of one shot are near-copies of each other
    synthetic: str = ""  # how a made-here near-copy was made ("" for a real file)
    population: str = ""  # self-reported by the source (London set); "" where not recorded

    def data(self) -> bytes:
        raw = self.path.read_bytes()
        return make_copy(raw, self.synthetic) if self.synthetic else raw


def make_copy(raw: bytes, how: str) -> bytes:
    """A near-copy of a photo: the same pixels resized, cropped or re-encoded."""
    with Image.open(io.BytesIO(raw)) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    if how == "resize":
        rgb = rgb.resize((max(1, w * 3 // 4), max(1, h * 3 // 4)), Image.Resampling.BILINEAR)
    elif how == "crop":
        rgb = rgb.crop((w // 16, h // 20, w - w // 16, h - h // 20))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=60 if how == "jpeg" else 85)
    return out.getvalue()


def load_items(*, synthetic: Sequence[str] = ("resize", "jpeg")) -> list[Item]:
    items: list[Item] = []
    with (IDENTITY / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            path = IDENTITY / row["file"]
            items.append(
                Item(path.stem, path, row["person"], row["shot"], population=row["population"])
            )
    for person in ("obama", "biden"):
        for path in sorted((FACES / person).glob("*.jpg")):
            # The two Bioguide files of Obama are one portrait stored twice.
            shot = "obama-bioguide" if "bioguide" in path.stem and person == "obama" else path.stem
            items.append(Item(path.stem, path, person, shot))
    for path in sorted((FACES / "others").glob("*.jpg")):
        items.append(Item(f"others-{path.stem}", path, path.stem, path.stem))
    # Near-copies of the shots of people with several shots (the ones uploads are made of).
    shots_by_person: dict[str, set[str]] = {}
    for it in items:
        shots_by_person.setdefault(it.person, set()).add(it.shot)
    genuine_shots: dict[str, Item] = {}
    for it in items:
        if len(shots_by_person[it.person]) >= 2:
            genuine_shots.setdefault(it.shot, it)
    for it in list(genuine_shots.values()):
        for how in synthetic:
            items.append(Item(f"{it.key}~{how}", it.path, it.person, it.shot, synthetic=how))
    return items


@dataclass
class Analysed:
    items: list[Item]
    photos: list[_Photo]
    ms_per_photo: float = 0.0
    by_key: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_key = {it.key: i for i, it in enumerate(self.items)}

    def ok(self, i: int) -> bool:
        """Usable on its own and described: what the identity check sees."""
        return self.photos[i].usable and self.photos[i].embedding is not None

    def upload(self, keys: Sequence[str]) -> list[_Photo]:
        """Fresh copies of the analysed photos, as one upload would carry them."""
        out = []
        for k in keys:
            p = self.photos[self.by_key[k]]
            q = dataclasses.replace(p, out=type(p.out)())
            q.out.CopyFrom(p.out)
            q.out.photo_id = k
            out.append(q)
        return out


def analyse(analyzer: SelfieAnalyzer, items: Sequence[Item]) -> Analysed:
    import time

    photos = []
    t0 = time.perf_counter()
    for it in items:
        photos.append(analyzer.analyze_photos([(it.key, it.data())])[0])
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(items))
    return Analysed(list(items), photos, ms)


# ---------------------------------------------------------------------------- pairs


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the share of genuine pairs over the threshold equals the share
    of impostor pairs at or under it (linear search over every observed distance)."""
    cands = np.unique(np.concatenate([genuine, impostor]))
    best = (1.0, 0.0)
    gap = np.inf
    for t in cands:
        frr = float(np.mean(genuine > t))
        far = float(np.mean(impostor <= t))
        if abs(frr - far) < gap:
            gap, best = abs(frr - far), ((frr + far) / 2, float(t))
    return best


@dataclass
class PairDistances:
    """Descriptor distances between photos of different shots: genuine = same person,
    impostor = different people, `within` = impostors of one self-reported population."""

    genuine: np.ndarray
    impostor: np.ndarray
    within: dict[str, np.ndarray]


def pair_distances(items: Sequence[Item], embeddings: Sequence[np.ndarray]) -> PairDistances:
    gen: list[float] = []
    imp: list[float] = []
    within: dict[str, list[float]] = {}
    for i, j in itertools.combinations(range(len(items)), 2):
        x, y = items[i], items[j]
        if x.shot == y.shot:
            continue
        d = float(np.linalg.norm(embeddings[i] - embeddings[j]))
        if x.person == y.person:
            gen.append(d)
            continue
        imp.append(d)
        if x.population and x.population == y.population:
            within.setdefault(x.population, []).append(d)
    return PairDistances(
        np.array(gen), np.array(imp), {k: np.array(v) for k, v in sorted(within.items())}
    )


def usable_pairs(a: Analysed) -> PairDistances:
    """Pairs of the usable real photos (what the identity check sees)."""
    real = [i for i, it in enumerate(a.items) if not it.synthetic and a.ok(i)]
    return pair_distances([a.items[i] for i in real], [a.photos[i].embedding for i in real])


def pair_report(a: Analysed, pair_limit: float) -> dict[str, float | int]:
    """Descriptor distances between usable real photos: genuine = same person, other shot;
    impostor = different people."""
    pairs = usable_pairs(a)
    g, m = pairs.genuine, pairs.impostor
    eer, at = equal_error_rate(g, m)
    return {
        "genuine_pairs": len(g),
        "impostor_pairs": len(m),
        "eer": eer,
        "eer_threshold": at,
        "far_at_threshold": float(np.mean(m <= pair_limit)),
        "frr_at_threshold": float(np.mean(g > pair_limit)),
        "genuine_max": float(g.max()),
        "impostor_min": float(m.min()),
        "impostor_p01": float(np.percentile(m, 1)),
        "impostor_p001": float(np.percentile(m, 0.1)),
    }


def population_report(a: Analysed, pair_limit: float) -> dict[str, dict[str, float | int]]:
    """False accepts at the limit among impostor pairs of one self-reported population (the
    hard case: an impostor who looks like the person's population), per population."""
    return {
        pop: {
            "impostor_pairs": len(d),
            "far_at_threshold": float(np.mean(d <= pair_limit)),
            "impostor_min": float(d.min()),
        }
        for pop, d in usable_pairs(a).within.items()
    }


def duplicate_report(a: Analysed, config: dict[str, float]) -> dict[str, float | int]:
    """Near-copies caught (same shot, other file) and different shots of one person taken
    for duplicates (the error the issue is about)."""
    ok = [i for i in range(len(a.items)) if a.ok(i)]
    copies = caught = shots = false = 0
    for i, j in itertools.combinations(ok, 2):
        x, y = a.items[i], a.items[j]
        if x.person != y.person:
            continue
        pair = near_duplicates(
            np.stack([a.photos[i].chip, a.photos[j].chip]),
            np.stack([a.photos[i].embedding, a.photos[j].embedding]),
            config=config,
        )
        if x.shot == y.shot:
            copies += 1
            caught += bool(pair)
        elif not x.synthetic and not y.synthetic:
            shots += 1
            false += bool(pair)
    return {
        "near_copy_pairs": copies,
        "near_copies_caught": caught / max(1, copies),
        "different_shot_pairs": shots,
        "different_shots_called_duplicate": false / max(1, shots),
    }


# ---------------------------------------------------------------------------- uploads


def shots_of(a: Analysed, person: str) -> list[str]:
    """One usable real photo per distinct shot of a person."""
    seen: dict[str, str] = {}
    for i, it in enumerate(a.items):
        if it.person == person and not it.synthetic and a.ok(i):
            seen.setdefault(it.shot, it.key)
    return list(seen.values())


def impostor_pool(a: Analysed, exclude: str, population: str = "") -> list[str]:
    """One usable real photo per other person (of that population, when one is given)."""
    seen: dict[str, str] = {}
    for i, it in enumerate(a.items):
        if population and it.population != population:
            continue
        if it.person != exclude and not it.synthetic and a.ok(i):
            seen.setdefault(it.person, it.key)
    return list(seen.values())


# (genuine, impostor) photos per upload. 6+2 is the upload; 6+1, 3+1 and 2+1 the
# single-impostor ones.
UPLOAD_KINDS = ((6, 2), (6, 1), (5, 2), (4, 2), (3, 2), (3, 1), (2, 1))


def upload_report(
    analyzer: SelfieAnalyzer, a: Analysed, *, impostor_sets: int = 40
) -> dict[str, dict[str, float | int]]:
    """k genuine + m impostor uploads: flagged exactly = the set's different_person list is
    the impostors, no more, no fewer. Genuine-only uploads: genuine photos refused as another
    person or as a duplicate. Strangers only: refused as a whole."""
    rng = np.random.default_rng(16)
    people = sorted({it.person for it in a.items})
    multi = {p: shots_of(a, p) for p in people}
    out: dict[str, dict[str, float | int]] = {}

    def run(kind: str, genuine: list[str], m: int, person: str, population: str = "") -> None:
        pool = impostor_pool(a, person, population)
        r = out.setdefault(kind, {"uploads": 0, "flagged_exactly": 0, "impostors_missed": 0})
        for _ in range(impostor_sets):
            strangers = list(rng.choice(pool, size=m, replace=False))
            keys = genuine + strangers
            res = analyzer.judge(a.upload(keys))
            flagged = set(res.set.different_person)
            r["uploads"] += 1
            r["flagged_exactly"] += flagged == set(strangers)
            r["impostors_missed"] += len(set(strangers) - flagged)

    for person, shots in multi.items():
        for k, m in UPLOAD_KINDS:
            # Choices of k shots of the person, each with fresh impostors: 5 at most, but
            # every one (up to 28, C(8, 6)) for 6-photo uploads, which only the people with
            # 6+ shots can form.
            most = 28 if k >= 6 else 5
            for combo in itertools.islice(itertools.combinations(shots, k), most):
                run(f"{k}+{m}", list(combo), m, person)
    for r in out.values():
        r["flagged_exactly_rate"] = r["flagged_exactly"] / max(1, r["uploads"])
    # Genuine uploads: every shot of a person plus its near-copies.
    gen = {"photos": 0, "called_other_person": 0, "called_duplicate_of_other_shot": 0}
    for shots in multi.values():
        if len(shots) < 2:
            continue
        res = analyzer.judge(a.upload(shots))
        gen["photos"] += len(shots)
        gen["called_other_person"] += len(res.set.different_person)
        gen["called_duplicate_of_other_shot"] += sum(bool(p.duplicate_of) for p in res.photos)
    gen_rate = {
        "other_person_rate": gen["called_other_person"] / max(1, gen["photos"]),
        "duplicate_rate": gen["called_duplicate_of_other_shot"] / max(1, gen["photos"]),
    }
    out["genuine_uploads"] = {**gen, **gen_rate}
    # Strangers: 11 one-photo members of Congress, 20 draws.
    singles = [p for p, s in multi.items() if len(s) == 1]
    refused = 0
    draws = 20
    for _ in range(draws):
        keys = [multi[p][0] for p in rng.choice(singles, size=11, replace=False)]
        res = analyzer.judge(a.upload(keys))
        refused += res.set.usable_count == 0
    out["strangers_11"] = {"uploads": draws, "refused": refused, "refused_rate": refused / draws}
    # Lookalike impostors: a London-set person's two photos and one impostor of the same
    # self-reported population, the pairs the descriptor confuses most (run last, so the
    # draws above stay as they were).
    population_of = {it.person: it.population for it in a.items if it.population}
    for person, shots in multi.items():
        if person in population_of and len(shots) >= 2:
            run("2+1-same-population", shots[:2], 1, person, population_of[person])
    same = out.get("2+1-same-population")
    if same:
        same["flagged_exactly_rate"] = same["flagged_exactly"] / max(1, same["uploads"])
    return out
