// The review console: sign-in, the queue of purchases waiting for a
// person, one purchase with its workflow graph, and the reviewer's actions.
// Reading never changes anything; every change is a button press that sends
// its own Idempotency-Key.

import { ApiError, api, claims, definitions, devSignIn, newIdempotencyKey, token } from "./api.js";
import { badge, duration, el, money, say, setBadge, time } from "./format.js";
import { combine, draw } from "./graph.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 10;
const QUEUES = ["ON_HOLD", "NEEDS_ATTENTION"];
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "REJECTED"]);
const CANCELLABLE = new Set(["PENDING", "RESERVED", "PAID", "ON_HOLD"]);

let definitionPromise = null;
let generation = 0; // bumped on every navigation: late answers of an old view are dropped
let shown = null; // {id, purchase} of the purchase on screen
let shownCurrent = null; // its current state when last drawn
let pollTimer = null;
let polls = 0;
const queues = {};

/** The two workflows as the one graph a purchase goes through. */
function definition() {
  definitionPromise ||= definitions().then(({ purchase, review }) => combine(purchase, review)).catch((error) => {
    definitionPromise = null;
    throw error;
  });
  return definitionPromise;
}

function show(view) {
  for (const id of ["sign-in", "queue-view", "purchase-view"]) $(id).hidden = id !== view;
  $("loading").hidden = true;
}

// ---------------------------------------------------------------- sign-in

function signedIn() {
  const bearer = token.get();
  if (!bearer) return false;
  const about = claims(bearer);
  if (about && typeof about.exp === "number" && about.exp * 1000 < Date.now()) {
    token.clear();
    say($("sign-in-error"), "Your token has expired. Sign in again.");
    return false;
  }
  return true;
}

function showIdentity() {
  const about = claims(token.get()) || {};
  const scopes = typeof about.scope === "string" ? about.scope.split(" ") : [];
  $("identity-name").textContent = about.sub || "unknown";
  $("identity-name").title = scopes.join(" ");
  $("identity").hidden = false;
  return scopes;
}

function showSignIn() {
  stopPolling();
  $("identity").hidden = true;
  show("sign-in");
}

function signOut(message) {
  token.clear();
  say($("sign-in-error"), message || "");
  // The purchase asked for stays in the address: signing in brings it back.
  showSignIn();
  $("main").focus();
}

function acceptToken(value) {
  token.set(value);
  say($("sign-in-error"), "");
  $("token-input").value = "";
  route();
  $("main").focus();
}

async function developerSignIn() {
  const button = $("dev-sign-in");
  button.disabled = true;
  try {
    const answer = await devSignIn("POST");
    acceptToken(answer.token);
  } catch (error) {
    say($("sign-in-error"), error instanceof ApiError ? error.describe() : String(error));
  } finally {
    button.disabled = false;
  }
}

function pastedToken(event) {
  event.preventDefault();
  const value = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value)) {
    say($("sign-in-error"), "That is not a JWT (three base64url parts separated by dots).");
    $("token-input").focus();
    return;
  }
  acceptToken(value);
}

/** A failed call: 401 signs out (the token is no good), anything else is shown in `node`. */
function failed(error, node) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(`The API refused the token: ${error.describe()}. Sign in again.`);
    return;
  }
  const text = error instanceof ApiError ? error.describe() : String(error);
  const hint = error instanceof ApiError && error.status === 403 ? " The console needs a token with the purchases:admin scope." : "";
  say(node, text + hint);
}

// ---------------------------------------------------------------- routing

function route() {
  stopPolling();
  generation += 1;
  if (!signedIn()) {
    showSignIn();
    return;
  }
  const scopes = showIdentity();
  const match = location.hash.match(/^#\/purchases\/([^/?#]+)$/);
  if (match) {
    openPurchase(decodeURIComponent(match[1]));
  } else {
    showQueue();
    if (!scopes.includes("purchases:admin")) {
      say($("queue-error"), "This token lacks the purchases:admin scope: the queue and the actions will be refused.");
    }
  }
}

// ---------------------------------------------------------------- the queue

function holdOf(purchase) {
  const holds = (purchase.ruleResults || [])
    .filter((r) => r.outcome === "VIOLATED" && r.onViolation === "hold")
    .sort((a, b) => String(b.evaluatedAt).localeCompare(String(a.evaluatedAt)));
  const heldAt = [...(purchase.timeline || [])].reverse().find((e) => e.outcome === "ON_HOLD");
  return { rule: holds[0] || null, since: (heldAt && heldAt.at) || (holds[0] && holds[0].evaluatedAt) || purchase.updatedAt };
}

function card(purchase) {
  const attention = purchase.status === "NEEDS_ATTENTION";
  let why;
  let since;
  if (attention) {
    const a = purchase.attention || {};
    why = a.failedStep ? `${a.failedStep} failed: ${a.error || "error"}` : "an undoing step failed";
    since = a.since || purchase.updatedAt;
  } else {
    const hold = holdOf(purchase);
    why = hold.rule ? `${hold.rule.ruleId}: ${hold.rule.reason}` : "held for review";
    since = hold.since;
  }
  const waited = duration(Date.now() - new Date(since).getTime());
  const lines = (purchase.products || []).reduce((n, l) => n + (l.quantity || 0), 0);
  return el(
    "li",
    { class: "card" },
    el(
      "a",
      { href: `#/purchases/${encodeURIComponent(purchase.purchaseId)}`, "data-purchase-id": purchase.purchaseId },
      el("span", { class: "card-row" },
        el("span", { class: "customer", title: "customer" }, purchase.customerId),
        el("span", { class: "total", title: "total" }, money(purchase.totalAmount, purchase.currency))),
      el("span", { class: "why", title: attention ? "what failed" : "the rule that held it" }, why),
      el("span", { class: "card-row small" },
        el("span", { class: "age" }, `${attention ? "waiting" : "held"} ${waited}`, " · ", `${lines} item${lines === 1 ? "" : "s"}`),
        el("span", { class: "id mono", title: purchase.purchaseId }, purchase.purchaseId.slice(-12))),
    ),
  );
}

async function loadQueue(status, reset) {
  const section = $(`queue-${status}`);
  const list = section.querySelector(".cards");
  const more = section.querySelector(".more");
  const state = (queues[status] ||= { next: null, count: 0 });
  if (reset) {
    state.next = null;
    state.count = 0;
  }
  const params = new URLSearchParams({ status, order: "oldest", limit: String(PAGE_SIZE) });
  if (state.next) params.set("nextToken", state.next);
  const mine = generation;
  more.disabled = true;
  section.setAttribute("aria-busy", "true");
  try {
    const page = await api(`purchases?${params}`);
    if (mine !== generation) return;
    if (reset) list.replaceChildren();
    const cards = (page.purchases || []).map(card);
    list.append(...cards);
    state.count += cards.length;
    state.next = page.nextToken || null;
    more.hidden = !state.next;
    section.querySelector(".empty").hidden = state.count > 0;
    section.querySelector(".count").textContent = `(${state.count}${state.next ? "+" : ""})`;
    if (!reset && cards.length) cards[0].querySelector("a").focus();
  } finally {
    more.disabled = false;
    section.removeAttribute("aria-busy");
  }
}

async function showQueue() {
  show("queue-view");
  say($("queue-error"), "");
  try {
    await Promise.all(QUEUES.map((status) => loadQueue(status, true)));
  } catch (error) {
    failed(error, $("queue-error"));
  }
}

// ---------------------------------------------------------------- one purchase

function entry(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function address(a) {
  if (!a) return "–";
  return [a.name, a.address, [a.postalCode, a.city].filter(Boolean).join(" "), a.country].filter(Boolean).join(", ");
}

function render(purchase, def) {
  shown = { id: purchase.purchaseId, purchase };
  $("purchase-title").textContent = `Purchase ${purchase.purchaseId}`;
  setBadge($("purchase-status"), purchase.status);
  $("purchase-body").hidden = false;

  $("summary").replaceChildren(
    ...entry("Customer", purchase.customerId),
    ...entry("Total", money(purchase.totalAmount, purchase.currency)),
    ...entry("Payment", badge(purchase.paymentStatus), ` ${purchase.paymentMethod || ""}`),
    ...entry("Shipping", badge(purchase.shippingStatus)),
    ...(purchase.failureReason ? entry("Failure reason", badge(purchase.failureReason)) : []),
    ...entry("Ship to", address(purchase.shippingAddress)),
    ...entry("Created", time(purchase.createdAt)),
    ...entry("Updated", time(purchase.updatedAt)),
    ...(purchase.finalizedAt ? entry("Finalized", time(purchase.finalizedAt)) : []),
  );
  $("summary").querySelectorAll("dd .badge").forEach((node, i) => {
    node.id = ["payment-status", "shipping-status", "failure-reason"][i] || "";
  });

  const attention = purchase.attention;
  $("attention").hidden = !attention;
  if (attention) {
    $("attention").replaceChildren(
      el("strong", {}, "Needs attention: "),
      `${attention.failedStep} failed with ${attention.error} `,
      time(attention.since),
      ". Fix the cause, then redrive: the workflow tries that step again.",
    );
  }

  // Actions that fit the status; the API decides in the end (409 if not).
  const onHold = purchase.status === "ON_HOLD";
  const redrive = purchase.status === "NEEDS_ATTENTION";
  const cancel = CANCELLABLE.has(purchase.status);
  $("review-form").hidden = !onHold;
  $("redrive").hidden = !redrive;
  $("cancel").hidden = !cancel;
  if (!cancel) closeCancel();
  $("no-actions").hidden = onHold || redrive || cancel;
  $("no-actions").textContent = TERMINAL.has(purchase.status)
    ? "Nothing to decide: this purchase is final."
    : "Nothing to decide right now: the workflow is running.";

  $("lines").tBodies[0].replaceChildren(
    ...(purchase.products || []).map((line) =>
      el("tr", { "data-product": line.id },
        el("td", { class: "mono" }, line.id),
        el("td", { class: "num" }, String(line.quantity)),
        el("td", { class: "num" }, money(line.unitPrice, purchase.currency)),
        el("td", {}, line.kind),
        el("td", {}, badge(line.status))),
    ),
  );

  const rules = purchase.ruleResults || [];
  $("no-rules").hidden = rules.length > 0;
  $("rules").replaceChildren(
    ...rules.map((r) =>
      el("li", { class: "rule", "data-rule": r.ruleId },
        el("span", { class: "card-row" },
          el("strong", { class: "mono" }, r.ruleId),
          el("span", {}, badge(r.outcome), " ", el("span", { class: "muted" }, `on violation: ${r.onViolation}`))),
        el("span", {}, r.reason),
        el("code", { class: "params" }, JSON.stringify(r.parameters)),
        el("span", { class: "muted small" }, "by ", r.evaluatedBy, " · ", time(r.evaluatedAt))),
    ),
  );

  const box = $("graph");
  const scrolled = { left: box.scrollLeft, top: box.scrollTop };
  const path = draw(box, def, purchase);
  const now = box.querySelector("g.node.current");
  if (now && path.current !== shownCurrent) {
    // Bring the current state into view (on a narrow screen the graph is wider than the page).
    const at = now.getBoundingClientRect();
    const frame = box.getBoundingClientRect();
    box.scrollLeft = Math.max(0, scrolled.left + at.left - frame.left - (frame.width - at.width) / 2);
    box.scrollTop = Math.max(0, scrolled.top + at.top - frame.top - (frame.height - at.height) / 2);
  } else {
    box.scrollLeft = scrolled.left;
    box.scrollTop = scrolled.top;
  }
  shownCurrent = path.current;
  $("graph-path").textContent = path.sequence.length
    ? `Path: ${path.sequence.join(" → ")}. Current state: ${path.current || "–"}.`
    : "The workflow has not run yet.";

  $("timeline").replaceChildren(
    ...[...(purchase.timeline || [])].reverse().map((e) =>
      el("li", { "data-step": e.step },
        el("span", { class: "when" }, time(e.at)),
        el("span", { class: "what" }, el("strong", {}, e.step), " ", badge(e.outcome)),
        e.detail ? el("span", { class: "detail" }, e.detail) : null),
    ),
  );
  return path;
}

/** Still moving on its own: watch it (a GET now and then changes nothing). */
function moving(purchase, path) {
  if (purchase.finalizedAt || purchase.status === "NEEDS_ATTENTION") return false;
  if (purchase.status === "ON_HOLD" && path.current === "AwaitReview") return false;
  return true;
}

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
  $("live").hidden = true;
}

function schedule(purchase, path) {
  stopPolling();
  if (!moving(purchase, path)) {
    polls = 0;
    return;
  }
  polls += 1;
  $("live").hidden = false;
  const mine = generation;
  pollTimer = setTimeout(() => {
    if (mine === generation) refresh();
  }, polls < 60 ? 1000 : 5000);
}

async function refresh() {
  if (!shown) return;
  const mine = generation;
  try {
    const [def, purchase] = await Promise.all([definition(), api(`purchases/${encodeURIComponent(shown.id)}`)]);
    if (mine !== generation) return;
    schedule(purchase, render(purchase, def));
  } catch (error) {
    if (mine === generation) failed(error, $("purchase-error"));
  }
}

async function openPurchase(id) {
  show("purchase-view");
  shown = { id, purchase: null };
  shownCurrent = null;
  polls = 0;
  $("purchase-title").textContent = `Purchase ${id}`;
  setBadge($("purchase-status"), "");
  $("purchase-status").textContent = "…";
  $("purchase-body").hidden = true;
  for (const node of ["purchase-error", "action-error"]) say($(node), "");
  say($("action-result"), "");
  $("review-reason").value = "";
  closeCancel();
  await refresh();
  $("purchase-title").setAttribute("tabindex", "-1");
}

// ---------------------------------------------------------------- actions

function busy(on) {
  for (const id of ["approve", "reject", "redrive", "cancel", "cancel-yes"]) $(id).disabled = on;
  $("actions").setAttribute("aria-busy", String(on));
}

async function act(kind) {
  if (!shown) return;
  const id = shown.id;
  say($("action-error"), "");
  say($("action-result"), "");
  let path;
  let body;
  if (kind === "approve" || kind === "reject") {
    const reason = $("review-reason").value.trim();
    if (!reason) {
      say($("action-error"), `Give a reason to ${kind}: it is recorded on the purchase.`);
      $("review-reason").focus();
      return;
    }
    path = `purchases/${encodeURIComponent(id)}/review`;
    body = { decision: kind, reason };
  } else {
    path = `purchases/${encodeURIComponent(id)}/${kind}`;
  }
  const idempotencyKey = newIdempotencyKey(); // one per press: this action, not a retry
  busy(true);
  try {
    const answer = await api(path, { method: "POST", body, idempotencyKey });
    say($("action-result"), `${answer.status}: ${answer.message}`);
    $("review-reason").value = "";
    closeCancel();
  } catch (error) {
    failed(error, $("action-error"));
    if (error instanceof ApiError && error.status === 401) return;
  } finally {
    busy(false);
  }
  polls = 0;
  await refresh();
}

function openCancel() {
  $("cancel-confirm").hidden = false;
  $("cancel").setAttribute("aria-expanded", "true");
  $("cancel-yes").focus();
}

function closeCancel() {
  $("cancel-confirm").hidden = true;
  $("cancel").setAttribute("aria-expanded", "false");
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("dev-sign-in").addEventListener("click", developerSignIn);
  $("token-form").addEventListener("submit", pastedToken);
  $("sign-out").addEventListener("click", () => {
    signOut("");
  });
  $("refresh-queue").addEventListener("click", showQueue);
  for (const status of QUEUES) {
    $(`queue-${status}`).querySelector(".more").addEventListener("click", () =>
      loadQueue(status, false).catch((error) => failed(error, $("queue-error"))),
    );
  }
  $("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("open-id").value.trim();
    if (id) location.hash = `#/purchases/${encodeURIComponent(id)}`;
  });
  $("review-form").addEventListener("submit", (event) => event.preventDefault());
  $("approve").addEventListener("click", () => act("approve"));
  $("reject").addEventListener("click", () => act("reject"));
  $("redrive").addEventListener("click", () => act("redrive"));
  $("cancel").addEventListener("click", () => ($("cancel-confirm").hidden ? openCancel() : closeCancel()));
  $("cancel-yes").addEventListener("click", () => act("cancel"));
  $("cancel-no").addEventListener("click", () => {
    closeCancel();
    $("cancel").focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("cancel-confirm").hidden) {
      closeCancel();
      $("cancel").focus();
    }
  });
  window.addEventListener("hashchange", () => {
    route();
    $("main").focus({ preventScroll: false });
  });
}

function start() {
  wire();
  // Offer the developer sign-in only where the server has it (local
  // development mode); elsewhere this answers 403 or 404.
  devSignIn("GET")
    .then(() => {
      $("dev-sign-in-box").hidden = false;
    })
    .catch(() => {});
  route();
}

start();
