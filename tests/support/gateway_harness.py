"""The gateway with its neighbours, in one process, for the gateway's own tests.

Real: PostgreSQL, nats-server, the gateway (gRPC + REST), the retention service's erasure
(its real `Retention` and `RetentionServicer`), the filter's real `FilterServicer`.
Stand-ins, each behind a real gRPC or JetStream boundary: the filter's face stack
(`RuleAnalyzer`: blank images have no face, everything else passes), the generator's
Preview (small solid images) and the workers (`SimWorkers`: a trainer and a
generator+filter that answer jobs with the events the real ones publish). The e2e tests
run the real services instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from devstack.embedded import free_port
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from headshots.v1 import internal_pb2, internal_pb2_grpc, jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, Worker
from services.common.db import engine as db
from services.common.keys.keyring import Keyring, load_master_key
from services.common.storage.base import BlobStore, blob_key
from services.common.storage.factory import open_blob_store
from services.filter.servicer import FilterServicer
from services.gateway.app import GatewayApp
from services.gateway.settings import GatewaySettings


class RuleAnalyzer:
    """Stands in for the ONNX face stack: a near-blank image has NO_FACE; the colour
    statistics of the rest give a 4-d "embedding"; a photo whose pixels equal an earlier
    one's is a DUPLICATE naming that photo's id, as the real analyzer words it. Photos come
    as images or as the facts it returned for them (a digest of the pixels stands in for
    the near-copy signature), as with the real analyzer."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # photos per AnalyzeSelfies call, for tests that count
        self.images: list[int] = []  # of which sent as images (analysed in that call)

    def analyze(self, items: Sequence[tuple[str, bytes]]) -> internal_pb2.AnalyzeSelfiesResponse:
        return self.analyze_inputs(
            [internal_pb2.SelfieInput(photo_id=pid, image=data) for pid, data in items]
        )

    @staticmethod
    def _facts(data: bytes) -> internal_pb2.SelfieFacts:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        arr = np.asarray(img, dtype=np.float32)
        facts = internal_pb2.SelfieFacts(
            version=1,
            embedding=[*(arr.mean(axis=(0, 1)) / 255.0), float(arr.std() / 128.0)],
            signature=hashlib.sha256(arr.astype(np.uint8).tobytes()).digest(),
            exposure=float(arr.mean() / 255.0),
        )
        if arr.std() < 4.0:
            facts.findings.add(code="NO_FACE", message="no face was found", blocking=True)
        return facts

    def analyze_inputs(
        self, inputs: Sequence[internal_pb2.SelfieInput]
    ) -> internal_pb2.AnalyzeSelfiesResponse:
        self.calls.append(len(inputs))
        self.images.append(sum(1 for x in inputs if x.WhichOneof("source") == "image"))
        resp = internal_pb2.AnalyzeSelfiesResponse()
        usable = []
        seen: dict[bytes, str] = {}
        for x in inputs:
            is_image = x.WhichOneof("source") == "image"
            facts = self._facts(x.image) if is_image else x.facts
            a = resp.photos.add(
                photo_id=x.photo_id, embedding=facts.embedding, findings=facts.findings
            )
            if is_image:
                img = Image.open(io.BytesIO(x.image))
                a.width, a.height = img.size
                a.facts.CopyFrom(facts)
            if facts.findings:
                a.usable = False
            elif facts.signature in seen:
                a.usable, a.duplicate_of = False, seen[facts.signature]
                a.findings.add(
                    code="DUPLICATE",
                    message=f"the photo is a near-duplicate of another one ({a.duplicate_of})",
                    blocking=True,
                )
            else:
                seen[facts.signature] = x.photo_id
                a.usable = True
                a.sharpness = float(facts.embedding[3] * 128.0)
                a.face_size_px = float(min(a.width, a.height) / 2)
                usable.append(list(facts.embedding))
        resp.set.usable_count = len(usable)
        resp.set.variety_score = 0.5
        resp.set.identity_consistency = 1.0
        if usable:
            resp.set.reference_embedding.extend(np.mean(usable, axis=0).tolist())
        return resp


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


class PreviewDouble(internal_pb2_grpc.GeneratorServiceServicer):
    async def Preview(
        self, request: internal_pb2.PreviewRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.PreviewResponse:
        images = [
            pb.PreviewImage(
                data=png((i * 40 % 256, 90, 160)),
                content_type="image/png",
                seed=request.seed + i,
                width=64,
                height=64,
            )
            for i in range(request.count)
        ]
        return internal_pb2.PreviewResponse(images=images, model_id="preview-double")


@dataclass
class Neighbours:
    """Filter, generator (Preview) and retention on one loopback gRPC server."""

    server: grpc.aio.Server
    port: int
    analyzer: Any  # RuleAnalyzer, or the real SelfieAnalyzer when a test passes one

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_neighbours(
    url: str, blobs: BlobStore, keyring: Keyring, analyzer: Any = None
) -> Neighbours:
    from services.retention.core import Retention
    from services.retention.servicer import RetentionServicer

    await db.migrate(url, "retention")
    engine = db.create_engine(url)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    analyzer = analyzer or RuleAnalyzer()
    internal_pb2_grpc.add_FilterServiceServicer_to_server(FilterServicer(analyzer), server)
    internal_pb2_grpc.add_GeneratorServiceServicer_to_server(PreviewDouble(), server)
    internal_pb2_grpc.add_RetentionServiceServicer_to_server(
        RetentionServicer(Retention(engine, blobs, keyring)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Neighbours(server, port, analyzer)


@dataclass
class GatewayUnderTest:
    app: GatewayApp
    neighbours: Neighbours
    settings: GatewaySettings
    blobs: BlobStore
    admin_token: str
    channel: grpc.aio.Channel
    bus: Bus
    extra: list[object] = field(default_factory=list)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"

    def admin(self) -> pb_grpc.AdminServiceStub:
        return pb_grpc.AdminServiceStub(self.channel)

    def api(self) -> pb_grpc.HeadshotServiceStub:
        return pb_grpc.HeadshotServiceStub(self.channel)

    def admin_md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_token}"),)

    async def tenant(self, prefix: str = "t") -> tuple[str, str]:
        """A fresh tenant and an API key for it: (tenant id, secret)."""
        tenant_id = f"{prefix}-{secrets.token_hex(4)}"
        await self.admin().CreateTenant(
            pb.CreateTenantRequest(tenant_id=tenant_id, tenant=pb.Tenant(display_name=prefix)),
            metadata=self.admin_md(),
        )
        key = await self.admin().CreateApiKey(
            pb.CreateApiKeyRequest(parent=f"tenants/{tenant_id}"), metadata=self.admin_md()
        )
        return tenant_id, key.secret

    async def stop(self) -> None:
        for thing in self.extra:
            with contextlib.suppress(Exception):
                await thing.stop()  # type: ignore[attr-defined]
        await self.channel.close()
        await self.bus.close()
        await self.app.stop()
        await self.neighbours.server.stop(0.5)


async def start_gateway(
    database_url: str, nats_url: str, tmp: Path, *, analyzer: Any = None, **overrides: object
) -> GatewayUnderTest:
    """The gateway and its neighbours; `analyzer` replaces the rule analyzer behind the
    real FilterServicer (the real SelfieAnalyzer, for tests of the face verdicts)."""
    master = base64.b64encode(secrets.token_bytes(32)).decode()
    admin_token = secrets.token_urlsafe(24)
    base = {
        "service_name": "gateway",
        "database_url": database_url,
        "nats_url": nats_url,
        "blob_url": f"file://{tmp / 'blobs'}",
        "master_key": master,
        "grpc_port": 0,
        "metrics_port": -1,
        "http_port": free_port(),
        "admin_token": admin_token,
        "log_format": "text",
        "log_level": "WARNING",
    }
    base.update(overrides)
    settings = GatewaySettings(**base)  # type: ignore[arg-type]
    await db.migrate(database_url, "keyring")
    engine = db.create_engine(database_url)
    blobs = open_blob_store(settings, engine=engine)
    keyring = Keyring(engine, load_master_key(settings), settings.master_key_id)
    neighbours = await start_neighbours(database_url, blobs, keyring, analyzer)
    settings.filter_addr = settings.generator_addr = settings.retention_addr = neighbours.addr
    app = GatewayApp(settings)
    await app.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}",
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    bus = await Bus.connect(nats_url, name="gateway-test")
    return GatewayUnderTest(app, neighbours, settings, blobs, admin_token, channel, bus)


# ------------------------------------------------------------------------------ workers


class SimWorkers:
    """A trainer and a generator+filter that answer jobs with the events the real workers
    publish (same subjects, ids and payloads), writing real candidate images."""

    def __init__(self, bus: Bus, blobs: BlobStore, *, pass_every: int = 2) -> None:
        self.bus = bus
        self.blobs = blobs
        self.pass_every = pass_every
        self.train_jobs: list[jobs_pb2.TrainJob] = []
        self.generate_jobs: list[jobs_pb2.GenerateJob] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[object] = []

    async def start(self) -> None:
        train = Worker(self.bus, "jobs.train", "trainer", self._train, ack_wait=10)
        gen = Worker(self.bus, "jobs.generate", "generator", self._generate, ack_wait=10)
        self._workers = [train, gen]
        self._tasks = [asyncio.create_task(train.run()), asyncio.create_task(gen.run())]

    async def stop(self) -> None:
        for w in self._workers:
            await w.stop(drain=False)  # type: ignore[attr-defined]
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _event(self, subject: str, event: jobs_pb2.OrderEvent) -> None:
        event.time.GetCurrentTime()
        await self.bus.publish(subject, event, msg_id=event.event_id)

    async def _train(self, ctx: JobContext) -> None:
        job = ctx.parse(jobs_pb2.TrainJob)
        self.train_jobs.append(job)
        o, t = job.order_id, job.tenant_id
        base = {"tenant_id": t, "order_id": o, "stage": pb.STAGE_TRAINING, "job_id": job.job_id}
        await self._event(
            "events.training.started",
            jobs_pb2.OrderEvent(event_id=f"{o}:training:started", kind=1, total=4, **base),
        )
        for step in (2, 4):
            await self._event(
                "events.training.progress",
                jobs_pb2.OrderEvent(
                    event_id=f"{o}:training:progress:{step}",
                    kind=2,
                    done=step,
                    total=4,
                    eta_seconds=4 - step,
                    detail=f"step {step}/4",
                    **base,
                ),
            )
        result = jobs_pb2.TrainingResult(
            adapter_key=blob_key(t, o, "adapter", "lora.safetensors"),
            instance_prompt="photo of sks person",
            steps=4,
            chosen_step=4,
        )
        await self._event(
            "events.training.completed",
            jobs_pb2.OrderEvent(
                event_id=f"{o}:training:completed", kind=3, training=result, **base
            ),
        )

    async def _generate(self, ctx: JobContext) -> None:
        job = ctx.parse(jobs_pb2.GenerateJob)
        self.generate_jobs.append(job)
        o, t, r = job.order_id, job.tenant_id, job.round
        scored = jobs_pb2.FilterBatchResult(round=r, batch=0)
        for i in range(job.count):
            rid = f"r{r}-{i:05d}"
            key = blob_key(t, o, "candidates", f"{rid}.png")
            data = png(((i * 37) % 256, (i * 91) % 256, 128), (96, 96))
            await self.blobs.put(key, data, "image/png")
            style = job.style_ids[i % len(job.style_ids)] if job.style_ids else "studio"
            cand = jobs_pb2.Candidate(
                result_id=rid,
                blob_key=key,
                style_id=style,
                seed=job.seed_base + i,
                index=i,
                model_id="sim",
                width=96,
                height=96,
                content_type="image/png",
                size_bytes=len(data),
            )
            ok = self.pass_every > 0 and i % self.pass_every == 0
            scores = pb.Scores(likeness=0.9 if ok else 0.3, quality=0.5 + i / 1000, sharpness=0.8)
            scored.scored.add(
                candidate=cand, scores=scores, rejection_reasons=[] if ok else ["LOW_LIKENESS"]
            )
            if (i + 1) % max(1, job.count // 2) == 0:
                await self._event(
                    "events.generation.progress",
                    jobs_pb2.OrderEvent(
                        event_id=f"{o}:generation:progress:r{r}:{i + 1}",
                        tenant_id=t,
                        order_id=o,
                        stage=pb.STAGE_GENERATION,
                        kind=2,
                        done=i + 1,
                        total=job.count,
                        round=r,
                        detail=f"b{i}",  # internal batch ids, as the real generator sends
                    ),
                )
        common = {"tenant_id": t, "order_id": o, "round": r}
        await self._event(
            "events.generation.completed",
            jobs_pb2.OrderEvent(
                event_id=f"{o}:generation:completed:r{r}",
                stage=pb.STAGE_GENERATION,
                kind=3,
                **common,
            ),
        )
        await self._event(
            "events.filtering.scored",
            jobs_pb2.OrderEvent(
                event_id=f"{o}:filtering:scored:r{r}:b0",
                stage=pb.STAGE_FILTERING,
                kind=6,
                done=job.count,
                total=job.count,
                scored=scored,
                **common,
            ),
        )
        passed = [s for s in scored.scored if not s.rejection_reasons]
        ranked = sorted(passed, key=lambda s: -s.scores.quality)[: job.result_count]
        summary = pb.RejectionSummary(
            candidates=job.count, passed=len(passed), delivered=len(ranked)
        )
        await self._event(
            "events.filtering.completed",
            jobs_pb2.OrderEvent(
                event_id=f"{o}:filtering:completed",
                stage=pb.STAGE_FILTERING,
                kind=3,
                selection=jobs_pb2.Selection(
                    result_ids=[s.candidate.result_id for s in ranked], summary=summary
                ),
                **common,
            ),
        )
