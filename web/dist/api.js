// Fetch helper shared by every page.
//
// All requests to the Nexus HTTP API go through `request()` (or `getJSON()`),
// which:
//   * prefixes paths with API_BASE ("/status" -> "/api/v1/status"),
//   * sends and parses JSON,
//   * turns failures into an ApiError with a human-readable `message`:
//       - API errors   {"error":{"code","message","type"}}  -> that message
//       - network failures (server down)                    -> code "unreachable"
//       - timeouts                                          -> code "timeout"
//       - non-JSON bodies                                   -> code "invalid_json"
//   * adds the Authorization header when an API key is stored (see below).

export const API_BASE = '/api/v1';
const DEFAULT_TIMEOUT_MS = 10_000;

// ---- Authentication hook --------------------------------------------------
// Nothing sets a key yet. A future login page calls setApiKey(key); from then
// on every request carries `Authorization: Bearer <key>`. The key is kept in
// sessionStorage only (gone when the tab closes) and must NEVER be put in a
// URL or query string. On HTTP 401 a `nexus:unauthorized` event is dispatched
// on `window` so the login page can react (e.g. route to #/login).
const API_KEY_STORAGE = 'nexus.apiKey';

export function getApiKey() {
  try {
    return sessionStorage.getItem(API_KEY_STORAGE);
  } catch {
    return null; // storage disabled (privacy mode, sandboxed frame)
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(API_KEY_STORAGE, key);
    else sessionStorage.removeItem(API_KEY_STORAGE);
  } catch {
    /* storage unavailable: requests simply go out unauthenticated */
  }
}

export function clearApiKey() {
  setApiKey(null);
}

function authHeaders() {
  const key = getApiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}
// ---------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(message, { status = 0, code = 'unknown', type = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // HTTP status, 0 when no response arrived
    this.code = code;     // snake_case code from the API, or a client-side one
    this.type = type;     // error "type" from the API, if any
  }

  /** True when no HTTP response was received (server down, network, timeout). */
  get isNetworkError() {
    return this.status === 0;
  }
}

/**
 * Perform an API request and return the parsed JSON body (null if empty).
 * @param {string} path  path below API_BASE, e.g. "/status"
 * @param {{method?: string, body?: any, headers?: object, signal?: AbortSignal, timeoutMs?: number}} [options]
 */
export async function request(path, options = {}) {
  const { method = 'GET', body, headers = {}, signal, timeoutMs = DEFAULT_TIMEOUT_MS } = options;

  const init = {
    method,
    headers: { Accept: 'application/json', ...authHeaders(), ...headers },
    cache: 'no-store',
    credentials: 'same-origin',
  };
  if (body !== undefined) {
    if (body instanceof FormData || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
  }

  // Own controller so we can time out and still honour the caller's signal.
  const controller = new AbortController();
  init.signal = controller.signal;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const forwardAbort = () => controller.abort(signal.reason);
  if (signal) {
    if (signal.aborted) forwardAbort();
    else signal.addEventListener('abort', forwardAbort, { once: true });
  }

  let response;
  let text;
  try {
    response = await fetch(API_BASE + path, init);
    text = await response.text();
  } catch (err) {
    if (timedOut) {
      throw new ApiError(`The server did not respond within ${Math.round(timeoutMs / 1000)} s.`, { code: 'timeout' });
    }
    if (signal?.aborted) throw err; // cancelled by the caller: let AbortError through
    throw new ApiError('Cannot reach the Nexus server.', { code: 'unreachable' });
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', forwardAbort);
  }

  let payload = null;
  let parsed = true;
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      parsed = false;
    }
  }

  if (!response.ok) {
    const err = parsed && payload && typeof payload === 'object' ? payload.error : null;
    if (response.status === 401) {
      window.dispatchEvent(new CustomEvent('nexus:unauthorized', { detail: { path } }));
    }
    throw new ApiError(
      err?.message || `Request failed: HTTP ${response.status} ${response.statusText}`.trim(),
      { status: response.status, code: err?.code || `http_${response.status}`, type: err?.type ?? null },
    );
  }

  if (!parsed) {
    throw new ApiError('The server sent a response that is not valid JSON.', {
      status: response.status,
      code: 'invalid_json',
    });
  }
  return payload;
}

/** GET a JSON resource below API_BASE. */
export function getJSON(path, options = {}) {
  return request(path, { ...options, method: 'GET' });
}
