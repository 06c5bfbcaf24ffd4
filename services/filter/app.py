"""The filter's start-up: one set of ONNX sessions for both paths, then the job consumer and
the outbox relay (loaded inside the start-up hook so the port opens first)."""

from __future__ import annotations

import asyncio

from services.common.bus.outbox import OutboxRelay
from services.common.grpc.server import ServiceHost
from services.common.resources import open_resources
from services.filter.analysis import SelfieAnalyzer
from services.filter.scoring import CandidateScorer
from services.filter.selection import SelectionConfig, select_results
from services.filter.servicer import FilterServicer
from services.filter.settings import FilterSettings
from services.filter.tables import outbox
from services.filter.worker import FilterWorker


async def start_filter(
    host: ServiceHost, settings: FilterSettings, servicer: FilterServicer
) -> None:
    # 1. Models: ONNX sessions are thread-safe for run(), so the servicer and worker share them.
    analyzer = await asyncio.to_thread(SelfieAnalyzer.served, settings)
    scorer = CandidateScorer(analyzer.stack, analyzer.identity, pool=analyzer.pool)
    servicer.analyzer = analyzer
    selection = SelectionConfig.load(settings.thresholds_file)

    # 2. Connections, the filter schema migrated.
    res = await host.enter(open_resources(settings, "filter", schemas=["filter"]))
    assert res.engine is not None

    # 3. The worker and the relay that publishes its outbox.
    worker = FilterWorker(
        res.engine,
        res.blobs,
        res.bus,
        scorer,
        lambda picks, n: select_results(picks, n, selection),
        erased=res.erased,
        batch=settings.score_batch,
    )
    host.consume(
        worker.consumer(
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            concurrency=settings.concurrency,
        )
    )
    relay = OutboxRelay(res.engine, outbox, res.bus)
    host.background(relay.run)
    host.on_shutdown(relay.stop)
