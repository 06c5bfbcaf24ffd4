"""The `headshots` CLI against a running gateway: tenant and key, an order from a folder with
one bad file, progress, download with the contact sheet, erasure with its receipt."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.cli import app
from tests.support.gateway_harness import GatewayUnderTest, SimWorkers, start_gateway

pytestmark = pytest.mark.integration
FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gwcli"))
    workers = SimWorkers(g.bus, g.blobs)
    await workers.start()
    g.extra.append(workers)
    yield g
    await g.stop()


async def cli(*args: str, **env: str) -> str:
    # The gateway runs on this event loop; the (blocking) CLI runs in a thread beside it.
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


async def test_cli_order_from_folder_to_contact_sheet_and_erasure(
    gw: GatewayUnderTest, tmp_path: Path
) -> None:
    addr = f"127.0.0.1:{gw.app.port}"
    admin = {"HS_GATEWAY_ADMIN_TOKEN": gw.admin_token, "HEADSHOTS_ADDR": addr}
    await cli("admin", "create-tenant", "cli-co", **admin)
    key = (await cli("admin", "create-key", "cli-co", **admin)).strip().splitlines()[-1]
    assert key.startswith("hs_")
    folder = tmp_path / "selfies"
    folder.mkdir()
    for p in sorted((FACES / "others").glob("*.jpg"))[:8]:
        shutil.copy(p, folder / p.name)
    (folder / "zz-notes.jpg").write_text("not a photo")
    env = {"HEADSHOTS_API_KEY": key, "HEADSHOTS_ADDR": addr, "HEADSHOTS_TENANT": "cli-co"}
    out = tmp_path / "out"
    text = await cli("run", str(folder), str(out), "--candidates", "10", "--results", "3", **env)
    assert "zz-notes.jpg" in text and "refused UNREADABLE" in text
    assert "READY" in text
    sheet = (out / "index.html").read_text()
    assert sheet.count('class="ok"') == 3
    assert "LOW_LIKENESS" in sheet and "likeness 0.90" in sheet
    delivered = sorted(p.name for p in out.glob("*.png"))
    assert len(delivered) == 3 and delivered[0].startswith("001-")
    assert all(f'src="{name}"' in sheet for name in delivered)
    assert len(list((out / "rejected").glob("*.png"))) == 7  # 5 failed a check, 2 not chosen
    assert sheet.count("not selected") == 2
    order = sheet.split("<p>", 1)[1].split(" ·", 1)[0]
    receipt = await cli("order", "erase", order, **env)
    assert "DATA_KEY" in receipt and "ROWS" in receipt
