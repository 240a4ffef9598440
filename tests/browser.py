"""A page opened in a real browser: Debian's Chromium, headless, driven over the DevTools protocol.

open_page() loads a local HTML file and returns what a person would notice:
which images failed to load, the console's errors and failed requests, and a
screenshot of the whole page.
"""

import base64
import dataclasses
import json
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No background traffic: this machine's network is closed, and a page test must not depend on one.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1280,900"]


@dataclasses.dataclass
class PageView:
    images: dict[str, bool]  # src -> loaded (complete, with a width)
    errors: list[str]  # console errors, uncaught exceptions, failed requests
    screenshot: bytes  # PNG of the whole page
    title: str
    overflow: int  # CSS pixels the page is wider than the window (a horizontal scrollbar), 0 when it fits


class _DevTools:
    def __init__(self, url: str):
        self._socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self._socket.recv()))

    def close(self) -> None:
        self._socket.close()


def _errors(events: list[dict]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            found.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"request failed: {params.get('errorText')}")
    return found


def open_page(page: pathlib.Path) -> PageView:
    profile = tempfile.mkdtemp(prefix="chromium-")
    process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = pathlib.Path(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=30))
        tools = _DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.call(f"{domain}.enable")
            tools.call("Page.navigate", url=page.resolve().as_uri())
            tools.wait_for("Page.loadEventFired")
            probe = ("JSON.stringify({title: document.title, images: [...document.images].map("
                     "i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]), overflow: "
                     "document.documentElement.scrollWidth - document.documentElement.clientWidth})")
            state = json.loads(tools.call("Runtime.evaluate", expression=probe, returnByValue=True)["result"]["value"])
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            return PageView(images=dict(state["images"]), errors=_errors(tools.events),
                            screenshot=base64.b64decode(shot["data"]), title=state["title"],
                            overflow=max(0, int(state["overflow"])))
        finally:
            tools.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
