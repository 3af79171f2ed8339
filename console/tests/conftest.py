"""Browser tests of the review console: real headless Chromium (Debian's
`chromium`, driven by Playwright) against a running local server.

scripts/console-tests.sh starts the server and sets:
  CONSOLE_BASE_URL   http://127.0.0.1:<port>/purchase-orchestrator
  CONSOLE_DATA_DIR   the server's DATA_DIR (the `token` command reads its secret)
  CONSOLE_SERVER_BIN the purchase-orchestrator binary (for `token`)
optional:
  CHROMIUM               the browser (default: `chromium` on PATH)
  CONSOLE_SCREENSHOT_DIR where screenshots go (default target/console-screenshots;
                         `docs` refreshes the README's pictures)
"""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ADMIN_SCOPE = "purchases:read purchases:write purchases:admin"
CUSTOMER_SCOPE = "purchases:read purchases:write"
SHIP_TO = {
    "name": "Ada Lovelace",
    "address": "12 St James Sq",
    "city": "London",
    "country": "GB",
    "postalCode": "SW1Y 4JH",
}
HOLD = {"rules": [{"id": "manual-review", "parameters": {"reason": "new customer", "onViolation": "hold"}}]}


def required(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run scripts/console-tests.sh", returncode=2)
    return value


class Api:
    """The purchase API over HTTP (standard library only)."""

    def __init__(self, base, data_dir, binary):
        self.base = base.rstrip("/")
        self.data_dir = data_dir
        self.binary = binary
        self.origin = urllib.parse.urlsplit(self.base)._replace(path="", query="", fragment="").geturl()
        self.admin = self.token("back-office-tests", ADMIN_SCOPE)

    def token(self, customer, scope):
        """A development token from the server's own secret (`purchase-orchestrator token`)."""
        env = dict(os.environ, DATA_DIR=self.data_dir)
        out = subprocess.run(
            [self.binary, "token", "--customer", customer, "--scope", scope],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def call(self, method, path, token, body=None, idempotency_key=None):
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(f"{self.base}/{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def get(self, purchase_id):
        status, body = self.call("GET", f"purchases/{purchase_id}", self.admin)
        assert status == 200, body
        return body

    def held_purchase(self, customer, token, products, reserved_first=False):
        """A purchase held for review: created with a slow payment (15 s in the
        simulator), then a manual-review rule with onViolation hold. With
        `reserved_first` the rule comes once the stock is reserved, so the
        workflow notices the hold after the capture and waits in AwaitReview
        with the payment captured (else it may notice it before reserving)."""
        status, body = self.call(
            "POST",
            "purchases",
            token,
            {
                "customerId": customer,
                "products": products,
                "paymentDetails": {"method": "card", "transactionId": f"tok_slow_{uuid.uuid4().hex[:8]}"},
                "shippingAddress": SHIP_TO,
            },
            idempotency_key=str(uuid.uuid4()),
        )
        assert status == 201, body
        purchase_id = body["purchaseId"]
        if reserved_first:
            self.wait_until(purchase_id, lambda p: p["status"] == "RESERVED", "RESERVED", timeout=10)
        status, body = self.call("POST", f"purchases/{purchase_id}/apply-rules", self.admin, HOLD)
        assert status == 200 and body["status"] == "ON_HOLD", body
        return purchase_id

    def wait_until(self, purchase_id, predicate, what, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            purchase = self.get(purchase_id)
            if predicate(purchase):
                return purchase
            if time.monotonic() > deadline:
                raise AssertionError(f"{purchase_id} never became {what}: {json.dumps(purchase)[:2000]}")
            time.sleep(0.25)


def parked(purchase):
    """Held and its workflow waiting in AwaitReview."""
    return purchase["status"] == "ON_HOLD" and any(
        e["step"] == "AwaitReview" and e["outcome"] == "WAITING" for e in purchase["timeline"]
    )


@pytest.fixture(scope="session")
def api():
    return Api(required("CONSOLE_BASE_URL"), required("CONSOLE_DATA_DIR"), required("CONSOLE_SERVER_BIN"))


@pytest.fixture(scope="session")
def held(api):
    """Purchases on hold, oldest first: `approve`, `reject`, `conflict` for the
    flows (each waits in AwaitReview), then `fillers` enough for two pages of
    the queue whatever the flows have decided."""
    customer = "c-1"
    token = api.token(customer, CUSTOMER_SCOPE)
    ids = {
        "approve": api.held_purchase(customer, token, [{"id": "mug-ferris", "quantity": 1}], reserved_first=True),
        "reject": api.held_purchase(
            customer, token, [{"id": "mug-ferris", "quantity": 2}, {"id": "ebook-rust", "quantity": 1}], reserved_first=True
        ),
        "conflict": api.held_purchase(customer, token, [{"id": "course-serverless", "quantity": 1}], reserved_first=True),
    }
    fillers = [api.held_purchase(f"c-{n}", api.token(f"c-{n}", CUSTOMER_SCOPE), [{"id": "ebook-rust", "quantity": n}]) for n in range(2, 13)]
    for key in ("approve", "reject", "conflict"):
        api.wait_until(ids[key], parked, "parked in AwaitReview")
    return {**ids, "fillers": fillers, "customer_token": token}


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not executable:
        pytest.exit("no chromium on PATH: scripts/install-tools.sh installs Debian's", returncode=2)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",  # CI runs as root
                "--headless",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


class Watch:
    """What a page did: every request's URL, console errors, script errors."""

    def __init__(self, page, origin):
        self.origin = origin
        self.requests = []
        self.console_errors = []
        self.page_errors = []
        self.responses = {}
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("response", lambda r: self.responses.setdefault(r.url, r))

    def check(self):
        foreign = [u for u in self.requests if not (u.startswith(self.origin + "/") or u.startswith("data:"))]
        assert not foreign, f"requests to other origins: {foreign}"
        assert not self.page_errors, f"script errors: {self.page_errors}"
        # A 4xx the test provokes is logged by Chromium as a failed load;
        # anything else (a CSP violation above all) is a defect.
        unexpected = [m for m in self.console_errors if "Failed to load resource" not in m]
        assert not unexpected, f"console errors: {unexpected}"


@pytest.fixture
def console(browser, api):
    """A fresh browser context (no token) on a desktop-sized page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="Europe/London")
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch = Watch(page, api.origin)
    page.watch = watch
    yield page
    watch.check()
    context.close()


@pytest.fixture(scope="session")
def screenshots():
    directory = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR") or ROOT / "target" / "console-screenshots")
    if not directory.is_absolute():
        directory = ROOT / directory
    directory.mkdir(parents=True, exist_ok=True)
    return directory
