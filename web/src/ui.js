// Small DOM and formatting helpers shared by pages.

/**
 * Create an element. Children may be strings, numbers, nodes, arrays or
 * null/false (skipped). Text is always inserted as text, never as HTML.
 *   h('td', { class: 'num' }, '42')
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Text for screen readers only. */
export function srOnly(text) {
  return h('span', { class: 'visually-hidden' }, text);
}

const numberFormat = new Intl.NumberFormat();

export function formatNumber(n) {
  return Number.isFinite(n) ? numberFormat.format(n) : '—';
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** 4096 -> "4.0 KiB", 999 -> "999 B" (binary units). */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${value} B`;
  return `${value.toFixed(value < 100 ? 1 : 0)} ${BYTE_UNITS[unit]}`;
}

/** 3725 -> "1h 2m 5s"; shows at most three units. */
export function formatDuration(totalSeconds) {
  if (!Number.isFinite(totalSeconds) || totalSeconds < 0) return '—';
  let s = Math.floor(totalSeconds);
  const parts = [];
  for (const [size, label] of [[86_400, 'd'], [3_600, 'h'], [60, 'm'], [1, 's']]) {
    const n = Math.floor(s / size);
    s -= n * size;
    if (n > 0 || (parts.length > 0 && parts.length < 3)) parts.push(`${n}${label}`);
  }
  return parts.length ? parts.slice(0, 3).join(' ') : '0s';
}

/** Local wall-clock time, e.g. "14:03:27". */
export function formatTime(date) {
  return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** Compact score: 7.2 -> "7.2", 0.03214 -> "0.0321" (3 significant digits). */
const scoreFormat = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });
export function formatScore(n) {
  return Number.isFinite(n) ? scoreFormat.format(n) : '—';
}

/**
 * Parse an API timestamp: RFC 3339 string, or a Unix time number (seconds,
 * or milliseconds when it is too large to be seconds). Null when unusable.
 */
export function parseTimestamp(value) {
  let date = null;
  if (typeof value === 'number' && Number.isFinite(value)) {
    date = new Date(Math.abs(value) < 1e11 ? value * 1000 : value);
  } else if (typeof value === 'string' && value) {
    date = /^-?\d+(\.\d+)?$/.test(value) ? parseTimestamp(Number(value)) : new Date(value);
  }
  return date && !Number.isNaN(date.getTime()) ? date : null;
}

/**
 * A <time> element showing a local date and time (or only the date with
 * `{ dateOnly: true }`; the full time is then in the tooltip), or "—".
 */
export function timeElement(value, { dateOnly = false } = {}) {
  const date = parseTimestamp(value);
  if (!date) return h('span', { class: 'muted' }, typeof value === 'string' && value ? value : '—');
  const full = date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  return h('time', { datetime: date.toISOString(), title: full },
    dateOnly ? date.toLocaleDateString(undefined, { dateStyle: 'medium' }) : full);
}

// ---- snippets with highlights ----------------------------------------------

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * Split `text` into plain and highlighted pieces. `ranges` are [start, end)
 * BYTE offsets into the UTF-8 encoding of `text` (as the search API sends
 * them). Ranges are clamped, widened to whole characters (a boundary inside a
 * multi-byte character never yields U+FFFD), sorted and merged; malformed
 * ones are ignored.
 * @returns {{text: string, mark: boolean}[]}
 */
export function highlightSegments(text, ranges) {
  const bytes = utf8Encoder.encode(typeof text === 'string' ? text : '');
  const n = bytes.length;
  const isContinuation = (i) => i < n && (bytes[i] & 0xc0) === 0x80;

  const clean = [];
  for (const range of Array.isArray(ranges) ? ranges : []) {
    if (!Array.isArray(range) || range.length < 2) continue;
    let [start, end] = range;
    if (!Number.isInteger(start) || !Number.isInteger(end)) continue;
    start = Math.min(Math.max(start, 0), n);
    end = Math.min(Math.max(end, 0), n);
    while (start > 0 && isContinuation(start)) start -= 1;
    while (end < n && isContinuation(end)) end += 1;
    if (end > start) clean.push([start, end]);
  }
  clean.sort((a, b) => a[0] - b[0] || a[1] - b[1]);

  const merged = [];
  for (const [start, end] of clean) {
    const last = merged[merged.length - 1];
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }

  const decode = (a, b) => utf8Decoder.decode(bytes.subarray(a, b));
  const out = [];
  let pos = 0;
  for (const [start, end] of merged) {
    if (start > pos) out.push({ text: decode(pos, start), mark: false });
    out.push({ text: decode(start, end), mark: true });
    pos = end;
  }
  if (pos < n) out.push({ text: decode(pos, n), mark: false });
  return out;
}

/** Nodes for a `{text, highlights}` snippet: text with <mark> elements. */
export function snippetNodes(snippet) {
  const text = typeof snippet === 'string' ? snippet : snippet?.text;
  return highlightSegments(text, snippet?.highlights).map((seg) =>
    seg.mark ? h('mark', null, seg.text) : seg.text);
}
