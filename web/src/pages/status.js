// Status page: polls GET /api/v1/status every 2 s.

import { getJSON } from '../api.js';
import { h, srOnly, formatBytes, formatDuration, formatNumber, formatTime } from '../ui.js';

export const title = 'Status';

const POLL_MS = 2000;
const REQUEST_TIMEOUT_MS = 5000;

export function mount(root) {
  // ---- static skeleton (built once, updated in place) ----
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const updated = h('p', { class: 'page__meta' }, 'Loading…');

  const facts = {
    version: h('dd', null, '—'),
    uptime: h('dd', null, '—'),
    dataDir: h('dd', { class: 'break' }, '—'),
    ready: h('dd', null, '—'),
  };

  const storesBody = h('tbody', null, placeholderRow(4, 'Loading…'));
  const indexersBody = h('tbody', null, placeholderRow(4, 'Loading…'));

  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Status'),
      updated,
    ),
    alertRegion,
    h('section', { 'aria-labelledby': 'server-heading', class: 'card' },
      h('h2', { id: 'server-heading' }, 'Server'),
      h('dl', { class: 'facts' },
        fact('Version', facts.version),
        fact('Uptime', facts.uptime),
        fact('Readiness', facts.ready),
        fact('Data directory', facts.dataDir, 'facts__item--wide'),
      ),
    ),
    tableSection('stores-heading', 'Stores',
      ['Name', 'Backend', 'Items', 'Size'], ['', '', 'num', 'num'], storesBody),
    tableSection('indexers-heading', 'Indexers',
      ['Name', 'Applied seq', 'Head seq', 'Lag'], ['', 'num', 'num', 'num'], indexersBody),
  );

  // ---- rendering ----
  let lastSuccess = null;
  let lastErrorText = '';

  function render(status) {
    facts.version.textContent = status.version ?? '—';
    facts.uptime.textContent = formatDuration(status.uptime_seconds);
    facts.uptime.title = Number.isFinite(status.uptime_seconds) ? `${status.uptime_seconds} seconds` : '';
    facts.dataDir.textContent = status.data_dir ?? '—';
    facts.dataDir.classList.toggle('mono', typeof status.data_dir === 'string');
    facts.ready.replaceChildren(
      status.ready
        ? h('span', { class: 'badge badge--ok' }, 'Ready')
        : h('span', { class: 'badge badge--warn' }, 'Not ready'),
    );

    const stores = Array.isArray(status.stores) ? status.stores : [];
    storesBody.replaceChildren(
      ...(stores.length
        ? stores.map((s) =>
            h('tr', null,
              h('th', { scope: 'row' }, s.name ?? '—'),
              h('td', null, s.backend ?? '—'),
              h('td', { class: 'num' }, formatNumber(s.items)),
              h('td', { class: 'num', title: Number.isFinite(s.bytes) ? `${formatNumber(s.bytes)} bytes` : null },
                formatBytes(s.bytes)),
            ))
        : [placeholderRow(4, 'No stores reported.')]),
    );

    const indexers = Array.isArray(status.indexers) ? status.indexers : [];
    indexersBody.replaceChildren(
      ...(indexers.length
        ? indexers.map((ix) => {
            const lag = Number.isFinite(ix.lag) ? ix.lag : ix.head_seq - ix.applied_seq;
            const behind = lag > 0;
            return h('tr', { class: behind ? 'row--lagging' : null },
              h('th', { scope: 'row' }, ix.name ?? '—'),
              h('td', { class: 'num' }, formatNumber(ix.applied_seq)),
              h('td', { class: 'num' }, formatNumber(ix.head_seq)),
              h('td', { class: 'num' },
                behind
                  ? h('span', { class: 'badge badge--warn' }, formatNumber(lag), srOnly(' (behind)'))
                  : h('span', { class: 'lag-zero' }, formatNumber(lag), srOnly(' (caught up)'))),
            );
          })
        : [placeholderRow(4, 'No indexers reported.')]),
    );
  }

  function setUpdated() {
    const stamp = formatTime(lastSuccess);
    updated.replaceChildren(
      'Updated ', h('time', { datetime: lastSuccess.toISOString() }, stamp),
      ` · refreshes every ${POLL_MS / 1000} s`,
    );
  }

  function showError(err) {
    const network = err?.isNetworkError ?? true;
    const heading = network ? 'Server unreachable' : 'Status request failed';
    const detail = err?.message || 'Unknown error.';
    const since = lastSuccess ? ` Showing the last data received, at ${formatTime(lastSuccess)}.` : '';
    const hint = `Retrying every ${POLL_MS / 1000} s.${since}`;
    const text = `${heading}: ${detail} ${hint}`;
    if (text === lastErrorText) return; // don't re-announce the same alert
    lastErrorText = text;
    alertRegion.replaceChildren(
      h('div', { class: 'banner banner--error' },
        h('p', { class: 'banner__title' }, heading),
        h('p', null, detail),
        h('p', { class: 'banner__hint' }, hint),
      ),
    );
    if (!lastSuccess) {
      updated.textContent = 'No data yet';
      for (const body of [storesBody, indexersBody]) body.replaceChildren(placeholderRow(4, 'No data.'));
    }
  }

  function clearError() {
    if (!lastErrorText) return;
    lastErrorText = '';
    alertRegion.replaceChildren();
  }

  // ---- polling loop: next poll starts POLL_MS after the previous finished ----
  let stopped = false;
  let timer = 0;
  let controller = null;

  async function poll() {
    clearTimeout(timer);
    if (stopped || controller) return;
    if (document.hidden) return schedule(); // don't poll in background tabs
    controller = new AbortController();
    try {
      const status = await getJSON('/status', { signal: controller.signal, timeoutMs: REQUEST_TIMEOUT_MS });
      if (stopped) return;
      if (!status || typeof status !== 'object') throw new Error('Unexpected response from the server.');
      lastSuccess = new Date();
      render(status);
      setUpdated();
      clearError();
    } catch (err) {
      if (stopped) return;
      showError(err);
    } finally {
      controller = null;
      schedule();
    }
  }

  function schedule() {
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function onVisibility() {
    if (!document.hidden) poll();
  }

  document.addEventListener('visibilitychange', onVisibility);
  poll();

  return () => {
    stopped = true;
    clearTimeout(timer);
    controller?.abort();
    document.removeEventListener('visibilitychange', onVisibility);
  };
}

function fact(label, dd, extraClass) {
  return h('div', { class: extraClass ? `facts__item ${extraClass}` : 'facts__item' }, h('dt', null, label), dd);
}

function tableSection(id, heading, columns, classes, body) {
  return h('section', { 'aria-labelledby': id, class: 'card' },
    h('h2', { id }, heading),
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': `${heading} table`, tabindex: 0 },
      h('table', null,
        h('thead', null,
          h('tr', null, columns.map((c, i) => h('th', { scope: 'col', class: classes[i] || null }, c))),
        ),
        body,
      ),
    ),
  );
}

function placeholderRow(span, text) {
  return h('tr', null, h('td', { colspan: span, class: 'placeholder' }, text));
}
