"""`python -m services.filter`: AnalyzeSelfies over gRPC and the `jobs.filter` worker.

Start-up: open the port (health NOT_SERVING), load the face stack and the identity model
once (shared by the gRPC servicer and the worker), migrate the filter schema, connect to
JetStream, then report SERVING and consume. SIGTERM: NOT_SERVING, the worker finishes the
batch in hand or hands it back; scores already written are not recomputed on redelivery.
"""

from __future__ import annotations

import asyncio

from headshots.v1 import internal_pb2_grpc, jobs_pb2
from services.common.bus.consumer import Worker
from services.common.bus.outbox import OutboxRelay
from services.common.grpc.server import ServiceHost, run_service
from services.common.resources import close_resources, open_worker_resources
from services.filter.servicer import FilterServicer
from services.filter.settings import FilterSettings
from services.filter.tables import outbox

SUBJECT = "jobs.filter"
DURABLE = "filter"
SERVICE_NAME = "headshots.v1.FilterService"


async def main() -> None:
    settings = FilterSettings(service_name="filter")
    if settings.grpc_port == 0:
        settings.grpc_port = 50053
    host = ServiceHost(settings)
    servicer = FilterServicer()
    host.add(internal_pb2_grpc.add_FilterServiceServicer_to_server, servicer, SERVICE_NAME)
    state: dict[str, object] = {}

    async def start() -> None:
        from services.filter.analysis import SelfieAnalyzer
        from services.filter.scoring import CandidateScorer
        from services.filter.selection import SelectionConfig, select_results
        from services.filter.worker import FilterWorker

        models = settings.models_path()
        analyzer = await asyncio.to_thread(
            SelfieAnalyzer.load, models, intra_op_threads=settings.intra_op_threads
        )
        # One set of ONNX sessions for both paths: they are thread-safe for run().
        scorer = CandidateScorer(analyzer.stack, analyzer.identity)
        servicer.analyzer = analyzer
        selection = SelectionConfig.load(settings.thresholds_file)

        res = await open_worker_resources(settings, "filter", state, schemas=["filter"])
        assert res.engine is not None
        worker = FilterWorker(
            res.engine,
            res.blobs,
            res.bus,
            scorer,
            lambda picks, n: select_results(picks, n, selection),
            erased=res.erased,
            batch=settings.score_batch,
        )

        async def on_dead(dead: jobs_pb2.DeadLetter) -> None:
            await worker.fail_order(dead)

        state["worker"] = Worker(
            res.bus,
            SUBJECT,
            DURABLE,
            worker.handle,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            concurrency=settings.concurrency,
            on_dead=on_dead,
        )
        state["relay"] = OutboxRelay(res.engine, outbox, res.bus)

    async def run_worker() -> None:
        await state["worker"].run()  # type: ignore[attr-defined]

    async def run_relay() -> None:
        await state["relay"].run()  # type: ignore[attr-defined]

    async def stop() -> None:
        worker = state.get("worker")
        if worker is not None:
            await worker.stop(drain=True, grace=settings.shutdown_grace_seconds - 2)  # type: ignore[attr-defined]
        relay = state.get("relay")
        if relay is not None:
            await relay.stop()  # type: ignore[attr-defined]
        await close_resources(state)

    host.on_startup(start)
    host.background(run_worker)
    host.background(run_relay)
    host.on_shutdown(stop)
    await host.run()


if __name__ == "__main__":
    run_service(main)
