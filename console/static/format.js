// Small formatting helpers and DOM builders (text only: nothing from the
// API is ever parsed as HTML).

/** `el("p", {class: "x"}, "text", child)`: an element with attributes and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Minor units (2999) in a currency ("EUR") → "€29.99". */
export function money(amount, currency) {
  if (typeof amount !== "number") return "–";
  try {
    const format = new Intl.NumberFormat("en", { style: "currency", currency });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(amount / 10 ** digits);
  } catch {
    return `${amount} ${currency || ""}`.trim();
  }
}

/** A span of milliseconds as "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function duration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** A `<time>` with the local date and time, the ISO instant as its value. */
export function time(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const text = date.toLocaleString("en-GB", {
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  return el("time", { datetime: iso, title: iso }, text);
}

const TONE = {
  COMPLETED: "good",
  PROVISIONED: "good",
  CAPTURED: "good",
  READY_TO_SHIP: "good",
  SUCCEEDED: "good",
  APPROVED: "good",
  PASSED: "good",
  ON_HOLD: "wait",
  WAITING: "wait",
  PENDING: "info",
  RESERVED: "info",
  PAID: "info",
  NEEDS_ATTENTION: "bad",
  FAILED: "bad",
  DECLINED: "bad",
  OUT_OF_STOCK: "bad",
  PROVISIONING_FAILED: "bad",
  REFUND_FAILED: "bad",
  VIOLATED: "bad",
  REJECTED: "neutral",
  CANCELLED: "neutral",
  RELEASED: "neutral",
  REFUNDED: "neutral",
  NOT_CHARGED: "neutral",
  NOT_REQUIRED: "neutral",
};

/** A status as a coloured badge (the text says it all; colour only helps). */
export function badge(status) {
  return el("span", { class: `badge ${TONE[status] || "neutral"}`, "data-value": status }, status || "–");
}

export function setBadge(node, status) {
  node.className = `badge ${TONE[status] || "neutral"}`;
  node.dataset.value = status;
  node.textContent = status;
}

/** Shows `text` in `node` (hidden when empty). */
export function say(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}
