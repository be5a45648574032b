// Audit log page: who did what, when, and how it ended; newest first, filtered, a page at a
// time. Needs a key with the `admin` scope (its own project's entries) or the master key (all).
//
//   GET /api/v1/audit?project=&key_id=&method=&status=&since=&until=&before=&limit=

import { getJSON } from '../api.js';
import { h, formatNumber, timeElement } from '../ui.js';

export const title = 'Audit log';

const PAGE_SIZE = 50;
const METHODS = ['', 'GET', 'POST', 'PUT', 'DELETE'];

let instance = 0;

export function mount(root) {
  const uid = `audit${++instance}`;
  let stopped = false;

  const announcer = h('p', { class: 'visually-hidden', role: 'status' });
  function announce(text) {
    announcer.textContent = '';
    setTimeout(() => { if (!stopped) announcer.textContent = text; }, 50);
  }

  const project = h('input', { id: `${uid}-project`, class: 'input input--medium mono', autocomplete: 'off', spellcheck: 'false', placeholder: 'any' });
  const keyId = h('input', { id: `${uid}-key`, class: 'input input--medium mono', autocomplete: 'off', spellcheck: 'false', placeholder: 'any' });
  const method = h('select', { id: `${uid}-method`, class: 'select select--narrow' },
    METHODS.map((m) => h('option', { value: m }, m || 'Any method')));
  const status = h('input', {
    id: `${uid}-status`, class: 'input input--narrow', type: 'number', min: 100, max: 599, inputmode: 'numeric', placeholder: 'any',
  });
  const since = h('input', { id: `${uid}-since`, class: 'input input--medium', type: 'date' });
  const apply = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Apply');
  const clear = h('button', { type: 'button', class: 'btn' }, 'Clear');
  const form = h('form', { class: 'card filter-form', role: 'search', 'aria-label': 'Filter the audit log' },
    h('div', { class: 'search-form__row' },
      labelled(project, 'Project'),
      labelled(keyId, 'Key id'),
      labelled(method, 'Method'),
      labelled(status, 'Status'),
      labelled(since, 'Since (UTC day)'),
    ),
    h('div', { class: 'form-actions' }, apply, clear),
  );

  const heading = h('h2', { id: `${uid}-heading`, tabindex: -1 }, 'Entries');
  const meta = h('p', { class: 'page__meta' });
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const body = h('tbody', null, placeholderRow('Loading…'));
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Older entries');
  const section = h('section', { class: 'card', 'aria-labelledby': heading.id },
    h('div', { class: 'card__header' }, heading, meta),
    alertRegion,
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Audit log entries', tabindex: 0 },
      h('table', { class: 'audit-table' },
        h('thead', null, h('tr', null,
          ['When', 'Who', 'Project', 'Request', 'Object', 'Status', 'Client'].map((c) => h('th', { scope: 'col' }, c)))),
        body)),
    h('div', { class: 'list-footer' }, more),
  );

  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Audit log'),
      h('p', { class: 'page__meta' }, 'Every authenticated request: who made it, on what, and how it ended.'),
    ),
    form,
    section,
    announcer,
  );

  let entries = [];
  let nextBefore = null;
  let controller = null;

  function query(before) {
    const p = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (project.value.trim()) p.set('project', project.value.trim());
    if (keyId.value.trim()) p.set('key_id', keyId.value.trim());
    if (method.value) p.set('method', method.value);
    if (status.value) p.set('status', status.value);
    if (since.value) p.set('since', `${since.value}T00:00:00Z`);
    if (before != null) p.set('before', String(before));
    return p;
  }

  async function load(reset) {
    controller?.abort();
    const mine = new AbortController();
    controller = mine;
    section.setAttribute('aria-busy', 'true');
    apply.disabled = true;
    more.disabled = true;
    if (reset) meta.textContent = 'Loading…';
    try {
      const data = await getJSON(`/audit?${query(reset ? null : nextBefore)}`, { signal: mine.signal });
      if (stopped || mine !== controller) return;
      const page = Array.isArray(data?.entries) ? data.entries : [];
      entries = reset ? page : entries.concat(page);
      nextBefore = data?.next_before ?? null;
      alertRegion.replaceChildren();
      body.replaceChildren(...(entries.length ? entries.map(entryRow) : [placeholderRow('No entries match.')]));
      meta.textContent = `${formatNumber(entries.length)} entr${entries.length === 1 ? 'y' : 'ies'} shown`
        + (nextBefore != null ? ' · older entries available' : '');
      announce(reset ? `${entries.length} entries.` : `${page.length} older entries loaded.`);
    } catch (err) {
      if (stopped || mine !== controller || err?.name === 'AbortError') return;
      alertRegion.replaceChildren(h('div', { class: 'banner banner--error' },
        h('p', { class: 'banner__title' }, err?.isNetworkError ? 'Server unreachable' : 'Could not load the audit log'),
        h('p', null, err?.message || 'Unknown error.')));
      if (reset) {
        entries = [];
        nextBefore = null;
        body.replaceChildren(placeholderRow('No data.'));
        meta.textContent = '';
      }
    } finally {
      if (mine === controller) {
        controller = null;
        section.removeAttribute('aria-busy');
        apply.disabled = false;
        more.disabled = false;
        more.hidden = nextBefore == null;
      }
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    load(true);
  });
  clear.addEventListener('click', () => {
    for (const input of [project, keyId, status, since]) input.value = '';
    method.value = '';
    load(true);
  });
  more.addEventListener('click', () => load(false));

  load(true);
  return () => {
    stopped = true;
    controller?.abort();
  };
}

function entryRow(e) {
  const ok = e.status < 400;
  return h('tr', null,
    h('td', null, timeElement(e.at)),
    h('th', { scope: 'row' }, e.principal, e.key_id ? h('span', { class: 'mono muted' }, ` ${e.key_id}`) : null),
    h('td', { class: 'mono' }, e.tenant ?? '—'),
    h('td', { class: 'cell-wrap' }, h('span', { class: 'mono' }, `${e.method} ${e.route}`)),
    h('td', { class: 'mono cell-wrap' }, e.object_id ?? '—'),
    h('td', null, h('span', { class: `badge ${ok ? 'badge--ok' : 'badge--warn'}` }, String(e.status))),
    h('td', { class: 'mono' }, e.client ?? '—'),
  );
}

function labelled(input, label) {
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
}

function placeholderRow(text) {
  return h('tr', null, h('td', { colspan: 7, class: 'placeholder' }, text));
}
