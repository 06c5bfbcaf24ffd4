"""The identity limit on faces no threshold was chosen on: ~1,600 members of Congress (issue 16).

    python -m bench.identity_heldapart --repo PATH [--min-congress 95] [--models DIR]

Not part of `make bench`: it needs a clone of `voteview/member_photos` (UCLA's Voteview
project; official congressional portraits, works of the U.S. government and so in the public
domain, 17 U.S.C. 105), about 2,000 photos that are too many to keep in this repository. PATH
is that clone's git directory (a bare mirror works: files are read with `git show`).

What it measures, with every photo analysed alone by AnalyzeSelfies' per-photo half exactly
as the product does (`SelfieAnalyzer.analyze_photos`):

1. False accepts at the configured `same_person_max_distance` (and at limits around it)
   among all pairs of different members who served since `--min-congress` and are not in
   the identity set (tests/fixtures/identity, tests/fixtures/faces). A member who changed
   party has several ids: people are told apart by name.
2. The same among photos whose skin measures darker: the individual typology angle (ITA,
   Chardon et al. 1991: atan((L* - 50) / b*) in CIELAB; their classes put -30..10 degrees
   at "brown" and below -30 at "dark"; the cut here is -10) of the cheeks and forehead of
   the descriptor's own chip, colour photos only. It is a measurement of the photo, not
   anyone's stated population, and light moves it: read it as "faces of darker skin,
   mostly", the case the London set's Black impostor pairs are the hard end of.
3. Near-copies the source made of one shot (the repository's history holds a second,
   re-processed file for some members: mirrored and re-scaled to 175 px): how many the
   duplicate check catches. Missing them costs training time, not a person's photo.

Writes bench/results/identity_heldapart.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import identity_eval as ev
from services.faces.duplicates import load_duplicate_thresholds, near_duplicates
from services.faces.identity import load_identity_thresholds, pairwise_distances
from services.faces.image_io import decode_image
from services.filter.analysis import SelfieAnalyzer, _Photo
from services.filter.settings import FilterSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "identity_heldapart.json"
# The fixtures' Obama and Biden folders are named, not numbered; their Congress ids are these.
FIXTURE_NAMES = ("OBAMA, Barack", "BIDEN, Joseph Robinette, Jr.")
DARKER_ITA = -10.0
# Grey photos have no colour (skin chroma 0-2) and their ITA is meaningless: colour photos
# only. Very dark skin has little chroma too (6.6-9.7 in the London set), so the bar is low.
MIN_SKIN_CHROMA = 4.0
LIMIT_STEPS = (-0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.08)

# ---------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Member:
    icpsr: str
    name: str
    congress: int
    path: str  # inside the repository


def git_bytes(repo: Path, rev_path: str) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(repo), "show", rev_path], capture_output=True, check=True
    ).stdout


def members(repo: Path, min_congress: int) -> list[Member]:
    """Members with a Biographical Directory portrait, served since `min_congress`, not in
    the identity set."""
    items = ev.load_items(synthetic=())
    used = {it.person for it in items} | {it.path.stem for it in items}
    text = git_bytes(repo, "HEAD:members.csv").decode()
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        if row["source"] != "bio_guide" or int(row["congress"]) < min_congress:
            continue
        if row["icpsr"] in used or row["name"].startswith(FIXTURE_NAMES):
            continue
        out.append(Member(row["icpsr"], row["name"], int(row["congress"]), row["image"]))
    return out


def earlier_versions(repo: Path, wanted: set[str]) -> dict[str, list[str]]:
    """For each wanted portrait path, the commits that wrote a version of it (newest first)."""
    args = ["log", "--format=C %H", "--name-only", "--diff-filter=AM", "--", "images/bio_guide"]
    log = subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    commits: dict[str, list[str]] = {}
    current = ""
    for line in log.splitlines():
        if line.startswith("C "):
            current = line[2:]
        elif line.strip() in wanted:
            commits.setdefault(line.strip(), []).append(current)
    return {p: c for p, c in commits.items() if len(c) >= 2}


# ---------------------------------------------------------------------------- skin tone


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """N x 3 sRGB (0-255) -> N x 3 CIELAB (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ to_xyz.T / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1
    )


def skin_tone(chip: np.ndarray) -> tuple[float, float]:
    """(ITA in degrees, chroma) of the skin of a 150 px descriptor chip: both cheeks below
    the eyes and the forehead, medians (robust to a stray eyebrow or shadow)."""
    regions = (chip[85:105, 30:55], chip[85:105, 95:120], chip[20:35, 55:95])
    lab = srgb_to_lab(np.concatenate([r.reshape(-1, 3) for r in regions]))
    lightness, b = float(np.median(lab[:, 0])), float(np.median(lab[:, 2]))
    chroma = float(np.median(np.hypot(lab[:, 1], lab[:, 2])))
    return float(np.degrees(np.arctan2(lightness - 50.0, b))), chroma


# ---------------------------------------------------------------------------- measuring


@dataclass
class Described:
    member: Member
    embedding: np.ndarray
    ita: float
    chroma: float


def colour_chip(analyzer: SelfieAnalyzer, data: bytes) -> np.ndarray:
    """The descriptor's chip of a photo's main face in colour (the analysis keeps only a
    grey signature of it)."""
    image = decode_image(data)
    face = analyzer.stack.detect([image])[0][0]
    return analyzer.stack.identity_chip(image, face)


def describe(
    analyzer: SelfieAnalyzer, repo: Path, people: list[Member]
) -> tuple[list[Described], dict[str, _Photo]]:
    """Each portrait through the product's per-photo analysis: the usable ones described, and
    every analysed photo by its path (the near-copy check reuses them)."""
    out = []
    analysed: dict[str, _Photo] = {}
    for m in people:
        data = git_bytes(repo, f"HEAD:{m.path}")
        photo = analysed[m.path] = analyzer.analyze_photos([(m.icpsr, data)])[0]
        if not photo.usable or photo.embedding is None:
            continue
        ita, chroma = skin_tone(colour_chip(analyzer, data))
        out.append(Described(m, photo.embedding, ita, chroma))
    return out, analysed


def false_accepts(faces: list[Described], limit: float) -> dict[str, object]:
    """Impostor pairs (different names) within each limit around the configured one."""
    e = np.stack([f.embedding for f in faces])
    names = np.array([f.member.name for f in faces])
    d = pairwise_distances(e)
    i, j = np.triu_indices(len(faces), 1)
    impostor = names[i] != names[j]
    dist = d[i, j][impostor]
    closest = np.argsort(dist)[:5]
    pi, pj = i[impostor], j[impostor]
    return {
        "photos": len(faces),
        "impostor_pairs": int(impostor.sum()),
        "far": {
            f"{limit + step:.2f}": float(np.mean(dist <= limit + step)) for step in LIMIT_STEPS
        },
        "closest": [
            [faces[pi[k]].member.name, faces[pj[k]].member.name, round(float(dist[k]), 3)]
            for k in closest
        ],
    }


def copies_caught(
    analyzer: SelfieAnalyzer,
    repo: Path,
    versions: dict[str, list[str]],
    current: dict[str, _Photo],
) -> dict[str, float | int]:
    """The source's two files of one shot, judged as the duplicate check judges a pair. The
    newer file is the one HEAD holds, already analysed (`current`); the older is read from
    the commit that wrote it."""
    config = load_duplicate_thresholds()
    pairs = caught = 0
    for path, commits in sorted(versions.items()):
        older = git_bytes(repo, f"{commits[1]}:{path}")
        photos = [current[path], analyzer.analyze_photos([(f"{path}@{commits[1][:8]}", older)])[0]]
        if not all(p.usable and p.embedding is not None and p.chip is not None for p in photos):
            continue
        pairs += 1
        found = near_duplicates(
            np.stack([p.chip for p in photos]),
            np.stack([p.embedding for p in photos]),
            config=config,
        )
        caught += bool(found)
    return {"pairs": pairs, "caught": caught, "caught_rate": caught / max(1, pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="voteview/member_photos git dir")
    parser.add_argument("--min-congress", type=int, default=95, help="95 = since 1977")
    default_models = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")) / "face"
    parser.add_argument("--models", type=Path, default=default_models)
    ns = parser.parse_args()
    t0 = time.perf_counter()
    analyzer = SelfieAnalyzer.served(FilterSettings(), ns.models, prefer_gpu=False)
    limit = load_identity_thresholds()["same_person_max_distance"]

    # 1. Every held-apart portrait, described as the product describes a selfie.
    people = members(ns.repo, ns.min_congress)
    faces, analysed = describe(analyzer, ns.repo, people)
    # 2. False accepts overall and among darker-skinned colour photos.
    darker = [f for f in faces if f.chroma >= MIN_SKIN_CHROMA and f.ita < DARKER_ITA]
    # 3. The source's own near-copies.
    versions = earlier_versions(ns.repo, {m.path for m in people})
    report = {
        "source": "voteview/member_photos (public domain official portraits)",
        "min_congress": ns.min_congress,
        "members": len(people),
        "usable": len(faces),
        "limit": limit,
        "all": false_accepts(faces, limit),
        "darker_skin": {
            "rule": f"skin chroma >= {MIN_SKIN_CHROMA}, ITA < {DARKER_ITA} degrees",
            **false_accepts(darker, limit),
        },
        "near_copies": copies_caught(analyzer, ns.repo, versions, analysed),
        "wall_s": time.perf_counter() - t0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"{report['members']} members, {report['usable']} usable; limit {limit}")
    for group in ("all", "darker_skin"):
        r = report[group]
        fars = "  ".join(f"{k}: {v * 100:.3f} %" for k, v in r["far"].items())  # type: ignore[union-attr]
        print(f"{group:<12} {r['photos']} photos, {r['impostor_pairs']} impostor pairs  {fars}")
    nc = report["near_copies"]
    print(f"near-copies caught {nc['caught']}/{nc['pairs']}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
