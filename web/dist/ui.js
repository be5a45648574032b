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
