// Fetch helper shared by every page.
//
// All requests to the Nexus HTTP API go through `request()` (or `getJSON()`),
// `streamEvents()` (server-sent events over fetch) or `upload()` (multipart
// with progress over XMLHttpRequest). Each of them:
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

  return parseResponse(response.status, response.statusText, text, path);
}

// Turn a finished HTTP exchange into the parsed JSON body or an ApiError.
// Shared by request() and upload() so both report errors the same way.
function parseResponse(status, statusText, text, path) {
  let payload = null;
  let parsed = true;
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      parsed = false;
    }
  }

  if (status < 200 || status > 299) {
    throw httpError(status, statusText, parsed ? payload : null, path);
  }

  if (!parsed) {
    throw new ApiError('The server sent a response that is not valid JSON.', {
      status,
      code: 'invalid_json',
    });
  }
  return payload;
}

function httpError(status, statusText, payload, path) {
  const err = payload && typeof payload === 'object' ? payload.error : null;
  if (status === 401) {
    window.dispatchEvent(new CustomEvent('nexus:unauthorized', { detail: { path } }));
  }
  return new ApiError(
    err?.message || `Request failed: HTTP ${status} ${statusText ?? ''}`.trim(),
    { status, code: err?.code || `http_${status}`, type: err?.type ?? null },
  );
}

/** GET a JSON resource below API_BASE. */
export function getJSON(path, options = {}) {
  return request(path, { ...options, method: 'GET' });
}

// ---- Server-sent events over fetch ------------------------------------------
// EventSource cannot send an Authorization header or a POST body, so streams
// are read with fetch() + ReadableStream and parsed here (WHATWG SSE rules:
// "event:"/"data:"/"id:" fields, ":" comments, CRLF/LF/CR line ends, an event
// is dispatched at a blank line, multi-line data is joined with "\n").

/**
 * POST (by default) to an SSE endpoint and call `onEvent({event, data, id})`
 * for every event; `data` is the raw string (JSON.parse it yourself). Resolves
 * when the server closes the stream. Throws ApiError like request() (HTTP
 * errors with the API's message, "unreachable", "timeout", plus
 * "invalid_stream" when the answer is not text/event-stream), or the caller's
 * AbortError when `signal` aborts. An exception thrown by `onEvent` cancels the
 * stream and is re-thrown.
 * @param {string} path
 * @param {{method?: string, body?: any, headers?: object, signal?: AbortSignal,
 *          onEvent: (ev: {event: string, data: string, id: string}) => void,
 *          connectTimeoutMs?: number, idleTimeoutMs?: number}} options
 *   connectTimeoutMs: limit for the response headers to arrive;
 *   idleTimeoutMs: limit for the gap between two chunks of the stream.
 */
export async function streamEvents(path, options) {
  const {
    method = 'POST', body, headers = {}, signal, onEvent,
    connectTimeoutMs = 30_000, idleTimeoutMs = 120_000,
  } = options;

  const init = {
    method,
    headers: { Accept: 'text/event-stream', ...authHeaders(), ...headers },
    cache: 'no-store',
    credentials: 'same-origin',
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }

  const controller = new AbortController();
  init.signal = controller.signal;
  let timedOut = false;
  let timer = 0;
  const arm = (ms) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, ms);
  };
  const forwardAbort = () => controller.abort(signal.reason);
  if (signal) {
    if (signal.aborted) forwardAbort();
    else signal.addEventListener('abort', forwardAbort, { once: true });
  }
  let streaming = false;
  const failure = (err, waitedMs) => {
    if (timedOut) {
      return new ApiError(`The server sent nothing for ${Math.round(waitedMs / 1000)} s.`, { code: 'timeout' });
    }
    if (signal?.aborted) return err; // cancelled by the caller: AbortError
    return streaming
      ? new ApiError('The connection to the server was lost.', { code: 'unreachable' })
      : new ApiError('Cannot reach the Nexus server.', { code: 'unreachable' });
  };

  try {
    let response;
    arm(connectTimeoutMs);
    try {
      response = await fetch(API_BASE + path, init);
    } catch (err) {
      throw failure(err, connectTimeoutMs);
    }

    const contentType = response.headers.get('Content-Type') || '';
    if (!response.ok || !/^text\/event-stream\b/i.test(contentType)) {
      let text = '';
      try {
        text = await response.text();
      } catch (err) {
        throw failure(err, connectTimeoutMs);
      }
      if (!response.ok) {
        let payload = null;
        try { payload = JSON.parse(text); } catch { /* not JSON */ }
        throw httpError(response.status, response.statusText, payload, path);
      }
      throw new ApiError('The server did not answer with an event stream.', {
        status: response.status,
        code: 'invalid_stream',
      });
    }

    streaming = true;
    const parser = createSseParser(onEvent);
    const reader = response.body.getReader();
    const decoder = new TextDecoder(); // UTF-8; drops a leading BOM as SSE requires
    try {
      for (;;) {
        arm(idleTimeoutMs);
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw failure(err, idleTimeoutMs);
        }
        if (chunk.done) {
          parser.push(decoder.decode(), true);
          return;
        }
        parser.push(decoder.decode(chunk.value, { stream: true }), false);
      }
    } finally {
      reader.cancel().catch(() => {}); // no-op when finished; stops the download otherwise
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', forwardAbort);
  }
}

/** Incremental SSE parser: push(text, isLast) calls onEvent per complete event. */
export function createSseParser(onEvent) {
  let buffer = '';
  let eventType = '';
  let data = [];
  let lastId = '';

  function line(text) {
    if (text === '') {
      if (data.length) {
        const ev = { event: eventType || 'message', data: data.join('\n'), id: lastId };
        eventType = '';
        data = [];
        onEvent(ev);
      } else {
        eventType = '';
      }
      return;
    }
    if (text[0] === ':') return; // comment / keep-alive
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') eventType = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) lastId = value;
    // "retry" and unknown fields are ignored
  }

  return {
    push(text, isLast) {
      buffer += text;
      let pos = 0;
      while (pos < buffer.length) {
        const cr = buffer.indexOf('\r', pos);
        const lf = buffer.indexOf('\n', pos);
        const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
        if (end === -1) break;
        // A CR at the very end may be the first half of a CRLF split across chunks.
        if (end === cr && end === buffer.length - 1 && !isLast) break;
        const next = end === cr && buffer[end + 1] === '\n' ? end + 2 : end + 1;
        const text = buffer.slice(pos, end);
        pos = next;
        line(text);
      }
      buffer = buffer.slice(pos);
      // At end of stream an unterminated event is discarded (SSE spec).
      if (isLast) buffer = '';
    },
  };
}

// ---- Uploads with progress ----------------------------------------------------
// fetch() cannot report upload progress, so multipart uploads use
// XMLHttpRequest with the same base path, auth header and error handling.

/**
 * Send `formData` (multipart/form-data; the browser sets the boundary) and
 * resolve with the parsed JSON answer. `onProgress({loaded, total,
 * lengthComputable})` follows the request body upload. Throws ApiError like
 * request(); code "timeout" when neither upload nor answer made progress for
 * `idleTimeoutMs`; the caller's AbortError when `signal` aborts.
 * @param {string} path
 * @param {FormData} formData
 * @param {{method?: string, headers?: object, signal?: AbortSignal,
 *          onProgress?: (p: {loaded: number, total: number, lengthComputable: boolean}) => void,
 *          idleTimeoutMs?: number}} [options]
 */
export function upload(path, formData, options = {}) {
  const { method = 'POST', headers = {}, signal, onProgress, idleTimeoutMs = 60_000 } = options;

  return new Promise((resolve, reject) => {
    const abortReason = () => signal?.reason ?? new DOMException('The upload was cancelled.', 'AbortError');
    if (signal?.aborted) {
      reject(abortReason());
      return;
    }

    const xhr = new XMLHttpRequest();
    let timedOut = false;
    let timer = 0;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        xhr.abort();
      }, idleTimeoutMs);
    };
    const onAbortSignal = () => xhr.abort();
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbortSignal);
    };

    xhr.open(method, API_BASE + path);
    for (const [name, value] of Object.entries({ Accept: 'application/json', ...authHeaders(), ...headers })) {
      xhr.setRequestHeader(name, value);
    }

    xhr.upload.onprogress = (e) => {
      arm();
      onProgress?.({ loaded: e.loaded, total: e.total, lengthComputable: e.lengthComputable });
    };
    xhr.onprogress = arm; // answer is arriving
    xhr.onload = () => {
      finish();
      try {
        resolve(parseResponse(xhr.status, xhr.statusText, xhr.responseText, path));
      } catch (err) {
        reject(err);
      }
    };
    xhr.onerror = () => {
      finish();
      reject(new ApiError('Cannot reach the Nexus server.', { code: 'unreachable' }));
    };
    xhr.onabort = () => {
      finish();
      if (timedOut) {
        reject(new ApiError(`The upload made no progress for ${Math.round(idleTimeoutMs / 1000)} s.`, { code: 'timeout' }));
      } else {
        reject(abortReason());
      }
    };

    signal?.addEventListener('abort', onAbortSignal, { once: true });
    arm();
    xhr.send(formData);
  });
}
