"""The live page in a real headless Chromium: three peers, a link that turns red on a cut and
back on the heal, driven over the DevTools protocol."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT, ShoalProcess
from tests.test_cluster import wait_for
from tests.test_status_cli import start_three
from tests.tools import netns

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "docs" / "live-page.png"


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("chromium is missing: scripts/bootstrap-debian.sh installs it")
        pytest.skip("chromium is not installed (scripts/bootstrap-debian.sh installs it)")
    return found


class Browser:
    """A headless Chromium and one page, over the DevTools protocol (websocket-client)."""

    def __init__(self) -> None:
        import websocket  # a dependency of the kubernetes client

        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--ignore-certificate-errors", "--no-first-run", "--window-size=1280,1000",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        wait_for(port_file.exists, 30, "chromium's DevTools port")
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result") or {}
                return result

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return (r.get("result") or {}).get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require(need_iptables=True)
    with netns.NetnsLab() as the_lab:
        yield the_lab


def link_states(browser: Browser) -> dict[str, str]:
    found = browser.eval(
        "Array.from(document.querySelectorAll('#graph line')).map("
        "l => [l.dataset.link, l.dataset.state, l.getAttribute('stroke')])") or []
    return {name: f"{state} {stroke}" for name, state, stroke in found}


def test_the_page_shows_three_peers_and_a_cut_link_turns_red_then_back(
        lab: netns.NetnsLab, tmp_path: Path) -> None:
    chromium_binary()
    nodes: list[ShoalProcess] = []
    browser: Browser | None = None
    try:
        start_three(lab, tmp_path, nodes)
        a = nodes[0]
        # Log in as a ServiceAccount allowed to read the status paths, as an operator would.
        a.kubectl("create", "serviceaccount", "watcher")
        a.kubectl("create", "clusterrole", "shoal-status", "--verb=get",
                  "--non-resource-url=/shoal/v1/status", "--non-resource-url=/shoal/v1/status/*")
        a.kubectl("create", "clusterrolebinding", "watcher", "--clusterrole=shoal-status",
                  "--serviceaccount=default:watcher")
        token = a.kubectl("create", "token", "watcher").stdout.strip()
        a.kubectl("create", "deployment", "sleepers", "--image=busybox", "--replicas=3",
                  "--", "sleep", "3600")
        browser = Browser()
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{a.url}/ui/#token={token}")

        def three_up() -> bool:
            states = link_states(browser) if browser else {}
            return len(states) == 3 and all(s.startswith("up ") for s in states.values())
        wait_for(three_up, 60, "the page to show three peers with every link up")
        assert browser.eval("document.querySelectorAll('#graph g[data-member]').length") == 3

        def pods_shown() -> int:
            return int(browser.eval(  # type: ignore[union-attr]
                "Array.from(document.querySelectorAll('#graph g[data-member] text.pods'))"
                ".reduce((n, t) => n + parseInt(t.textContent), 0)") or 0)
        wait_for(lambda: pods_shown() == 3, 60, "the page to count the three pods")
        assert browser.eval("location.hash") == "", "the token is taken out of the address bar"
        assert browser.eval("sessionStorage.getItem('shoal.token')") == token
        assert browser.eval("document.getElementById('conn').textContent") == "live"

        lab.cut(lab.namespaces[2], mode="drop")
        cut_at = time.monotonic()

        def c_cut() -> bool:
            states = link_states(browser) if browser else {}
            return states.get("node-a|node-c", "").startswith("cut #d32f2f") and \
                states.get("node-b|node-c", "").startswith("cut ")
        # Failure detection: a probe round over two peers (2 s each) and its timeouts.
        wait_for(c_cut, 20, "the links to node-c to turn red")
        red_after = time.monotonic() - cut_at
        assert link_states(browser)["node-a|node-b"].startswith("up ")
        timeline = browser.eval("document.getElementById('timeline').textContent") or ""
        assert "node-c" in timeline and "cut" in timeline
        browser.screenshot(tmp_path / "cut.png")

        lab.heal(lab.namespaces[2])
        heal_at = time.monotonic()
        wait_for(three_up, 45, "every link to turn back to up after the heal")
        green_after = time.monotonic() - heal_at
        assert "heal" in (browser.eval("document.getElementById('timeline').textContent") or "")
        if os.environ.get("SHOAL_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
            shutil.copy(tmp_path / "cut.png", SCREENSHOT)
        print(f"red {red_after:.1f}s after the cut, green {green_after:.1f}s after the heal")
    finally:
        if browser is not None:
            browser.close()
        for n in nodes:
            n.stop()
