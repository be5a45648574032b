"""Fixtures of the browser suite: Debian's Chromium driven by Playwright, a watcher that fails a
test on any console error, uncaught exception, failed request, error response or request off the
server's origin, and axe-core for accessibility. Run by .ci/browser.sh, which starts the servers
and sets the environment read here."""

import json
import os
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

URL = os.environ["NEXUS_URL"].rstrip("/")
KEYS_URL = os.environ["NEXUS_KEYS_URL"].rstrip("/")
ADMIN_KEY = os.environ["NEXUS_ADMIN_KEY"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
AXE_JS = Path(os.environ["AXE_JS"])
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", "target/browser-artifacts"))

# Every page of the UI: hash route -> its heading.
PAGES = {
    "search": "Search",
    "documents": "Documents",
    "memories": "Memories",
    "meetings": "Meetings",
    "graph": "Graph",
    "jobs": "Jobs",
    "status": "Status",
    "projects": "Projects",
    "keys": "API keys",
    "audit": "Audit log",
    "backups": "Backups",
    "login": "Sign in",
}

AXE_ROUTE = "/__browser-suite__/axe.min.js"

WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 375, "height": 740}


def origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Watcher:
    """Collects what must not happen on a page. `allow(status, path_re)` permits error responses
    a test expects (e.g. the 401 that sends a browser without a key to the sign-in page)."""

    def __init__(self, page, base):
        self.base = origin(base)
        self.problems = []
        self.allowed = []
        self.responses = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught exception: {err}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def allow(self, status, path_re):
        self.allowed.append((status, re.compile(path_re)))

    def _is_allowed(self, status, url):
        path = urlsplit(url).path
        return any(status == s and r.fullmatch(path) for s, r in self.allowed)

    def _console(self, msg):
        if msg.type != "error":
            return
        # Chromium logs every error response as "Failed to load resource"; an allowed one is not a problem.
        status = re.search(r"status of (\d{3})", msg.text)
        where = (msg.location or {}).get("url", "")
        if status and self._is_allowed(int(status.group(1)), where):
            return
        self.problems.append(f"console error: {msg.text} ({where})")

    def _request(self, request):
        url = request.url
        if url.startswith("data:"):
            return
        if url.startswith("blob:"):
            url = url[len("blob:"):]
        if origin(url) != self.base:
            self.problems.append(f"request off the server's origin: {request.method} {request.url}")

    def _failed(self, request):
        failure = request.failure or ""
        # A request the page cancels itself (leaving a page aborts its fetches and event streams).
        if "ERR_ABORTED" in failure:
            return
        self.problems.append(f"request failed: {request.method} {request.url}: {failure}")

    def _response(self, response):
        self.responses.append((response.status, response.url))
        if response.status >= 400 and not self._is_allowed(response.status, response.url):
            self.problems.append(f"error response: {response.status} {response.request.method} {response.url}")

    def check(self):
        assert not self.problems, "the page misbehaved:\n" + "\n".join(self.problems)


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """open_page(base=URL, color_scheme='light', viewport=WIDE) -> (page, watcher); every page
    opened is checked by its watcher when the test ends."""
    opened = []

    def make(base=URL, color_scheme="light", viewport=WIDE):
        context = browser.new_context(base_url=base, color_scheme=color_scheme, viewport=viewport,
                                      accept_downloads=True, reduced_motion="reduce")
        page = context.new_page()
        page.set_default_timeout(20_000)
        watcher = Watcher(page, base)
        page.on("dialog", lambda dialog: dialog.accept())
        opened.append((context, watcher))
        return page, watcher

    yield make
    for context, watcher in opened:
        context.close()
    for _, watcher in opened:
        watcher.check()


def run_axe(page, label):
    """Runs axe-core on the page; fails on serious or critical violations, prints the others."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # The UI's Content-Security-Policy allows scripts from its own origin only, and it stays
        # on: axe.min.js is answered by the browser itself at a path of that origin.
        page.route(AXE_ROUTE, lambda route: route.fulfill(path=str(AXE_JS), content_type="text/javascript"))
        page.add_script_tag(url=AXE_ROUTE)
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ['violations'] });
            return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + n.failureSummary) }));
        }"""
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    for v in result:
        if v not in bad:
            print(f"axe ({label}): {v['impact']} {v['id']}: {v['help']}")
    assert not bad, f"axe ({label}): serious violations:\n" + json.dumps(bad, indent=2)
    return result


def screenshot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api(method, path, body=None, base=URL, key=None):
    """A JSON request to a server, outside the browser (to seed, or to check what the UI did)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as err:
        text = err.read()
        return err.code, (json.loads(text) if text else None)


def wait_settled(page):
    """Waits until no placeholder says it is loading."""
    page.wait_for_function(
        "() => ![...document.querySelectorAll('main *')].some((el) => el.childElementCount === 0"
        " && /^(Loading|Checking)…$/.test(el.textContent.trim()))"
    )
