"""Identity and duplicate checks on the project's labelled identity set (`make bench` row).

    python -m bench.bench_identity [--models DIR] [--sets N]

Every photo goes through the per-photo half of AnalyzeSelfies alone; uploads are judged by
the set half (bench/identity_eval.py). Prints a table and writes
bench/results/bench_identity.json with:
- the descriptor's EER on genuine (same person, other shot) vs impostor pairs, and the
  false-accept / false-reject rates at the configured `same_person_max_distance`, also
  among impostor pairs of one self-reported population (the London set);
- uploads of k genuine + m impostor photos flagged exactly, uploads of strangers refused;
- genuine photos refused as another person or as a duplicate of another shot;
- near-copies caught and different shots called duplicates;
- AnalyzeSelfies ms per photo as the filter runs it (HS_FILTER_IMAGE_THREADS photos side by
  side, HS_FILTER_INTRA_OP_THREADS each; 8 photos in one call).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench import identity_eval as ev
from services.faces.duplicates import load_duplicate_thresholds
from services.faces.identity import load_identity_thresholds
from services.filter.analysis import SelfieAnalyzer
from services.filter.settings import FilterSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_identity.json"


def analyze_selfies_ms(analyzer: SelfieAnalyzer, items: list[ev.Item], repeat: int = 3) -> float:
    """Wall time of one AnalyzeSelfies call on 8 real photos of mixed sizes, per photo."""
    upload = [(it.key, it.data()) for it in items]
    analyzer.analyze(upload)  # warm-up: first runs allocate
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        analyzer.analyze(upload)
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / len(upload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_models = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")) / "face"
    parser.add_argument("--models", type=Path, default=default_models)
    parser.add_argument("--sets", type=int, default=40, help="impostor draws per genuine set")
    ns = parser.parse_args()
    # As the filter runs it: photos side by side, one intra-op thread each by default.
    analyzer = SelfieAnalyzer.served(FilterSettings(), ns.models, prefer_gpu=False)
    id_cfg = load_identity_thresholds()
    dup_cfg = load_duplicate_thresholds()
    items = ev.load_items()
    t0 = time.perf_counter()
    analysed = ev.analyse(analyzer, items)
    pairs = ev.pair_report(analysed, id_cfg["same_person_max_distance"])
    populations = ev.population_report(analysed, id_cfg["same_person_max_distance"])
    dups = ev.duplicate_report(analysed, dup_cfg)
    uploads = ev.upload_report(analyzer, analysed, impostor_sets=ns.sets)
    obama = [it for it in items if it.person == "obama" and not it.synthetic]
    mixed = obama[:4] + [it for it in items if it.person == "biden" and not it.synthetic][:2]
    mixed += [it for it in items if it.key.startswith("others-")][:2]
    ms = analyze_selfies_ms(analyzer, mixed)
    report = {
        "set": {
            "photos": len(items),
            "real_photos": sum(not it.synthetic for it in items),
            "people": len({it.person for it in items}),
            "not_usable_alone": sum(not analysed.ok(i) for i in range(len(items))),
        },
        "thresholds": {**id_cfg, **dup_cfg},
        "pairs": pairs,
        "same_population_pairs": populations,
        "duplicates": dups,
        "uploads": uploads,
        "timing": {
            "analyze_selfies_ms_per_photo": ms,
            "per_photo_alone_ms": analysed.ms_per_photo,
            "threads": 2,
        },
        "summary": {
            "eer": pairs["eer"],
            "far_at_threshold": pairs["far_at_threshold"],
            "frr_at_threshold": pairs["frr_at_threshold"],
            **{f"far_within_{k}": v["far_at_threshold"] for k, v in populations.items()},
            **{
                f"flagged_exactly_{k}": v["flagged_exactly_rate"]
                for k, v in uploads.items()
                if "flagged_exactly_rate" in v
            },
            "strangers_refused": uploads["strangers_11"]["refused_rate"],
            "genuine_called_other_person": uploads["genuine_uploads"]["other_person_rate"],
            "genuine_called_duplicate": uploads["genuine_uploads"]["duplicate_rate"],
            "different_shots_called_duplicate": dups["different_shots_called_duplicate"],
            "near_copies_caught": dups["near_copies_caught"],
            "analyze_selfies_ms_per_photo": ms,
        },
        "wall_s": time.perf_counter() - t0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"{report['set']}")
    width = max(len(k) for k in report["summary"])
    for key, value in report["summary"].items():
        print(f"{key:<{width}}  {value:.4g}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
