"""The block explorer in a real headless Chromium (Debian's /usr/bin/chromium, driven by
playwright) against a real network: the page loads, lists the block holding a transaction this
test submitted, shows that transaction with its data and result and the peer and leader, logs no
console error, and shows a hostile transaction's HTML as text without running any of it. A
screenshot is kept at $LOOPCHAIN_TEST_ARTIFACTS/explorer.png (default: test-artifacts/ at the
repository root, git-ignored). Slow suite: `.venv/bin/python -m pytest -m slow
tests/e2e/test_explorer.py`."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.procs import ROOT, LocalNetwork, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PEERS = 3
FINAL_S = 90.0  # a transaction to a final block (and executed), on a slow machine
PAGE_MS = 60_000  # what the page may take to show something, in playwright's milliseconds
HOSTILE = (
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    "</pre><svg onload=\"window.__pwned=3\"></svg><b id='injected'>bold</b>"
)


def artifacts_dir() -> Path:
    """Where the screenshots go: $LOOPCHAIN_TEST_ARTIFACTS, else test-artifacts/ at the root."""
    where = Path(os.environ.get("LOOPCHAIN_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture(scope="module")
def sync_api() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    api = pytest.importorskip("playwright.sync_api", reason="playwright (requirements-dev.txt)")
    api.expect.set_options(timeout=PAGE_MS)  # every expect waits up to this, then fails
    return api


@pytest.fixture(scope="module")
def net(sync_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path_factory.mktemp("explorer"))
    try:
        network.start_with_peers(PEERS)
        yield network
    finally:
        network.stop_and_check()


@pytest.fixture(scope="module")
def browser(sync_api: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=PAGE_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A browser page with everything it reports that a healthy page never does."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1440, "height": 1000})
        self.page.set_default_timeout(PAGE_MS)
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    page = Watched(browser)
    try:
        yield page
    finally:
        page.close()


def committed(net: LocalNetwork, port: int, data: object) -> tuple[str, int]:
    """Submit `data` to the peer on `port`; its hash and height once it is final and executed."""
    tx_hash = net.submit(port, data)
    height = wait_until(
        lambda: net.tx_height(port, tx_hash) if net.final_on(port, tx_hash) else None,
        FINAL_S,
        f"transaction {tx_hash} in a final block",
    )
    return tx_hash, height


def peer_ids(net: LocalNetwork) -> set[str]:
    return {str(net.status(port)["peer_id"]) for port in net.peers}


def test_the_explorer_shows_a_submitted_transaction_its_block_and_the_peers(
    net: LocalNetwork, watched: Watched, sync_api: Any
) -> None:
    expect = sync_api.expect
    port = min(net.peers)
    marker = f"explorer test {secrets.token_hex(8)}"
    tx_hash, height = committed(net, port, {"data": marker})
    page = watched.page

    # 1. the page loads and lists the block holding the transaction among the last blocks
    page.goto(f"{net.rest(port)}/explorer", wait_until="load")
    row = page.locator(f'#block-rows tr[data-txs~="{tx_hash}"]')
    expect(row).to_have_attribute("data-height", str(height))
    expect(page.locator("#connection")).to_have_class("live")

    # 2. its transaction link opens the transaction: hash, data and result
    row.locator(f'a[href="#/tx/{tx_hash}"]').click()
    expect(page).to_have_url(re.compile(f"#/tx/{tx_hash}$"))
    expect(page.locator("#tx-hash")).to_have_text(tx_hash)
    expect(page.locator("#tx-data")).to_contain_text(marker)
    expect(page.locator("#tx-result")).to_have_text("0 (success)")
    expect(page.locator("#view")).to_contain_text(f"{height}")

    # 3. the peer and leader panel: this peer, a leader among the validators, every validator
    ids = peer_ids(net)
    status = net.status(port)
    this_peer = str(status["peer_id"])
    expect(page.locator("#channel")).to_have_value(str(status["channel"]))
    expect(page.locator("#peer-status")).to_contain_text(this_peer)
    expect(page.locator("#validator-rows tr")).to_have_count(PEERS)
    shown = set(
        page.locator("#validator-rows tr").evaluate_all("rows => rows.map(r => r.dataset.peerId)")
    )
    assert shown == ids
    expect(page.locator("#validator-rows tr.leader")).to_have_count(1)
    leader = page.locator("#peer-status .leader").inner_text()
    assert leader in ids

    # 4. the block view lists the transaction, and the screenshot is kept
    page.locator("#view a", has_text=str(height)).first.click()
    expect(page.locator(f'#view tr[data-tx-hash="{tx_hash}"]')).to_contain_text(marker)
    page.goto(f"{net.rest(port)}/explorer#/tx/{tx_hash}")
    expect(page.locator("#tx-result")).to_have_text("0 (success)")
    expect(page.locator("#validator-rows tr")).to_have_count(PEERS)
    page.screenshot(path=str(artifacts_dir() / "explorer.png"), full_page=True)
    assert watched.errors == []


def test_hostile_transaction_data_is_shown_as_text_and_never_run(
    net: LocalNetwork, watched: Watched, sync_api: Any
) -> None:
    expect = sync_api.expect
    port = max(net.peers)
    data = {"data": HOSTILE, "<i>key</i>": [HOSTILE]}
    tx_hash, height = committed(net, port, data)
    page = watched.page
    title = "loopchain explorer"

    # opened directly by its address, on another peer than the one that took it
    page.goto(f"{net.rest(port)}/explorer#/tx/{tx_hash}", wait_until="load")
    expect(page.locator("#tx-hash")).to_have_text(tx_hash)
    expect(page.locator("#tx-data")).to_contain_text(json.dumps(HOSTILE))  # as JSON text
    expect(page.locator("#tx-data")).to_contain_text('"<i>key</i>": [')
    page.goto(f"{net.rest(port)}/explorer#/block/{height}")
    cell = page.locator(f'#view tr[data-tx-hash="{tx_hash}"] td.data')
    expect(cell).to_contain_text("<img src=x onerror=")
    expect(page.locator(f'#block-rows tr[data-txs~="{tx_hash}"]')).to_have_count(1)

    injected = page.evaluate(
        "() => ({pwned: window.__pwned ?? null, title: document.title,"
        " elements: document.querySelectorAll('main img, main script, main svg, main b, main i,"
        " #injected').length})"
    )
    assert injected == {"pwned": None, "title": title, "elements": 0}
    page.screenshot(path=str(artifacts_dir() / "explorer-hostile.png"), full_page=True)
    assert watched.errors == []  # a blocked inline script would be a CSP error here
