"""The review console in a real browser: sign in, the queue, a purchase's
workflow graph, approve, reject, and a conflict's message."""

import json
import re
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

from conftest import parked
from playwright.sync_api import expect

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def console_url(api, fragment=""):
    return f"{api.base}/console/{fragment}"


def sign_in(page, api, fragment=""):
    response = page.goto(console_url(api, fragment))
    assert response.status == 200
    assert response.headers["content-security-policy"] == CSP
    button = page.get_by_role("button", name="Developer sign-in")
    expect(button).to_be_visible()
    button.click()
    expect(page.locator("#identity-name")).to_have_text("back-office")


def card(page, purchase_id):
    return page.locator(f'a[data-purchase-id="{purchase_id}"]')


def node(page, state):
    return page.locator(f'#graph g.node[data-state="{state}"]')


def test_sign_in_shows_the_held_purchases_oldest_first_paged(console, api, held, screenshots):
    page = console
    page.goto(console_url(api))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#queue-view")).to_be_hidden()
    sign_in(page, api)

    queue = page.locator("#queue-ON_HOLD")
    expect(queue.locator(".card")).to_have_count(10)  # one page
    first = queue.locator(".card a").first
    expect(first).to_have_attribute("data-purchase-id", held["approve"])  # oldest first
    expect(first.locator(".customer")).to_have_text("c-1")
    expect(first.locator(".total")).to_have_text("€12.50")
    expect(first.locator(".why")).to_have_text("manual-review: manual review required: new customer")
    expect(first.locator(".age")).to_contain_text(re.compile(r"held \d+ (s|min)"))

    # The next page comes from the list's nextToken.
    queue.get_by_role("button", name="Load more").click()
    expect(queue.locator(".card").nth(10)).to_be_visible()
    for purchase_id in held["fillers"]:
        expect(card(page, purchase_id)).to_have_count(1)
    expect(page.locator("#queue-NEEDS_ATTENTION .empty")).to_be_visible()

    # The token lives in session storage, never in the address.
    token = page.evaluate("sessionStorage.getItem('purchase-console.token')")
    assert token and token.count(".") == 2
    assert token not in page.url
    for url in page.watch.requests:
        assert token not in url
    page.screenshot(path=str(screenshots / "console-queue.png"), full_page=True)


def test_a_held_purchase_shows_its_path_and_approval_completes_it(console, api, held, screenshots):
    page = console
    page.set_viewport_size({"width": 1360, "height": 1700})
    sign_in(page, api)
    # Keyboard: focus the card and press Enter.
    link = card(page, held["approve"])
    link.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#purchase-title")).to_have_text(f"Purchase {held['approve']}")
    expect(page.locator("#purchase-status")).to_have_text("ON_HOLD")
    expect(page.locator("#lines tbody tr")).to_have_count(1)
    expect(page.locator('#rules li[data-rule="manual-review"]')).to_contain_text("VIOLATED")

    # The graph: the path to AwaitReview highlighted, AwaitReview current.
    expect(node(page, "AwaitReview")).to_have_class(re.compile(r"\bcurrent\b"))
    expect(node(page, "AwaitReview")).to_have_attribute("aria-current", "step")
    for state in ("EvaluateRules", "ReserveStock", "CapturePayment"):
        expect(node(page, state)).to_have_class(re.compile(r"\bon-path\b"))
    for state in ("ProvisionProducts", "RevokeProducts", "PurchaseCompleted"):
        expect(node(page, state)).not_to_have_class(re.compile(r"\bon-path\b"))
    expect(page.locator('#graph path.edge.on-path[data-edge="CapturePayment->AwaitReview"]')).to_have_count(1)
    expect(page.locator("#graph-path")).to_contain_text("Current state: AwaitReview")
    page.screenshot(path=str(screenshots / "console-purchase.png"), full_page=True)

    # A reason is required; then approve.
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#action-error")).to_contain_text("Give a reason")
    page.get_by_label("Reason").fill("customer verified by phone")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/review")) as sent:
        page.get_by_role("button", name="Approve").click()
    assert UUID.fullmatch(sent.value.headers["idempotency-key"]), sent.value.headers
    assert sent.value.post_data_json == {"decision": "approve", "reason": "customer verified by phone"}
    expect(page.locator("#action-result")).to_contain_text("approved")
    expect(page.locator("#action-error")).to_be_hidden()

    # The page follows the workflow until the purchase is COMPLETED.
    expect(page.locator("#purchase-status")).to_have_text("COMPLETED", timeout=30_000)
    expect(node(page, "PurchaseCompleted")).to_have_class(re.compile(r"\bcurrent\b"))
    # The review continued it in a new run: back at the start, on to the end.
    for state in ("AwaitReview", "ContinuePurchase", "StartPurchaseRun", "ProvisionProducts"):
        expect(node(page, state)).to_have_class(re.compile(r"\bon-path\b"))
    expect(page.locator("#payment-status")).to_have_text("CAPTURED")
    expect(page.locator("#lines tbody tr").first).to_contain_text("PROVISIONED")
    expect(page.locator("#review-form")).to_be_hidden()
    expect(page.locator("#no-actions")).to_contain_text("final")
    assert api.get(held["approve"])["status"] == "COMPLETED"


def test_rejecting_releases_the_stock(console, api, held):
    page = console
    sign_in(page, api, f"#/purchases/{held['reject']}")
    expect(page.locator("#purchase-status")).to_have_text("ON_HOLD")
    page.get_by_label("Reason").fill("address does not exist")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#purchase-status")).to_have_text("REJECTED")
    # Compensation runs; the page watches it to the end.
    expect(page.locator("#summary")).to_contain_text("Finalized", timeout=30_000)
    rows = page.locator("#lines tbody tr")
    expect(rows).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i)).to_contain_text("RELEASED")
    expect(page.locator("#payment-status")).to_have_text("REFUNDED")
    expect(page.locator("#shipping-status")).to_have_text("CANCELLED")
    for state in ("Rejected", "RevokeProducts", "RefundPayment", "ReleaseStock", "FinalizePurchase"):
        expect(node(page, state)).to_have_class(re.compile(r"\bon-path\b"))
    expect(node(page, "PurchaseCancelled")).to_have_class(re.compile(r"\bcurrent\b"))
    expect(page.locator('#timeline li[data-step="Review"]')).to_contain_text("REJECTED")
    purchase = api.get(held["reject"])
    assert purchase["status"] == "REJECTED"
    assert {line["status"] for line in purchase["products"]} == {"RELEASED"}


def test_a_conflict_shows_the_api_message(console, api, held):
    page = console
    sign_in(page, api, f"#/purchases/{held['conflict']}")
    expect(page.locator("#purchase-status")).to_have_text("ON_HOLD")
    # Behind the page's back, the customer cancels.
    status, body = api.call(
        "POST", f"purchases/{held['conflict']}/cancel", held["customer_token"], idempotency_key=str(uuid.uuid4())
    )
    assert status == 200, body
    page.get_by_label("Reason").fill("looks fine")
    page.get_by_role("button", name="Approve").click()
    error = page.locator("#action-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("409 CONFLICT")
    expect(error).to_contain_text(f"purchase {held['conflict']} is CANCELLED; only ON_HOLD purchases can be reviewed")
    # ...and the purchase is shown as it now is.
    expect(page.locator("#purchase-status")).to_have_text("CANCELLED")
    expect(page.locator("#review-form")).to_be_hidden()
    expect(error).to_be_visible()


def test_keyboard_only_at_360_px(console, api, held):
    page = console
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(console_url(api))
    expect(page.get_by_role("button", name="Developer sign-in")).to_be_visible()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "dev-sign-in":
            break
    assert page.evaluate("document.activeElement.id") == "dev-sign-in"
    page.keyboard.press("Enter")
    expect(page.locator("#queue-ON_HOLD .card").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # Tab reaches the first card; Enter opens it.
    first = page.locator("#queue-ON_HOLD .card a").first
    purchase_id = first.get_attribute("data-purchase-id")
    for _ in range(15):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.purchaseId || ''") == purchase_id:
            break
    page.keyboard.press("Enter")
    expect(page.locator("#purchase-title")).to_have_text(f"Purchase {purchase_id}")
    expect(node(page, "EvaluateRules")).to_be_attached()
    # The page reflows; only the graph scrolls, inside its own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.evaluate("document.querySelector('#graph').scrollWidth") > 360


def test_a_pasted_token_works_and_a_customer_token_is_refused(console, api, held):
    page = console
    page.goto(console_url(api))
    page.get_by_label("Bearer token").fill("Bearer " + api.token("reviewer-7", "purchases:read purchases:admin"))
    page.get_by_role("button", name="Sign in with this token").click()
    expect(page.locator("#identity-name")).to_have_text("reviewer-7")
    expect(page.locator("#queue-ON_HOLD .card").first).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('purchase-console.token')") is None

    # A customer's token: warned, and another customer's purchase is not found.
    page.get_by_label("Bearer token").fill(api.token("c-1", "purchases:read purchases:write"))
    page.get_by_role("button", name="Sign in with this token").click()
    expect(page.locator("#queue-error")).to_contain_text("lacks the purchases:admin scope")
    page.goto(console_url(api, f"#/purchases/{held['fillers'][0]}"))
    expect(page.locator("#purchase-error")).to_contain_text("404 NOT_FOUND")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Bearer token").fill("not-a-token")
    page.get_by_role("button", name="Sign in with this token").click()
    expect(page.locator("#sign-in-error")).to_contain_text("not a JWT")

    page.get_by_label("Bearer token").fill(api.token("back-office", "purchases:admin")[:-4] + "AAAA")
    page.get_by_role("button", name="Sign in with this token").click()
    expect(page.locator("#sign-in-error")).to_contain_text("401")


def test_a_page_load_changes_nothing_and_the_files_carry_the_policy(console, api, held):
    page = console
    filler = held["fillers"][0]
    before = api.wait_until(filler, parked, "parked in AwaitReview")
    sign_in(page, api, f"#/purchases/{filler}")
    expect(node(page, "AwaitReview")).to_have_class(re.compile(r"\bcurrent\b"))
    page.reload()
    expect(node(page, "AwaitReview")).to_have_class(re.compile(r"\bcurrent\b"))
    page.goto(console_url(api))
    expect(card(page, filler)).to_be_visible()
    after = api.get(filler)
    assert (after["version"], after["status"]) == (before["version"], "ON_HOLD")
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(api.origin + "/") for url in loaded)
    for url, response in page.watch.responses.items():
        if "/console/" in url:
            assert response.headers.get("content-security-policy") == CSP, url
    html = page.evaluate("document.documentElement.outerHTML")
    assert "<script>" not in html and " onclick=" not in html and " style=" not in html


def test_needs_attention_queue_and_redrive(console, api, held):
    """NEEDS_ATTENTION needs an undoing step to fail after all its retries,
    which the local simulators never do: the API's answers for one such
    purchase are played by the browser's request routing here (the rest of
    the API is the real server)."""
    page = console
    fake = "01a00000-0000-7000-8000-00000000beef"
    now = datetime.now(timezone.utc)
    at = lambda minutes: (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")  # noqa: E731
    stuck = {
        "purchaseId": fake,
        "status": "NEEDS_ATTENTION",
        "products": [{"id": "fail-provision-license", "quantity": 1, "status": "PROVISIONING_FAILED", "unitPrice": 1500, "kind": "digital"}],
        "paymentStatus": "REFUND_FAILED",
        "shippingStatus": "NOT_REQUIRED",
        "customerId": "c-99",
        "currency": "EUR",
        "totalAmount": 1500,
        "failureReason": "PROVISIONING_FAILED",
        "attention": {"failedStep": "RefundPayment", "error": "Transient", "since": at(135)},
        "paymentMethod": "card",
        "shippingAddress": {"name": "Ada", "address": "1 St", "city": "London", "country": "GB", "postalCode": "SW1"},
        "timeline": [
            {"step": "Create", "outcome": "ACCEPTED", "at": at(140)},
            {"step": "ReserveStock", "outcome": "SUCCEEDED", "at": at(140)},
            {"step": "CapturePayment", "outcome": "SUCCEEDED", "at": at(139)},
            {"step": "ProvisionProducts", "outcome": "FAILED", "at": at(139), "detail": "fail-provision-license could not be delivered"},
            {"step": "NeedsAttention", "outcome": "WAITING", "at": at(135), "detail": "RefundPayment could not be completed"},
        ],
        "ruleResults": [],
        "version": 9,
        "createdAt": at(140),
        "updatedAt": at(135),
    }
    redriven = {
        **{k: v for k, v in stuck.items() if k != "attention"},
        "status": "FAILED",
        "paymentStatus": "REFUNDED",
        "products": [{**stuck["products"][0], "status": "RELEASED"}],
        "timeline": stuck["timeline"]
        + [
            {"step": "Redrive", "outcome": "REQUESTED", "at": at(0), "detail": "by back-office"},
            {"step": "Redrive", "outcome": "RESUMED", "at": at(0), "detail": "RefundPayment is tried again"},
            {"step": "RefundPayment", "outcome": "SUCCEEDED", "at": at(0)},
            {"step": "ReleaseStock", "outcome": "SUCCEEDED", "at": at(0)},
            {"step": "FinalizePurchase", "outcome": "FAILED", "at": at(0)},
        ],
        "version": 14,
        "finalizedAt": at(0),
    }
    state = {"purchase": stuck, "redrives": []}

    def play(route):
        request = route.request
        url = urllib.parse.urlsplit(request.url)
        query = urllib.parse.parse_qs(url.query)
        if url.path.endswith("/purchases") and query.get("status") == ["NEEDS_ATTENTION"]:
            assert query.get("order") == ["oldest"], query
            body = {"purchases": [state["purchase"]] if state["purchase"]["status"] == "NEEDS_ATTENTION" else []}
        elif url.path.endswith(f"/purchases/{fake}") and request.method == "GET":
            body = state["purchase"]
        elif url.path.endswith(f"/purchases/{fake}/redrive") and request.method == "POST":
            state["redrives"].append(request.headers.get("idempotency-key"))
            state["purchase"] = redriven
            body = {"purchaseId": fake, "status": "PENDING", "message": "redrive requested; RefundPayment is tried again"}
        else:
            route.continue_()
            return
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(re.compile(r".*/purchase-orchestrator/purchases.*"), play)
    sign_in(page, api)
    queue = page.locator("#queue-NEEDS_ATTENTION")
    attention_card = card(page, fake)
    expect(attention_card).to_be_visible()
    expect(attention_card.locator(".why")).to_have_text("RefundPayment failed: Transient")
    expect(attention_card.locator(".age")).to_contain_text("waiting 2 h 15 min")
    expect(queue.locator(".count")).to_have_text("(1)")

    attention_card.click()
    expect(page.locator("#purchase-status")).to_have_text("NEEDS_ATTENTION")
    expect(page.locator("#attention")).to_contain_text("RefundPayment failed with Transient")
    expect(node(page, "NeedsAttention")).to_have_class(re.compile(r"\bcurrent\b"))
    expect(node(page, "RefundPayment")).to_have_class(re.compile(r"\bfailed\b"))
    for state_name in ("ProvisioningFailed", "RevokeProducts", "RefundStuck"):
        expect(node(page, state_name)).to_have_class(re.compile(r"\bon-path\b"))
    expect(node(page, "RevokeStuck")).not_to_have_class(re.compile(r"\bon-path\b"))
    expect(page.locator("#review-form")).to_be_hidden()

    page.get_by_role("button", name="Redrive").click()
    expect(page.locator("#action-result")).to_contain_text("RefundPayment is tried again")
    expect(page.locator("#purchase-status")).to_have_text("FAILED")
    expect(node(page, "PurchaseFailed")).to_have_class(re.compile(r"\bcurrent\b"))
    expect(node(page, "RefundPayment")).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator("#redrive")).to_be_hidden()
    assert len(state["redrives"]) == 1 and UUID.fullmatch(state["redrives"][0] or ""), state["redrives"]
