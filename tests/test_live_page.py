"""The live page in a real headless Chromium: three peers, a link that turns red on a cut and
back on the heal, driven over the DevTools protocol."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
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


class Page:
    """One tab, driven over its DevTools websocket (websocket-client)."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # a dependency of the kubernetes client

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
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


class Browser:
    """A headless Chromium; :meth:`open` gives a tab."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--ignore-certificate-errors", "--no-first-run", "--window-size=1280,1000",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        wait_for(port_file.exists, 30, "chromium's DevTools port")
        self.port = port_file.read_text().split()[0]
        self.pages: list[Page] = []

    def open(self, url: str) -> Page:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?{urllib.parse.quote(url, safe='')}",
            method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            target = json.loads(r.read())
        page = Page(target["webSocketDebuggerUrl"])
        self.pages.append(page)
        return page

    def close(self) -> None:
        for page in self.pages:
            with contextlib.suppress(Exception):
                page.ws.close()
        os.killpg(self.proc.pid, 9)
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def cut_from_peers(ns: netns.Namespace, peers: list[netns.Namespace], heal: bool = False) -> None:
    """Drop ``ns``'s packets to and from the other peers only: a site cut off from the rest
    whose operator (the root namespace here) still reaches its node."""
    for peer in peers:
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            netns.sh("ip", "netns", "exec", ns.name, "iptables", "-D" if heal else "-I", chain,
                     flag, peer.ip, "-j", "DROP")


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require(need_iptables=True)
    with netns.NetnsLab() as the_lab:
        yield the_lab


def link_states(browser: Page) -> dict[str, str]:
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
        # Short grace and eviction timeouts, so the cut shows a lost node and a replacement.
        start_three(lab, tmp_path, nodes, ["--heartbeat-interval", "1s",
                                           "--node-monitor-grace-period", "6s",
                                           "--pod-eviction-timeout", "4s"])
        a, _, c = nodes
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
        on_a = browser.open(f"{a.url}/ui/#token={token}")

        def three_up(page: Page) -> bool:
            states = link_states(page)
            return len(states) == 3 and all(s.startswith("up ") for s in states.values())
        wait_for(lambda: three_up(on_a), 60, "the page to show three peers with every link up")
        assert on_a.eval("document.querySelectorAll('#graph g[data-member]').length") == 3

        def pods_shown() -> int:
            return int(on_a.eval(
                "Array.from(document.querySelectorAll('#graph g[data-member] text.pods'))"
                ".reduce((n, t) => n + parseInt(t.textContent), 0)") or 0)
        wait_for(lambda: pods_shown() == 3, 60, "the page to count the three pods")
        assert on_a.eval("location.hash") == "", "the token is taken out of the address bar"
        assert on_a.eval("sessionStorage.getItem('shoal.token')") == token
        assert on_a.eval("document.getElementById('conn').textContent") == "live"
        # The same token works on node-c: it is verified from node-c's own replica.
        on_c = browser.open(f"{c.url}/ui/#token={token}")
        wait_for(lambda: three_up(on_c), 60, "node-c's page to show every link up")

        spaces = lab.namespaces
        cut_from_peers(spaces[2], spaces[:2])  # node-c's site is cut off from a and b
        cut_at = time.monotonic()

        def c_cut(page: Page) -> bool:
            states = link_states(page)
            return states.get("node-a|node-c", "").startswith("cut #d32f2f") and \
                states.get("node-b|node-c", "").startswith("cut ")
        # Failure detection: a probe round over two peers (2 s each) and its timeouts.
        wait_for(lambda: c_cut(on_a), 20, "the links to node-c to turn red on node-a's page")
        red_after = time.monotonic() - cut_at
        assert link_states(on_a)["node-a|node-b"].startswith("up ")
        timeline = on_a.eval("document.getElementById('timeline').textContent") or ""
        assert "node-c" in timeline and "cut" in timeline
        # The cut-off site's own page keeps working and shows what that site sees.
        wait_for(lambda: c_cut(on_c), 20, "node-c's page to show its links cut")
        assert on_c.eval("document.getElementById('conn').textContent") == "live"
        members_on_c = on_c.eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('#graph g[data-member]'))"
            ".map(g => [g.dataset.member, g.dataset.state]))")
        assert members_on_c["node-c"] == "alive"
        assert members_on_c["node-a"] in ("suspect", "dead")

        def timeline_on_a() -> str:
            return str(on_a.eval("document.getElementById('timeline').textContent") or "")
        wait_for(lambda: "node node-c is unreachable" in timeline_on_a()
                 and "started to replace pods on unreachable node node-c" in timeline_on_a(),
                 40, "node-a's timeline to show node-c lost and its pod replaced")
        on_a.screenshot(tmp_path / "cut.png")

        cut_from_peers(spaces[2], spaces[:2], heal=True)
        heal_at = time.monotonic()
        wait_for(lambda: three_up(on_a) and three_up(on_c), 45,
                 "every link to turn back to up after the heal, on both pages")
        green_after = time.monotonic() - heal_at
        assert "heal" in timeline_on_a()
        wait_for(lambda: "trimmed after the merge" in timeline_on_a(), 45,
                 "the trim after the heal on node-a's timeline")
        if os.environ.get("SHOAL_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
            shutil.copy(tmp_path / "cut.png", SCREENSHOT)
        print(f"red {red_after:.1f}s after the cut, green {green_after:.1f}s after the heal")
    finally:
        if browser is not None:
            browser.close()
        for n in nodes:
            n.stop()
