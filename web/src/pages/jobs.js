// Jobs page: the background jobs of this project, newest first, with live progress.
//
//   GET  /api/v1/jobs?state=…&limit=…     the list, refreshed every few seconds
//   GET  /api/v1/jobs/{id}/events         server-sent `job` events for each job that has not
//                                         finished: its state and progress as they change
//   POST /api/v1/jobs/{id}/cancel
//
// Each unfinished job shown is followed over its own event stream (read with fetch, so the
// Authorization header goes along); the list itself is reloaded to pick up new jobs.

import { getJSON, request, streamEvents } from '../api.js';
import { h, srOnly, formatNumber, timeElement } from '../ui.js';

export const title = 'Jobs';

const REFRESH_MS = 3000;
const LIMIT = 100;
const FINISHED = new Set(['succeeded', 'failed', 'dead', 'cancelled']);
const STATES = [
  { value: '', label: 'Any state' },
  { value: 'queued', label: 'Queued' },
  { value: 'running', label: 'Running' },
  { value: 'succeeded', label: 'Succeeded' },
  { value: 'failed', label: 'Failed' },
  { value: 'dead', label: 'Failed permanently' },
  { value: 'cancelled', label: 'Cancelled' },
];
const BADGES = {
  queued: 'badge--neutral',
  running: 'badge--info',
  succeeded: 'badge--ok',
  failed: 'badge--error',
  dead: 'badge--error',
  cancelled: 'badge--neutral',
};
const KINDS = {
  ingest: 'Ingest a document',
  backup: 'Backup',
  'backup-verify': 'Verify a backup',
  memory_add: 'Add memories',
};

let instance = 0;

export function mount(root) {
  const uid = `jobs${++instance}`;
  let stopped = false;

  const announcer = h('p', { class: 'visually-hidden', role: 'status' });
  function announce(text) {
    announcer.textContent = '';
    setTimeout(() => { if (!stopped) announcer.textContent = text; }, 50);
  }

  const stateSelect = h('select', { id: `${uid}-state`, class: 'select select--narrow' },
    STATES.map((s) => h('option', { value: s.value }, s.label)));
  const liveBox = h('input', { id: `${uid}-live`, type: 'checkbox', checked: true });
  const refreshButton = h('button', { type: 'button', class: 'btn btn--small' }, 'Refresh');
  const meta = h('p', { class: 'page__meta' }, 'Loading…');
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const body = h('tbody', null, placeholderRow('Loading…'));
  const heading = h('h2', { id: `${uid}-heading` }, 'Jobs');

  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Jobs'),
      h('p', { class: 'page__meta' }, 'Ingestion, backups and other work Nexus does in the background.'),
    ),
    alertRegion,
    h('section', { class: 'card', 'aria-labelledby': heading.id },
      h('div', { class: 'card__header' }, heading, meta),
      h('div', { class: 'toolbar' },
        h('div', { class: 'field field--inline' }, h('label', { for: stateSelect.id }, 'State'), stateSelect),
        h('label', { class: 'check', for: liveBox.id }, liveBox, ' Live updates'),
        refreshButton,
      ),
      h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Job list', tabindex: 0 },
        h('table', { class: 'jobs-table' },
          h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Job'),
            h('th', { scope: 'col' }, 'State'),
            h('th', { scope: 'col' }, 'Progress'),
            h('th', { scope: 'col', class: 'num' }, 'Attempts'),
            h('th', { scope: 'col' }, 'Created'),
            h('th', { scope: 'col' }, 'Details'),
            h('th', { scope: 'col' }, srOnly('Actions')),
          )),
          body,
        ),
      ),
    ),
    announcer,
  );

  // job id -> { job, row, cells, stream: AbortController | null }
  const rows = new Map();
  let timer = 0;
  let listController = null;

  async function load() {
    clearTimeout(timer);
    listController?.abort();
    const controller = new AbortController();
    listController = controller;
    const params = new URLSearchParams({ limit: String(LIMIT) });
    if (stateSelect.value) params.set('state', stateSelect.value);
    try {
      const data = await getJSON(`/jobs?${params}`, { signal: controller.signal });
      if (stopped || controller !== listController) return;
      alertRegion.replaceChildren();
      render(Array.isArray(data?.jobs) ? data.jobs : []);
    } catch (err) {
      if (stopped || controller !== listController || err?.name === 'AbortError') return;
      alertRegion.replaceChildren(h('div', { class: 'banner banner--error' },
        h('p', { class: 'banner__title' }, err?.isNetworkError ? 'Server unreachable' : 'Could not load jobs'),
        h('p', null, err?.message || 'Unknown error.')));
      if (!rows.size) body.replaceChildren(placeholderRow('No data.'));
    } finally {
      if (controller === listController) {
        listController = null;
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!stopped && liveBox.checked) timer = setTimeout(load, REFRESH_MS);
  }

  function render(jobs) {
    const seen = new Set();
    for (const job of jobs) {
      seen.add(job.id);
      let entry = rows.get(job.id);
      if (!entry) {
        entry = makeRow(job);
        rows.set(job.id, entry);
      } else if (!entry.stream) {
        // A followed job is kept current by its stream; the list may be a moment behind.
        entry.job = job;
      }
      renderRow(entry);
      follow(entry);
    }
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.stream?.abort();
        rows.delete(id);
      }
    }
    const order = jobs.map((j) => rows.get(j.id).row);
    if (order.length) body.replaceChildren(...order);
    else body.replaceChildren(placeholderRow(stateSelect.value ? 'No jobs in this state.' : 'No jobs yet.'));
    renderMeta();
  }

  function renderMeta() {
    const shown = [...rows.values()];
    const active = shown.filter((e) => !FINISHED.has(e.job.state)).length;
    meta.textContent = `${formatNumber(shown.length)} job${shown.length === 1 ? '' : 's'}`
      + (active ? ` · ${formatNumber(active)} unfinished` : '')
      + (shown.length >= LIMIT ? ` · the newest ${LIMIT}` : '');
  }

  function makeRow(job) {
    const cells = {
      name: h('th', { scope: 'row', class: 'cell-wrap' }),
      state: h('td'),
      progress: h('td', { class: 'job-progress' }),
      attempts: h('td', { class: 'num' }),
      created: h('td'),
      details: h('td', { class: 'job-details' }),
      actions: h('td', { class: 'actions' }),
    };
    const row = h('tr', { 'data-job': job.id }, Object.values(cells));
    return { job, row, cells, stream: null, lastState: job.state };
  }

  function renderRow(entry) {
    const { job, cells } = entry;
    const kind = KINDS[job.kind] ?? job.kind ?? 'job';
    cells.name.replaceChildren(
      h('span', { class: 'job-kind' }, kind),
      h('span', { class: 'job-id mono' }, job.id),
      describePayload(job.payload),
    );
    cells.state.replaceChildren(h('span', { class: `badge ${BADGES[job.state] ?? 'badge--warn'}`, 'data-state': job.state },
      STATES.find((s) => s.value === job.state)?.label ?? String(job.state)));
    const done = Number(job.progress?.done);
    const total = Number(job.progress?.total);
    const label = `Progress of job ${job.id}`;
    if (Number.isFinite(done) && Number.isFinite(total) && total > 0) {
      cells.progress.replaceChildren(
        h('progress', { max: total, value: Math.min(done, total), 'aria-label': label }),
        h('span', { class: 'muted job-progress__text' }, ` ${formatNumber(done)} / ${formatNumber(total)}`));
    } else if (job.state === 'running') {
      cells.progress.replaceChildren(h('progress', { 'aria-label': label }));
    } else if (job.state === 'succeeded') {
      cells.progress.replaceChildren(h('progress', { max: 1, value: 1, 'aria-label': label }));
    } else {
      cells.progress.replaceChildren(h('span', { class: 'muted' }, '—'));
    }
    cells.attempts.textContent = Number.isFinite(job.attempts)
      ? `${formatNumber(job.attempts)}${Number.isFinite(job.max_attempts) ? ` of ${formatNumber(job.max_attempts)}` : ''}`
      : '—';
    if (job.created_at) cells.created.replaceChildren(timeElement(job.created_at));
    cells.details.replaceChildren(job.error
      ? h('span', { class: 'error-text' }, job.error_code ? `${job.error} (${job.error_code})` : job.error)
      : h('span', { class: 'muted' }, entry.stream ? 'following live' : '—'));
    if (!FINISHED.has(job.state)) {
      const cancel = h('button', {
        type: 'button', class: 'btn btn--small btn--danger', 'aria-label': `Cancel job ${job.id}`,
        onclick: () => cancelJob(entry, cancel),
      }, 'Cancel');
      cells.actions.replaceChildren(cancel);
    } else {
      cells.actions.replaceChildren();
    }
  }

  // Follow an unfinished job over its event stream until it finishes.
  function follow(entry) {
    if (entry.stream || FINISHED.has(entry.job.state) || stopped) return;
    const controller = new AbortController();
    entry.stream = controller;
    renderRow(entry);
    streamEvents(`/jobs/${encodeURIComponent(entry.job.id)}/events`, {
      method: 'GET',
      signal: controller.signal,
      idleTimeoutMs: 60_000,
      onEvent(ev) {
        if (ev.event !== 'job' || stopped) return;
        let data;
        try { data = JSON.parse(ev.data); } catch { return; }
        // The first event is the whole job; later ones carry what changed.
        const { job_id: _ignored, ...change } = data;
        entry.job = { ...entry.job, ...change, id: entry.job.id };
        if (entry.job.state !== entry.lastState) {
          entry.lastState = entry.job.state;
          if (FINISHED.has(entry.job.state)) {
            announce(`Job ${entry.job.id}: ${STATES.find((s) => s.value === entry.job.state)?.label ?? entry.job.state}.`);
          }
        }
        renderRow(entry);
        renderMeta();
      },
    }).catch(() => { /* the list refresh picks the job up again */ })
      .finally(() => {
        if (entry.stream === controller) entry.stream = null;
        if (!stopped && rows.get(entry.job.id) === entry) renderRow(entry);
      });
  }

  async function cancelJob(entry, button) {
    button.disabled = true;
    try {
      const job = await request(`/jobs/${encodeURIComponent(entry.job.id)}/cancel`, { method: 'POST' });
      if (stopped) return;
      if (job && typeof job === 'object') entry.job = job;
      renderRow(entry);
      announce(`Job ${entry.job.id} cancelled.`);
    } catch (err) {
      if (stopped) return;
      button.disabled = false;
      alertRegion.replaceChildren(h('div', { class: 'banner banner--error' },
        h('p', { class: 'banner__title' }, 'Could not cancel the job'),
        h('p', null, err?.message || 'Unknown error.')));
    }
  }

  stateSelect.addEventListener('change', () => load());
  refreshButton.addEventListener('click', () => load());
  liveBox.addEventListener('change', () => (liveBox.checked ? load() : clearTimeout(timer)));

  load();

  return () => {
    stopped = true;
    clearTimeout(timer);
    listController?.abort();
    for (const entry of rows.values()) entry.stream?.abort();
  };
}

// A few words from the payload that say what the job works on.
function describePayload(payload) {
  if (!payload || typeof payload !== 'object') return null;
  const meta = payload.meta && typeof payload.meta === 'object' ? payload.meta : {};
  const text = meta.title ?? meta.source ?? payload.name ?? null;
  return typeof text === 'string' && text ? h('span', { class: 'job-subject break' }, text) : null;
}

function placeholderRow(text) {
  return h('tr', null, h('td', { colspan: 7, class: 'placeholder' }, text));
}
