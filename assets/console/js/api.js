// The console's only way out: the public `/v1` API, with the token from sessionStorage in
// the Authorization header. The token never goes into a URL, a query string or a cookie.

const TOKEN_KEY = "cantila.token";
const SCOPES = ["read", "deploy", "admin"];

/** An error as the API words it: `{"error":{"code","message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Who is signed in: the token (per browser tab) and what `GET /v1/account` said of it. */
export const session = {
  account: null,
  token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  /** Checks the token with the API, then keeps it for this tab. Throws the API's error. */
  async signIn(token) {
    const account = await request("GET", "/v1/account", { token });
    sessionStorage.setItem(TOKEN_KEY, token);
    this.account = account;
    return account;
  },
  /** Re-reads the account of a kept token; false when there is none or it stopped working. */
  async resume() {
    const token = this.token();
    if (!token) return false;
    try {
      this.account = await request("GET", "/v1/account", { token });
      return true;
    } catch (error) {
      if (error.status === 401) this.signOut();
      throw error;
    }
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    this.account = null;
  },
  /** Whether the token's scope includes `scope` (read < deploy < admin). */
  can(scope) {
    const held = SCOPES.indexOf(this.account?.scope);
    return held >= 0 && held >= SCOPES.indexOf(scope);
  },
};

/** Headers of an authenticated request; exported for streams, which use `fetch` directly. */
export function authHeaders(extra = {}) {
  return { authorization: `Bearer ${session.token()}`, ...extra };
}

/**
 * Sends one API request and returns its JSON body (null for 204). Throws `ApiError` with
 * the API's message, or with a sentence of ours when the API could not be reached.
 */
export async function request(method, path, { body, signal, token } = {}) {
  const headers = { accept: "application/json", authorization: `Bearer ${token ?? session.token()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", `cannot reach the Cantila API (${error.message})`);
  }
  if (response.status === 401 && token === undefined) {
    // The kept token stopped working (revoked): the app sends the person to sign in.
    window.dispatchEvent(new CustomEvent("cantila:unauthenticated"));
  }
  return readBody(response);
}

/** The JSON of a response, or the API's error as an `ApiError`. */
export async function readBody(response) {
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    const error = json?.error;
    const message = error?.message ?? `the API answered ${response.status} ${response.statusText}`;
    const withId = error?.requestId ? `${message} (request id ${error.requestId})` : message;
    throw new ApiError(response.status, error?.code ?? "error", withId);
  }
  return json;
}

export const api = {
  get: (path, options) => request("GET", path, options),
  post: (path, body, options) => request("POST", path, { ...options, body }),
  patch: (path, body, options) => request("PATCH", path, { ...options, body }),
  put: (path, body, options) => request("PUT", path, { ...options, body }),
  delete: (path, options) => request("DELETE", path, options),
};

/** Encodes one path segment (ids and hostnames come from the API but are still encoded). */
export const seg = (value) => encodeURIComponent(value);

/**
 * Downloads a file the API serves only with the token: an authenticated `fetch`, the body
 * as a Blob, then an object URL handed to a temporary `download` link (a plain link could
 * not carry the Authorization header, and the token never goes into a URL). Returns the
 * name, the size and, when the response's ETag is a quoted SHA-256, whether the bytes
 * match it.
 */
export async function downloadFile(path, { signal, fallbackName = "download" } = {}) {
  let response;
  try {
    response = await fetch(path, { headers: authHeaders(), signal, cache: "no-store", credentials: "omit" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", `cannot reach the Cantila API (${error.message})`);
  }
  if (!response.ok) await readBody(response);
  const blob = await response.blob();
  const disposition = response.headers.get("content-disposition") ?? "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const expected = /^"([0-9a-f]{64})"$/.exec(response.headers.get("etag") ?? "")?.[1] ?? null;
  let verified = null;
  if (expected && globalThis.crypto?.subtle) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
    verified = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("") === expected;
  }
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // The browser has taken its copy once the click is handled.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size, verified };
}
