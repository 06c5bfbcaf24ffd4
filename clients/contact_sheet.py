"""`index.html`: one page with every downloaded result, its scores, and why others failed."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from headshots.v1 import headshots_pb2 as pb


@dataclass(frozen=True)
class SheetItem:
    result: pb.Result
    file: str | None  # path relative to the sheet, None when not downloaded


def _score(value: float) -> str:
    return f"{value:.2f}"


def _card(item: SheetItem) -> str:
    r = item.result
    rid = html.escape(r.name.rsplit("/", 1)[-1])
    img = (
        f'<img src="{html.escape(item.file)}" alt="{rid}" loading="lazy">'
        if item.file
        else '<div class="missing">not downloaded</div>'
    )
    # Passed every check but another image was chosen (variety, or enough already).
    head = f"#{r.rank}" if r.delivered else ("rejected" if r.rejection_reasons else "not selected")
    reasons = (
        '<p class="why">' + html.escape(", ".join(r.rejection_reasons)) + "</p>"
        if r.rejection_reasons
        else ""
    )
    return (
        f'<figure class="{"ok" if r.delivered else "no"}">{img}<figcaption>'
        f"<b>{head}</b> {rid}<br>style {html.escape(r.style_id or '-')}"
        f" · round {r.round} · seed {r.seed}<br>"
        f"likeness {_score(r.scores.likeness)} · quality {_score(r.scores.quality)}"
        f" · sharpness {_score(r.scores.sharpness)}{reasons}</figcaption></figure>"
    )


def _notice(text: str) -> str:
    if not text:
        return ""
    return '\n<p class="notice"><b>Note:</b> ' + html.escape(text) + "</p>"


def render(
    order: pb.Order,
    items: Sequence[SheetItem],
    summary: pb.RejectionSummary,
    notice: str = "",
) -> str:
    """The page; `notice` (e.g. "these come from a test model") is shown under the title."""
    state = pb.OrderState.Name(order.state).removeprefix("ORDER_STATE_")
    delivered = [i for i in items if i.result.delivered]
    rejected = [i for i in items if not i.result.delivered]
    reasons = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{n}</td></tr>"
        for code, n in sorted(summary.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    failure = (
        f"<p class='why'>failure: {html.escape(order.failure_reason)}</p>"
        if order.failure_reason
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(order.display_name or order.name)}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}}
figure{{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px;background:#fafafa}}
figure.no{{opacity:.8;border-color:#e3b4b4}}
img,.missing{{width:100%;aspect-ratio:1;object-fit:cover;border-radius:4px;background:#eee}}
.missing{{display:flex;align-items:center;justify-content:center;color:#888}}
figcaption{{font-size:12px;margin-top:4px}} .why{{color:#a33;margin:.3em 0}}
.notice{{background:#fff3cd;border:1px solid #e0b000;padding:.8em;max-width:60em}}
table{{border-collapse:collapse}} td{{padding:2px 10px;border-bottom:1px solid #eee}}
</style></head><body>
<h1>{html.escape(order.display_name or order.name)}</h1>{_notice(notice)}
<p>{html.escape(order.name)} · {state} · {summary.candidates} candidates,
{summary.passed} passed every check, {summary.delivered} delivered</p>{failure}
<h2>Delivered ({len(delivered)})</h2>
<div class="grid">{"".join(_card(i) for i in delivered) or "<p>none</p>"}</div>
<h2>Why the others were rejected</h2>
<table><tr><th>reason</th><th>candidates</th></tr>{reasons or "<tr><td>-</td><td>0</td></tr>"}
</table>
<h2>Not delivered ({len(rejected)} shown)</h2>
<div class="grid">{"".join(_card(i) for i in rejected) or "<p>none</p>"}</div>
</body></html>
"""


def write_contact_sheet(
    path: Path,
    order: pb.Order,
    items: Sequence[SheetItem],
    summary: pb.RejectionSummary,
    notice: str = "",
) -> Path:
    path.write_text(render(order, items, summary, notice), encoding="utf-8")
    return path
