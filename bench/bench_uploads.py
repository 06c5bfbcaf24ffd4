"""One photo per UploadPhotos call: how long each call takes as the order fills up.

Issue 17 measured 1 s for the first one-photo upload and 6 s for the seventh, because each
call analysed every stored photo again. With stored facts each call analyses one photo.
This starts PostgreSQL, nats-server and the gateway with its neighbours in this process
(tests/support/gateway_harness.py), the filter's servicer running the real face stack
(`SelfieAnalyzer` on the built ONNX models, CPU), then uploads the fixture photos one per
call into one order (six of one man, one of them a copy of another, then one of another
man: the copy and the stranger are refused, as a person's set would have them) and
reports each call's wall time and how many photos' pixels the face stack analysed for it.

`--code DIR` imports the services from another checkout (e.g. an export of an earlier
commit) to measure the code before a change with this same script.
Prints a table and writes bench/results/uploads[_<label>].json.

    python bench/bench_uploads.py [--label after] [--photos 7] [--code DIR]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FACES = ROOT / "tests" / "fixtures" / "faces"


def photos(n: int) -> list[Path]:
    files = sorted((FACES / "obama").glob("*.jpg")) + sorted((FACES / "biden").glob("*.jpg"))
    return files[:n]


async def run(files: list[tuple[str, bytes]], threads: int) -> list[dict[str, object]]:
    import grpc

    from devstack.embedded import NatsServer, Postgres
    from headshots.v1 import headshots_pb2 as pb
    from services.filter.analysis import SelfieAnalyzer
    from tests.support import gateway_harness as harness

    models = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")) / "face"
    analyzer = SelfieAnalyzer.load(models, intra_op_threads=threads, prefer_gpu=False)
    analysed: list[str] = []
    real = analyzer.analyze_photos

    def counted(items):  # type: ignore[no-untyped-def]
        analysed.extend(pid for pid, _ in items)
        return real(items)

    analyzer.analyze_photos = counted  # type: ignore[method-assign]
    # The harness's rule analyzer stands in for the face stack; here the real one does.
    harness.RuleAnalyzer = lambda: analyzer  # type: ignore[assignment,misc]

    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        pg = Postgres(Path(tmp) / "pg").start()
        nats = NatsServer(Path(tmp) / "nats").start()
        gw = await harness.start_gateway(pg.url, nats.url, Path(tmp) / "gw")
        try:
            tenant, secret = await gw.tenant()
            md = (("authorization", f"Bearer {secret}"),)

            async def order() -> str:
                made = await gw.api().CreateOrder(
                    pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order()),
                    metadata=md,
                )
                return made.name

            async def one(parent: str, filename: str, data: bytes) -> str:
                async def requests():  # type: ignore[no-untyped-def]
                    yield pb.UploadPhotosRequest(parent=parent, filename=filename, data=data)

                try:
                    answer = await gw.api().UploadPhotos(requests(), metadata=md, timeout=600)
                except grpc.aio.AioRpcError as err:
                    return f"refused ({err.code().name})"
                outcome = answer.outcomes[0]
                return "stored" if outcome.stored else f"refused {outcome.code}"

            await one(await order(), *files[0])  # warm-up: the first runs allocate
            parent = await order()
            rows = []
            for k, (filename, data) in enumerate(files, 1):
                listed = await gw.api().ListPhotos(pb.ListPhotosRequest(parent=parent), metadata=md)
                before = len(analysed)
                t0 = time.perf_counter()
                outcome = await one(parent, filename, data)
                rows.append(
                    {
                        "call": k,
                        "photo": filename,
                        "stored_before": len(listed.photos),
                        "analysed": len(analysed) - before,
                        "seconds": round(time.perf_counter() - t0, 3),
                        "outcome": outcome,
                    }
                )
                print(rows[-1], flush=True)
            return rows
        finally:
            await gw.stop()
            nats.stop()
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=7)
    parser.add_argument("--label", default="")
    parser.add_argument("--threads", type=int, default=2, help="ONNX intra-op threads")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to import from")
    ns = parser.parse_args()
    sys.path.insert(0, str(ns.code.resolve()))
    files = [(p.name, p.read_bytes()) for p in photos(ns.photos)]
    rows = asyncio.run(run(files, ns.threads))
    print("\n| call | photo | stored before | photos analysed | seconds | outcome |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['call']} | {r['photo']} | {r['stored_before']} | {r['analysed']} "
            f"| {r['seconds']:.2f} | {r['outcome']} |"
        )
    doc = {
        "label": ns.label,
        "code": str(ns.code.resolve()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "calls": rows,
        "summary": {
            "first_upload_s": rows[0]["seconds"],
            "last_upload_s": rows[-1]["seconds"],
            "last_upload_photos_analysed": rows[-1]["analysed"],
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"uploads_{ns.label}.json" if ns.label else "uploads.json"
    (RESULTS / name).write_text(json.dumps(doc, indent=2))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
