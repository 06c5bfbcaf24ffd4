"""An order's results in a folder: the delivered images ranked by file name, some of the
rejected ones under `rejected/`, and an `index.html` contact sheet of all of them."""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from clients.contact_sheet import SheetItem, write_contact_sheet
from clients.sdk import HeadshotsClient
from headshots.v1 import headshots_pb2 as pb

SHEET_NAME = "index.html"


@dataclass
class DownloadedOrder:
    order: pb.Order
    results: list[pb.Result]
    summary: pb.RejectionSummary
    folder: Path
    # Result name -> its file, relative to `folder`; results not downloaded are absent.
    files: dict[str, str]

    @property
    def sheet(self) -> Path:
        return self.folder / SHEET_NAME

    @property
    def delivered(self) -> int:
        return sum(1 for r in self.results if r.delivered)

    def write_sheet(self, notice: str = "") -> Path:
        """(Re)write the contact sheet, with `notice` at the top when given."""
        self.folder.mkdir(parents=True, exist_ok=True)
        items = [SheetItem(r, self.files.get(r.name)) for r in self.results]
        return write_contact_sheet(self.sheet, self.order, items, self.summary, notice=notice)


def result_file(result: pb.Result) -> str:
    """Where a result goes in the folder: `001-<id>.png` by rank, or `rejected/<id>.png`."""
    rid = result.name.rsplit("/", 1)[-1]
    ext = mimetypes.guess_extension(result.content_type or "image/png") or ".png"
    return f"{result.rank:03d}-{rid}{ext}" if result.delivered else f"rejected/{rid}{ext}"


async def download_order(
    client: HeadshotsClient, order_name: str, out: Path, keep_rejected: int = 24
) -> DownloadedOrder:
    """Download every delivered result and the first `keep_rejected` others into `out`, and
    write the contact sheet."""
    order = await client.get_order(order_name)
    results, summary = await client.list_results(order_name, include_rejected=True)
    files: dict[str, str] = {}
    rejected = 0
    for r in results:
        if not r.delivered:
            if rejected >= keep_rejected:
                continue
            rejected += 1
        files[r.name] = result_file(r)
        await asyncio.to_thread(_write, out / files[r.name], await client.download(r.name))
    downloaded = DownloadedOrder(order, results, summary, out, files)
    await asyncio.to_thread(downloaded.write_sheet)
    return downloaded


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
