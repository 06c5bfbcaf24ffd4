"""One OpenTelemetry trace follows an order from the gateway, through NATS, to the trainer,
the generator and the filter.

Each service is its own process, so an in-memory exporter cannot see them all: every
process of the shared stack writes its spans as JSON lines to one file
(`HS_OTEL_EXPORTER=file`), and the test reads them back.
"""

from __future__ import annotations

import itertools

import pytest

from tests.e2e.conftest import CompletedOrder
from tests.e2e.harness import describe, ids, ran_to_the_end, read_spans, wait_for

pytestmark = pytest.mark.e2e

Span = dict[str, object]


def consumer_span(spans: list[Span], service: str, subject: str, order_id: str) -> Span | None:
    """The span in which `service` handled the order's job on `subject`."""
    for s in spans:
        attrs = s["attributes"]
        assert isinstance(attrs, dict)
        if (
            s["service"] == service
            and s["kind"] == "CONSUMER"
            and attrs.get("messaging.destination.name") == subject
            and str(attrs.get("messaging.message.id", "")).startswith(order_id + ":")
        ):
            return s
    return None


def ancestry(span: Span, by_id: dict[str, Span]) -> list[Span]:
    """`span` and its parents up to the root (stops at a parent that was not exported)."""
    chain = [span]
    while chain[-1]["parent_span_id"]:
        parent = by_id.get(str(chain[-1]["parent_span_id"]))
        if parent is None:
            break
        chain.append(parent)
    return chain


def test_one_trace_from_gateway_to_filter(completed_order: CompletedOrder) -> None:
    order = completed_order.run.order
    assert ran_to_the_end(order), describe(order)
    order_id = ids(order.name)[1]
    path = completed_order.stack.run_dir / "spans.jsonl"
    jobs = {"trainer": "jobs.train", "generator": "jobs.generate", "filter": "jobs.filter"}

    # Spans are written when they end; the filter's last ones may trail the READY state.
    def all_handled() -> bool:
        spans = read_spans(path)
        return all(consumer_span(spans, svc, subj, order_id) for svc, subj in jobs.items())

    assert wait_for(all_handled, timeout=15), (
        f"no consumer span for some job of {order_id} in {path}: "
        + str(
            {
                svc: bool(consumer_span(read_spans(path), svc, s, order_id))
                for svc, s in jobs.items()
            }
        )
    )
    spans = read_spans(path)
    handled = {svc: consumer_span(spans, svc, subj, order_id) for svc, subj in jobs.items()}
    trace_ids = {str(s["trace_id"]) for s in handled.values() if s}
    assert len(trace_ids) == 1, f"the order's jobs ran in several traces: {trace_ids}"
    (trace_id,) = trace_ids
    in_trace = [s for s in spans if s["trace_id"] == trace_id]
    by_id = {str(s["span_id"]): s for s in in_trace}
    assert {"gateway", "trainer", "generator", "filter"} <= {s["service"] for s in in_trace}

    # Walking up from the filter's work reaches a root in the gateway, through the
    # generator's and the trainer's work: the trace follows the order, hop by hop.
    filter_span = handled["filter"]
    assert filter_span is not None
    chain = ancestry(filter_span, by_id)
    root = chain[-1]
    hops = [f"{s['service']}:{s['name']}" for s in reversed(chain)]
    assert root["parent_span_id"] is None, f"broken parent link above {hops[0]}: {hops}"
    assert root["service"] == "gateway", hops
    services_on_path = [s["service"] for s in reversed(chain)]
    for svc in ("gateway", "trainer", "generator", "filter"):
        assert svc in services_on_path, hops
    # Causal order: gateway first, then trainer, generator, filter.
    firsts = [services_on_path.index(s) for s in ("gateway", "trainer", "generator", "filter")]
    assert firsts == sorted(firsts), hops
    # Each hop between processes went through NATS: a producer span precedes each consumer.
    for child, parent in itertools.pairwise(chain):
        if child["service"] != parent["service"]:
            assert child["kind"] == "CONSUMER" and parent["kind"] == "PRODUCER", hops
