// The purchase API, as the console calls it: same origin, bearer token,
// an Idempotency-Key per user action, errors as the API words them.

// The page lives at <base>/console/, the API at <base>/ (locally
// /purchase-orchestrator/, on AWS /<stage>/purchase-orchestrator/).
const API_BASE = new URL("../", document.baseURI);
const CONSOLE_BASE = new URL("./", document.baseURI);
const TOKEN_KEY = "purchase-console.token";

/** An answer other than 2xx, with the API's `{error, message, details}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const code = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
    const message = body && typeof body.message === "string" ? body.message : "no message";
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.apiMessage = message;
    this.details = body && Array.isArray(body.details) ? body.details : [];
  }

  /** The whole text for a person: status, code, message and each detail. */
  describe() {
    const details = this.details
      .map((d) => (d && d.field ? `${d.field}: ${d.problem}` : JSON.stringify(d)))
      .join("; ");
    return details ? `${this.message} (${details})` : this.message;
  }
}

// The token lives in this tab's session storage only (never in the URL,
// never in a cookie, gone when the tab closes).
export const token = {
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return memoryToken;
    }
  },
  set(value) {
    memoryToken = value;
    try {
      sessionStorage.setItem(TOKEN_KEY, value);
    } catch {
      // storage disabled: memory only
    }
  },
  clear() {
    memoryToken = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
  },
};
let memoryToken = null;

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: `HTTP ${response.status}`, message: text.slice(0, 300) };
  }
}

async function send(url, { method = "GET", body, idempotencyKey, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (auth) {
    const bearer = token.get();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiError(0, { error: "NETWORK_ERROR", message: `the server could not be reached (${error.message})` });
  }
  const parsed = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** `GET`/`POST` below the API's base path, e.g. `api("purchases/1")`. */
export function api(path, options) {
  return send(new URL(path, API_BASE), options);
}

/** The local server's developer sign-in (absent on AWS: 404). */
export function devSignIn(method) {
  return send(new URL("dev-sign-in", CONSOLE_BASE), { method, body: method === "POST" ? {} : undefined, auth: false });
}

/** The state machine definitions the workflows run (the purchase's and
 * the review's), served with the page: `{purchase, review}`. */
export async function definitions() {
  const fetch = (name) => send(new URL(name, CONSOLE_BASE), { auth: false });
  const [purchase, review] = await Promise.all([fetch("purchase.asl.json"), fetch("review.asl.json")]);
  return { purchase, review };
}

/** One key per user action: a retry of the same action may reuse it. */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** What a JWT says about itself (not verified here: the API does that). */
export function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    return JSON.parse(json);
  } catch {
    return null;
  }
}
