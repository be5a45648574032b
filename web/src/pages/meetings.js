// Meetings page: the list of meetings ("#/meetings") and one meeting ("#/meetings/{id}").
//
//   GET    /api/v1/meetings?status=…&after=…&limit=…   the list (oldest first, a page at a time)
//   POST   /api/v1/meetings                             create one (title, status, participants)
//   DELETE /api/v1/meetings/{id}
//   POST   /api/v1/meetings/import                      a recorded transcript (multipart), a job
//   GET    /api/v1/jobs/{id}/events, /api/v1/jobs/{id}  follow that job, then read its meetings
//   GET    /api/v1/meetings/{id}, …/transcript?format=json, …/insights, …/summary
//   POST   /api/v1/meetings/{id}/end
//   POST   /api/v1/search  {"sources": ["meetings"], "filters": {"meeting_id", "speaker"}}
//   GET    /api/v1/events?topics=…                      the real-time hub as server-sent events
//
// Both views follow the events hub over server-sent events read with fetch (so the
// Authorization header goes along): the list the `meetings` topic, a meeting its own
// `meeting:{id}` topic — final segments in sequence order, partials shown in place until their
// final arrives, insights, the summary and the meeting itself. The position of the hub is read
// before the meeting is loaded and the stream catches up from there, so nothing said between
// the load and the subscription is missed; `resync` reloads through the REST API.

import { API_BASE, getApiKey, getJSON, request, streamEvents, upload } from '../api.js';
import { h, srOnly, formatNumber, snippetNodes, timeElement } from '../ui.js';

export const title = 'Meetings';

const STATUSES = [
  { value: '', label: 'Any status' },
  { value: 'scheduled', label: 'Scheduled' },
  { value: 'live', label: 'Live' },
  { value: 'ended', label: 'Ended' },
];
const BADGES = { scheduled: 'badge--neutral', live: 'badge--info', ended: 'badge--ok' };
const PAGE_LIMIT = 500;
const MAX_PAGES = 4;
const RECONNECT_MS = 3000;
const JOB_FINISHED = new Set(['succeeded', 'failed', 'dead', 'cancelled']);
const INSIGHT_GROUPS = [
  { kind: 'action_item', label: 'Action items', empty: 'No action items yet.' },
  { kind: 'decision', label: 'Decisions', empty: 'No decisions yet.' },
  { kind: 'question', label: 'Questions', empty: 'No open questions yet.' },
  { kind: 'topic', label: 'Topics', empty: 'No topics yet.' },
];
const DOWNLOADS = [
  { format: 'vtt', label: 'WebVTT', ext: 'vtt' },
  { format: 'srt', label: 'SRT', ext: 'srt' },
  { format: 'text', label: 'Text', ext: 'txt' },
  { format: 'json', label: 'JSON', ext: 'json' },
];

let instance = 0;

export function mount(root, { params = [] } = {}) {
  const uid = `meetings${++instance}`;
  return params[0] ? mountMeeting(root, uid, params[0]) : mountList(root, uid);
}

// ---- shared ------------------------------------------------------------------

function makeAnnouncer(isStopped) {
  const el = h('p', { class: 'visually-hidden', role: 'status' });
  return {
    el,
    say(text) {
      el.textContent = '';
      // A fresh text node after clearing makes repeated messages be read again.
      setTimeout(() => { if (!isStopped()) el.textContent = text; }, 50);
    },
  };
}

function errorBanner(title, err) {
  return h('div', { class: 'banner banner--error' },
    h('p', { class: 'banner__title' }, err?.isNetworkError ? 'Server unreachable' : title),
    h('p', null, err?.message || 'Unknown error.'));
}

function statusBadge(status) {
  const label = STATUSES.find((s) => s.value === status)?.label ?? String(status ?? '—');
  return h('span', { class: `badge ${BADGES[status] ?? 'badge--warn'}`, 'data-status': status }, label);
}

/**
 * Follows topics of the events hub until `signal` aborts: calls `onEvent(event)` for each hub
 * event (parsed), `onResync()` when the client must reload, and reconnects after a lost
 * connection from the last position seen. `after` is where to start (null: from now on).
 */
function followHub(topics, { after = null, signal, onEvent, onResync }) {
  let pos = after;
  (async () => {
    while (!signal.aborted) {
      const query = new URLSearchParams({ topics });
      if (pos != null) query.set('after', String(pos));
      try {
        await streamEvents(`/events?${query}`, {
          method: 'GET',
          signal,
          idleTimeoutMs: 60_000,
          onEvent(ev) {
            let data;
            try { data = JSON.parse(ev.data); } catch { return; }
            if (ev.event === 'resync') {
              if (Number.isFinite(data?.pos)) pos = data.pos;
              onResync();
              return;
            }
            if (ev.event === 'error' || !data || typeof data !== 'object') return;
            // Partials carry the hub's position when sent, not a place in the log.
            if (Number.isFinite(data.pos) && ev.event !== 'partial') pos = Math.max(pos ?? 0, data.pos);
            onEvent(data);
          },
        });
      } catch (err) {
        if (signal.aborted || err?.name === 'AbortError') return;
      }
      if (signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  })();
}

/** The hub's position now, for a stream that must not miss what follows a load. */
async function hubPosition(topics, signal) {
  try {
    const page = await getJSON(`/events?${new URLSearchParams({ topics })}`, { signal });
    return Number.isFinite(page?.pos) ? page.pos : null;
  } catch {
    return null; // the stream then starts from now on
  }
}

// ---- the list ----------------------------------------------------------------

function mountList(root, uid) {
  let stopped = false;
  const announcer = makeAnnouncer(() => stopped);
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });

  // ---- create ----
  const titleInput = h('input', {
    id: `${uid}-title`, class: 'input', type: 'text', required: true, maxlength: 500, autocomplete: 'off',
  });
  const peopleInput = h('input', {
    id: `${uid}-people`, class: 'input', type: 'text', autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': `${uid}-people-hint`,
  });
  const startSelect = h('select', { id: `${uid}-start`, class: 'select' },
    h('option', { value: 'live' }, 'Live now'),
    h('option', { value: 'scheduled' }, 'Scheduled'));
  const createButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Create meeting');
  const createAlert = h('div', { class: 'alert-region', role: 'alert' });
  const createHeading = h('h2', { id: `${uid}-create` }, 'New meeting');
  const createForm = h('form', { class: 'form', onsubmit: onCreate, 'aria-labelledby': createHeading.id },
    createAlert,
    h('div', { class: 'form__grid' },
      h('div', { class: 'field' }, h('label', { for: titleInput.id }, 'Title'), titleInput),
      h('div', { class: 'field' },
        h('label', { for: peopleInput.id }, 'Participants ', h('span', { class: 'field__optional' }, '(optional)')),
        peopleInput,
        h('span', { class: 'field__hint', id: `${uid}-people-hint` }, 'Names, separated with commas.')),
      h('div', { class: 'field' }, h('label', { for: startSelect.id }, 'Starts'), startSelect),
    ),
    h('div', { class: 'form__actions' }, createButton),
  );

  // ---- import ----
  const fileInput = h('input', {
    id: `${uid}-file`, class: 'input', type: 'file', required: true,
    accept: '.vtt,.srt,.txt,.json,.jsonl,text/vtt,text/plain,application/json',
    'aria-describedby': `${uid}-file-hint`,
  });
  const importTitle = h('input', { id: `${uid}-import-title`, class: 'input', type: 'text', maxlength: 500, autocomplete: 'off' });
  const importButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Import');
  const importAlert = h('div', { class: 'alert-region', role: 'alert' });
  const importProgress = h('div', { class: 'upload-progress', role: 'status' });
  const importHeading = h('h2', { id: `${uid}-import` }, 'Import a recorded transcript');
  const importForm = h('form', { class: 'form', onsubmit: onImport, 'aria-labelledby': importHeading.id },
    importAlert,
    h('div', { class: 'form__grid' },
      h('div', { class: 'field' },
        h('label', { for: fileInput.id }, 'Transcript file'),
        fileInput,
        h('span', { class: 'field__hint', id: `${uid}-file-hint` },
          'WebVTT, SRT, Otter text, “Speaker: text” lines or JSON.')),
      h('div', { class: 'field' },
        h('label', { for: importTitle.id }, 'Title ', h('span', { class: 'field__optional' }, '(optional)')),
        importTitle),
    ),
    h('div', { class: 'form__actions' }, importButton),
    importProgress,
  );

  // ---- list ----
  const statusSelect = h('select', { id: `${uid}-status`, class: 'select select--narrow' },
    STATUSES.map((s) => h('option', { value: s.value }, s.label)));
  const refreshButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => load() }, 'Refresh');
  const meta = h('p', { class: 'page__meta' }, 'Loading…');
  const body = h('tbody', null, placeholderRow('Loading…'));
  const listHeading = h('h2', { id: `${uid}-list` }, 'All meetings');

  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Meetings'),
      h('p', { class: 'page__meta' }, 'Live transcripts with their decisions, action items and summaries, and recorded ones imported from a file.'),
    ),
    alertRegion,
    h('section', { class: 'card', 'aria-labelledby': listHeading.id },
      h('div', { class: 'card__header' }, listHeading, meta),
      h('div', { class: 'toolbar' },
        h('div', { class: 'field field--inline' }, h('label', { for: statusSelect.id }, 'Status'), statusSelect),
        refreshButton,
      ),
      h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Meeting list', tabindex: 0 },
        h('table', { class: 'meetings-table' },
          h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Meeting'),
            h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, 'Started'),
            h('th', { scope: 'col', class: 'num' }, 'Participants'),
            h('th', { scope: 'col', class: 'num' }, 'Segments'),
            h('th', { scope: 'col' }, srOnly('Actions')),
          )),
          body,
        ),
      ),
    ),
    h('section', { class: 'card', 'aria-labelledby': createHeading.id },
      h('div', { class: 'card__header' }, createHeading), createForm),
    h('section', { class: 'card', 'aria-labelledby': importHeading.id },
      h('div', { class: 'card__header' }, importHeading), importForm),
    announcer.el,
  );

  const meetings = new Map(); // id -> meeting
  let listController = null;
  const hub = new AbortController();
  const importController = new AbortController();
  let loaded = false;

  async function load() {
    listController?.abort();
    const controller = new AbortController();
    listController = controller;
    meta.textContent = 'Loading…';
    try {
      const all = [];
      let after = null;
      for (let page = 0; page < MAX_PAGES; page += 1) {
        const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
        if (statusSelect.value) query.set('status', statusSelect.value);
        if (after != null) query.set('after', String(after));
        const data = await getJSON(`/meetings?${query}`, { signal: controller.signal });
        all.push(...(Array.isArray(data?.meetings) ? data.meetings : []));
        after = data?.next_after ?? null;
        if (after == null) break;
      }
      if (stopped || controller !== listController) return;
      alertRegion.replaceChildren();
      const gone = new Set(meetings.keys());
      for (const m of all) {
        gone.delete(m.id);
        meetings.set(m.id, m);
      }
      // Meetings of another status stay known (the filter hides them); vanished ones go.
      for (const key of gone) if (!statusSelect.value) meetings.delete(key);
      loaded = true;
      render();
    } catch (err) {
      if (stopped || controller !== listController || err?.name === 'AbortError') return;
      alertRegion.replaceChildren(errorBanner('Could not load meetings', err));
      meta.textContent = '';
      if (!meetings.size) body.replaceChildren(placeholderRow('No data.'));
    } finally {
      if (controller === listController) listController = null;
    }
  }

  function render() {
    // Newest first: by start (else creation) time.
    const when = (m) => Date.parse(m.started_at ?? m.created_at ?? '') || 0;
    const shown = [...meetings.values()]
      .filter((m) => !statusSelect.value || m.status === statusSelect.value)
      .sort((a, b) => when(b) - when(a));
    if (shown.length) body.replaceChildren(...shown.map(row));
    else body.replaceChildren(placeholderRow(statusSelect.value ? 'No meetings with this status.' : 'No meetings yet.'));
    const live = shown.filter((m) => m.status === 'live').length;
    meta.textContent = `${formatNumber(shown.length)} meeting${shown.length === 1 ? '' : 's'}`
      + (live ? ` · ${formatNumber(live)} live` : '');
  }

  function row(m) {
    const name = m.title || m.id;
    const remove = h('button', {
      type: 'button', class: 'btn btn--small btn--danger', 'aria-label': `Delete meeting ${name}`,
      onclick: () => deleteMeeting(m, remove),
    }, 'Delete');
    const people = Array.isArray(m.participants) ? m.participants.length : 0;
    return h('tr', { 'data-meeting': m.id },
      h('th', { scope: 'row', class: 'cell-wrap meeting-name' },
        h('a', { href: `#/meetings/${encodeURIComponent(m.id)}` }, name),
        m.source && m.source !== 'live' && m.source !== 'api'
          ? h('span', { class: 'meeting-name__source' }, m.source.replace(/^import:/, 'imported from ')) : null),
      h('td', null, statusBadge(m.status)),
      h('td', null, m.started_at ? timeElement(m.started_at) : h('span', { class: 'muted' }, 'not yet')),
      h('td', { class: 'num' }, formatNumber(people)),
      h('td', { class: 'num' }, formatNumber(Number(m.segments) || 0)),
      h('td', { class: 'actions' }, remove),
    );
  }

  async function deleteMeeting(m, button) {
    const name = m.title || m.id;
    if (!window.confirm(`Delete the meeting “${name}”?\n\nIts transcript, insights and summary are removed. Memories made from it stay. This cannot be undone.`)) return;
    button.disabled = true;
    try {
      await request(`/meetings/${encodeURIComponent(m.id)}`, { method: 'DELETE' });
      if (stopped) return;
      meetings.delete(m.id);
      render();
      announcer.say(`Meeting ${name} deleted.`);
    } catch (err) {
      if (stopped) return;
      button.disabled = false;
      alertRegion.replaceChildren(errorBanner('Could not delete the meeting', err));
    }
  }

  async function onCreate(event) {
    event.preventDefault();
    const name = titleInput.value.trim();
    if (!name) {
      titleInput.value = '';
      createForm.reportValidity();
      return;
    }
    const participants = peopleInput.value.split(',').map((p) => p.trim()).filter(Boolean).map((p) => ({ name: p }));
    createButton.disabled = true;
    createAlert.replaceChildren();
    try {
      const meeting = await request('/meetings', {
        method: 'POST', body: { title: name, status: startSelect.value, participants },
      });
      if (stopped) return;
      location.hash = `#/meetings/${encodeURIComponent(meeting.id)}`;
    } catch (err) {
      if (stopped) return;
      createAlert.replaceChildren(errorBanner('Could not create the meeting', err));
    } finally {
      createButton.disabled = false;
    }
  }

  async function onImport(event) {
    event.preventDefault();
    const file = fileInput.files?.[0];
    if (!file) {
      importForm.reportValidity();
      return;
    }
    const form = new FormData();
    form.append('file', file, file.name);
    if (importTitle.value.trim()) form.append('title', importTitle.value.trim());
    importButton.disabled = true;
    importAlert.replaceChildren();
    const bar = h('progress', { max: 1, value: 0, 'aria-label': `Upload of ${file.name}` });
    const line = h('p', { class: 'page__meta' }, `Uploading ${file.name}…`);
    importProgress.replaceChildren(line, bar);
    try {
      const answer = await upload('/meetings/import', form, {
        signal: importController.signal,
        onProgress: (p) => { if (p.lengthComputable) bar.value = p.loaded / Math.max(p.total, 1); },
      });
      if (stopped) return;
      bar.removeAttribute('value');
      line.replaceChildren(`Read as ${answer.format}; importing in job `, h('span', { class: 'mono' }, answer.job_id), '…');
      const job = await followJob(answer.job_id, importController.signal);
      if (stopped) return;
      if (job?.state !== 'succeeded') {
        importProgress.replaceChildren();
        importAlert.replaceChildren(errorBanner('The import failed',
          { message: job?.error || `The job ended as ${job?.state ?? 'unknown'}.` }));
        return;
      }
      const made = (Array.isArray(job.result?.meetings) ? job.result.meetings : [])
        .map((item) => item?.meeting).filter((m) => m?.id);
      for (const m of made) meetings.set(m.id, m);
      render();
      bar.value = 1;
      importProgress.replaceChildren(h('p', null,
        made.length === 1 ? 'Imported: ' : `Imported ${made.length} meetings: `,
        made.map((m, i) => [i ? ', ' : null, h('a', { href: `#/meetings/${encodeURIComponent(m.id)}` }, m.title || m.id)])));
      announcer.say(`Imported ${made.length} meeting${made.length === 1 ? '' : 's'}.`);
      fileInput.value = '';
      importTitle.value = '';
    } catch (err) {
      if (stopped || err?.name === 'AbortError') return;
      importProgress.replaceChildren();
      importAlert.replaceChildren(errorBanner('The import failed', err));
    } finally {
      importButton.disabled = false;
    }
  }

  statusSelect.addEventListener('change', () => load());

  // Follow from the position before the first load, so no change after it is missed.
  (async () => {
    const pos = await hubPosition('meetings', hub.signal);
    if (stopped) return;
    followHub('meetings', {
      after: pos,
      signal: hub.signal,
      onResync: () => load(),
      onEvent(ev) {
        if (ev.type !== 'meeting') return;
        if (ev.op === 'delete') meetings.delete(ev.id);
        else if (ev.data?.id) meetings.set(ev.data.id, ev.data);
        if (loaded) render();
      },
    });
    load();
  })();

  return () => {
    stopped = true;
    listController?.abort();
    hub.abort();
    importController.abort();
  };
}

/** Follows a job until it finishes and returns it whole (with its result). */
async function followJob(id, signal) {
  const path = `/jobs/${encodeURIComponent(id)}`;
  for (let attempt = 0; attempt < 20; attempt += 1) {
    let state = null;
    try {
      await streamEvents(`${path}/events`, {
        method: 'GET', signal, idleTimeoutMs: 60_000,
        onEvent(ev) {
          if (ev.event !== 'job') return;
          try { state = JSON.parse(ev.data)?.state ?? state; } catch { /* ignored */ }
        },
      });
    } catch (err) {
      if (signal.aborted) throw err;
    }
    if (JOB_FINISHED.has(state)) return getJSON(path, { signal });
    const job = await getJSON(path, { signal });
    if (JOB_FINISHED.has(job?.state)) return job;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return getJSON(path, { signal });
}

// ---- one meeting ---------------------------------------------------------------

function mountMeeting(root, uid, id) {
  let stopped = false;
  const announcer = makeAnnouncer(() => stopped);
  const enc = encodeURIComponent(id);
  const topic = `meeting:${id}`;

  const heading = h('h1', null, 'Meeting');
  const headerMeta = h('p', { class: 'page__meta meeting-meta' }, 'Loading…');
  const endButton = h('button', { type: 'button', class: 'btn btn--danger', hidden: true, onclick: onEnd }, 'End meeting');
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });

  // ---- transcript ----
  const transcriptHeading = h('h2', { id: `${uid}-transcript` }, 'Transcript');
  const transcriptMeta = h('p', { class: 'page__meta' });
  const finals = h('ol', { class: 'transcript' });
  const log = h('div', { class: 'transcript-log', role: 'log', 'aria-labelledby': transcriptHeading.id, tabindex: 0 }, finals);
  const partials = h('ol', { class: 'transcript transcript--partials', 'aria-label': 'Being said now' });
  const transcriptEmpty = h('p', { class: 'muted transcript-empty' }, 'Nothing has been said yet.');

  // ---- transcript search ----
  const queryInput = h('input', {
    id: `${uid}-q`, class: 'input', type: 'search', required: true, autocomplete: 'off', spellcheck: 'false',
  });
  const speakerSelect = h('select', { id: `${uid}-speaker`, class: 'select select--narrow' },
    h('option', { value: '' }, 'Anyone'));
  const searchButton = h('button', { type: 'submit', class: 'btn' }, 'Find');
  const searchMeta = h('p', { class: 'page__meta', role: 'status' });
  const searchAlert = h('div', { class: 'alert-region', role: 'alert' });
  const searchResults = h('ol', { class: 'results transcript-hits' });
  const searchForm = h('form', {
    class: 'transcript-search', role: 'search', 'aria-label': 'Search this transcript', onsubmit: onSearch,
  },
  h('div', { class: 'search-form__row' },
    h('div', { class: 'field field--grow' }, h('label', { for: queryInput.id }, 'Find in the transcript'), queryInput),
    h('div', { class: 'field' }, h('label', { for: speakerSelect.id }, 'Speaker'), speakerSelect),
    h('div', { class: 'search-form__actions' }, searchButton),
  ));

  const downloads = h('ul', { class: 'download-list' },
    DOWNLOADS.map((d) => h('li', null, h('a', {
      href: `${API_BASE}/meetings/${enc}/transcript?format=${d.format}`,
      download: `${id}.${d.ext}`,
      onclick: (e) => download(e, d),
    }, d.label, srOnly(' transcript')))));

  const transcriptSection = h('section', { class: 'card transcript-card', 'aria-labelledby': transcriptHeading.id },
    h('div', { class: 'card__header' }, transcriptHeading, transcriptMeta),
    searchForm,
    searchAlert,
    searchMeta,
    searchResults,
    transcriptEmpty,
    log,
    partials,
    h('div', { class: 'downloads' }, h('span', { class: 'muted' }, 'Download: '), downloads),
  );

  // ---- summary, insights, participants ----
  const summaryHeading = h('h2', { id: `${uid}-summary` }, 'Summary');
  const summaryBadge = h('span');
  const summaryBody = h('div', { class: 'summary', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
  const summarySection = h('section', { class: 'card', 'aria-labelledby': summaryHeading.id },
    h('div', { class: 'card__header' }, summaryHeading, summaryBadge), summaryBody);

  const insightsHeading = h('h2', { id: `${uid}-insights` }, 'Insights');
  const insightLists = new Map(INSIGHT_GROUPS.map((g) => [g.kind, h('ul', { class: 'insight-list', 'data-kind': g.kind })]));
  const insightsSection = h('section', { class: 'card', 'aria-labelledby': insightsHeading.id },
    h('div', { class: 'card__header' }, insightsHeading),
    INSIGHT_GROUPS.map((g) => h('div', { class: 'insight-group' },
      h('h3', { class: 'subheading', id: `${uid}-ins-${g.kind}` }, g.label),
      insightLists.get(g.kind))),
  );
  for (const g of INSIGHT_GROUPS) insightLists.get(g.kind).setAttribute('aria-labelledby', `${uid}-ins-${g.kind}`);

  const peopleHeading = h('h2', { id: `${uid}-people` }, 'Participants');
  const peopleList = h('ul', { class: 'participant-list' });
  const peopleSection = h('section', { class: 'card', 'aria-labelledby': peopleHeading.id },
    h('div', { class: 'card__header' }, peopleHeading), peopleList);

  root.append(
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/meetings' }, '← All meetings')),
    h('header', { class: 'page__header' }, heading, h('div', { class: 'meeting-actions' }, endButton)),
    headerMeta,
    alertRegion,
    h('div', { class: 'meeting-layout' },
      h('div', { class: 'meeting-layout__main' }, transcriptSection),
      h('div', { class: 'meeting-layout__side' }, summarySection, insightsSection, peopleSection),
    ),
    announcer.el,
  );

  // ---- state ----
  let meeting = null;
  const segments = new Map(); // seq -> { segment, item }
  const partialItems = new Map(); // segment_id -> item
  const insights = new Map(); // id -> insight
  let summary = null;
  let hub = null;
  let loadController = null;
  let searchController = null;
  let matched = [];

  const segmentDomId = (seq) => `${uid}-seg-${seq}`;

  async function load(resync) {
    loadController?.abort();
    const controller = new AbortController();
    loadController = controller;
    const signal = controller.signal;
    const pos = hub ? null : await hubPosition(topic, signal);
    try {
      const [m, transcript, ins, sum] = await Promise.all([
        getJSON(`/meetings/${enc}`, { signal }),
        getJSON(`/meetings/${enc}/transcript?format=json`, { signal, timeoutMs: 30_000 }),
        getJSON(`/meetings/${enc}/insights`, { signal }),
        getJSON(`/meetings/${enc}/summary`, { signal }),
      ]);
      if (stopped || controller !== loadController) return;
      alertRegion.replaceChildren();
      setMeeting(m);
      for (const entry of segments.values()) entry.item.remove();
      segments.clear();
      for (const s of Array.isArray(transcript?.segments) ? transcript.segments : []) addSegment(s);
      insights.clear();
      for (const i of Array.isArray(ins?.insights) ? ins.insights : []) insights.set(i.id, i);
      renderInsights();
      setSummary(sum);
      renderTranscriptMeta();
      if (resync) announcer.say('The meeting was reloaded.');
      if (!hub) {
        hub = new AbortController();
        followHub(topic, { after: pos, signal: hub.signal, onEvent, onResync: () => load(true) });
      }
    } catch (err) {
      if (stopped || controller !== loadController || err?.name === 'AbortError') return;
      if (err?.status === 404) {
        heading.textContent = 'Meeting not found';
        headerMeta.textContent = '';
        alertRegion.replaceChildren(h('div', { class: 'banner banner--error' },
          h('p', { class: 'banner__title' }, 'No such meeting'),
          h('p', null, `There is no meeting “${id}”. It may have been deleted.`)));
        return;
      }
      alertRegion.replaceChildren(errorBanner('Could not load the meeting', err));
      headerMeta.textContent = '';
    } finally {
      if (controller === loadController) loadController = null;
    }
  }

  function onEvent(ev) {
    switch (ev.type) {
      case 'meeting':
        if (ev.op === 'delete') {
          setMeeting({ ...meeting, deleted: true });
          alertRegion.replaceChildren(h('div', { class: 'banner banner--error' },
            h('p', { class: 'banner__title' }, 'Meeting deleted'),
            h('p', null, 'This meeting was deleted; what is shown here is all that is left of it.')));
          hub?.abort();
        } else if (ev.data?.id === id) {
          setMeeting(ev.data);
        }
        break;
      case 'segment':
        if (ev.op === 'delete') {
          const seq = Number(String(ev.id).split(':seg:')[1]);
          segments.get(seq)?.item.remove();
          segments.delete(seq);
        } else if (ev.data && Number.isFinite(ev.data.seq)) {
          addSegment(ev.data);
        }
        renderTranscriptMeta();
        break;
      case 'partial':
        if (ev.data) showPartial(ev.data);
        break;
      case 'insight':
        if (ev.op === 'delete') insights.delete(ev.id);
        else if (ev.data?.id) {
          const isNew = !insights.has(ev.data.id);
          insights.set(ev.data.id, ev.data);
          if (isNew) announcer.say(`New ${kindName(ev.data.kind)}: ${ev.data.text}`);
        }
        renderInsights();
        break;
      case 'summary':
        if (ev.op !== 'delete' && ev.data) setSummary(ev.data);
        break;
      default:
        break;
    }
  }

  function setMeeting(m) {
    const was = meeting?.status;
    meeting = m;
    heading.textContent = m.title || m.id;
    document.title = `${m.title || 'Meeting'} · Nexus`;
    fill(headerMeta,
      statusBadge(m.status),
      m.status === 'live' ? h('span', { class: 'live-dot', 'aria-hidden': 'true' }) : null,
      m.started_at ? h('span', null, 'started ', timeElement(m.started_at)) : h('span', null, 'not started yet'),
      m.ended_at ? h('span', null, 'ended ', timeElement(m.ended_at)) : null,
      h('span', null, `${formatNumber(Number(m.segments) || 0)} segments`),
    );
    endButton.hidden = m.status === 'ended' || m.deleted;
    if (m.status === 'ended') {
      for (const item of partialItems.values()) item.remove();
      partialItems.clear();
    }
    if (was && was !== 'ended' && m.status === 'ended') announcer.say('The meeting has ended.');
    const people = Array.isArray(m.participants) ? m.participants : [];
    peopleList.replaceChildren(...(people.length
      ? people.map((p) => h('li', { class: 'participant' },
        h('span', { class: 'participant__name' }, p.name),
        p.email ? h('span', { class: 'muted break' }, ` · ${p.email}`) : null,
        p.user_id ? h('span', { class: 'chip' }, srOnly('Memory user: '), p.user_id) : null))
      : [h('li', { class: 'muted' }, 'No participants yet.')]));
    const chosen = speakerSelect.value;
    const names = [...new Set(people.map((p) => p.name).filter(Boolean))];
    speakerSelect.replaceChildren(h('option', { value: '' }, 'Anyone'), ...names.map((n) => h('option', { value: n }, n)));
    speakerSelect.value = names.includes(chosen) ? chosen : '';
  }

  function addSegment(s) {
    const existing = segments.get(s.seq);
    // A reader at the end of the transcript stays there as it grows; one reading back is left alone.
    const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const item = h('li', { id: segmentDomId(s.seq), class: 'segment', tabindex: -1, 'data-seq': s.seq },
      h('span', { class: 'segment__meta' },
        h('span', { class: 'segment__speaker' }, s.speaker || 'Unknown speaker'),
        ' ',
        h('span', { class: 'segment__time muted' }, formatClock(s.start_ms))),
      h('span', { class: 'segment__text' }, s.text));
    if (matched.includes(s.seq)) item.classList.add('is-match');
    if (existing) {
      existing.item.replaceWith(item);
    } else {
      // In sequence order: before the first one said after it.
      let before = null;
      for (const [seq, entry] of segments) {
        if (seq > s.seq && (!before || seq < before.seq)) before = { seq, item: entry.item };
      }
      finals.insertBefore(item, before?.item ?? null);
    }
    segments.set(s.seq, { segment: s, item });
    if (atEnd && !existing) log.scrollTop = log.scrollHeight;
    // Its final replaces the partial shown for it.
    const partial = partialItems.get(s.segment_id);
    if (partial) {
      partial.remove();
      partialItems.delete(s.segment_id);
    }
    transcriptEmpty.hidden = segments.size > 0 || partialItems.size > 0;
  }

  function showPartial(p) {
    const key = p.segment_id;
    if (!key || meeting?.status === 'ended') return;
    if ([...segments.values()].some((e) => e.segment.segment_id === key)) return; // already final
    const item = h('li', { class: 'segment segment--partial', 'data-segment-id': key },
      h('span', { class: 'segment__meta' },
        h('span', { class: 'segment__speaker' }, p.speaker || 'Unknown speaker'),
        ' ',
        h('span', { class: 'segment__time muted' }, formatClock(p.start_ms)),
        ' ',
        h('span', { class: 'badge badge--neutral badge--inline' }, 'speaking')),
      h('span', { class: 'segment__text' }, p.text));
    const old = partialItems.get(key);
    if (old) old.replaceWith(item);
    else partials.append(item);
    partialItems.set(key, item);
    transcriptEmpty.hidden = true;
  }

  function renderTranscriptMeta() {
    transcriptMeta.textContent = `${formatNumber(segments.size)} segment${segments.size === 1 ? '' : 's'}`;
    transcriptEmpty.hidden = segments.size > 0 || partialItems.size > 0;
  }

  function renderInsights() {
    for (const g of INSIGHT_GROUPS) {
      const list = insightLists.get(g.kind);
      const items = [...insights.values()].filter((i) => i.kind === g.kind)
        .sort((a, b) => (a.seqs?.[0] ?? 0) - (b.seqs?.[0] ?? 0));
      list.replaceChildren(...(items.length ? items.map(insightItem) : [h('li', { class: 'muted insight-list__empty' }, g.empty)]));
    }
  }

  function insightItem(i) {
    const seqs = Array.isArray(i.seqs) ? i.seqs : [];
    return h('li', { class: 'insight', 'data-insight': i.id },
      h('span', { class: 'insight__text' }, i.text),
      h('span', { class: 'insight__meta' },
        i.owner ? h('span', { class: 'chip' }, srOnly('Owner: '), i.owner) : null,
        i.due || i.due_date ? h('span', { class: 'chip' }, 'due ', i.due_date
          ? h('time', { datetime: i.due_date, title: i.due || null }, i.due_date) : i.due) : null,
        !i.owner && i.speaker ? h('span', { class: 'muted' }, `said by ${i.speaker}`) : null,
        seqs.length ? h('span', { class: 'insight__refs' },
          seqs.map((seq) => h('a', {
            href: `#${segmentDomId(seq)}`, class: 'seq-link',
            onclick: (e) => { e.preventDefault(); jumpTo([seq]); },
          }, srOnly('Go to '), `turn ${seq}`))) : null,
      ));
  }

  function setSummary(s) {
    summary = s;
    const kind = s?.kind;
    fill(summaryBadge, kind === 'final'
      ? h('span', { class: 'badge badge--ok' }, 'Final')
      : kind === 'rolling' ? h('span', { class: 'badge badge--info' }, 'So far') : null);
    const bullets = Array.isArray(s?.bullets) ? s.bullets.filter(Boolean) : [];
    if (!s || kind === 'none' || (!s.text && !bullets.length)) {
      summaryBody.replaceChildren(h('p', { class: 'muted' },
        meeting?.status === 'ended' ? 'The summary is being written…' : 'A summary appears once enough has been said.'));
      return;
    }
    // An extractive summary's text is its bullets run together: then the bullets say it all.
    const inText = bullets.length > 0 && bullets.every((b) => s.text?.includes(b));
    fill(summaryBody,
      s.text && !inText ? h('p', { class: 'summary__text' }, s.text) : null,
      bullets.length ? h('ul', { class: 'summary__bullets' }, bullets.map((b) => h('li', null, b))) : null,
      h('p', { class: 'page__meta' }, s.generator === 'llm' ? 'Written by the language model.' : 'Made from what was said.'),
    );
  }

  // Scroll to, mark and focus the segments `seqs` (the first one that is shown).
  function jumpTo(seqs) {
    const first = seqs.map((seq) => segments.get(seq)?.item).find(Boolean);
    if (!first) return;
    first.scrollIntoView({ block: 'center', behavior: prefersReducedMotion() ? 'auto' : 'smooth' });
    first.focus({ preventScroll: true });
    for (const seq of seqs) {
      const item = segments.get(seq)?.item;
      if (!item) continue;
      item.classList.remove('is-flashing');
      void item.offsetWidth; // restart the animation
      item.classList.add('is-flashing');
    }
  }

  function markMatches(seqs) {
    for (const seq of matched) segments.get(seq)?.item.classList.remove('is-match');
    matched = seqs;
    for (const seq of matched) segments.get(seq)?.item.classList.add('is-match');
  }

  async function onSearch(event) {
    event.preventDefault();
    const query = queryInput.value.trim();
    if (!query) {
      queryInput.value = '';
      searchForm.reportValidity();
      return;
    }
    searchController?.abort();
    const controller = new AbortController();
    searchController = controller;
    const filters = { meeting_id: id };
    if (speakerSelect.value) filters.speaker = speakerSelect.value;
    searchButton.disabled = true;
    searchMeta.textContent = 'Searching…';
    searchAlert.replaceChildren();
    try {
      const data = await request('/search', {
        method: 'POST', signal: controller.signal, timeoutMs: 30_000,
        body: { query, mode: 'hybrid', top_k: 10, sources: ['meetings'], filters },
      });
      if (stopped || controller !== searchController) return;
      const results = Array.isArray(data?.results) ? data.results : [];
      const range = (r) => {
        const out = [];
        const start = Number(r.seq_start);
        const end = Number.isFinite(r.seq_end) ? r.seq_end : start;
        for (let seq = start; Number.isFinite(start) && seq <= end; seq += 1) out.push(seq);
        return out;
      };
      markMatches([...new Set(results.flatMap(range))]);
      searchResults.replaceChildren(...results.map((r) => {
        const seqs = range(r);
        const speakers = Array.isArray(r.speakers) ? r.speakers : (r.speaker ? [r.speaker] : []);
        return h('li', { class: 'result transcript-hit' },
          h('a', {
            href: `#${segmentDomId(seqs[0] ?? 0)}`, class: 'transcript-hit__link',
            onclick: (e) => { e.preventDefault(); jumpTo(seqs); },
          }, seqs.length > 1 ? `Turns ${seqs[0]}–${seqs[seqs.length - 1]}` : `Turn ${seqs[0] ?? '?'}`,
          Number.isFinite(r.start_ms) ? ` at ${formatClock(r.start_ms)}` : ''),
          speakers.length ? h('span', { class: 'result__meta' },
            speakers.map((s) => h('span', { class: 'chip' }, srOnly('Speaker: '), s))) : null,
          r.snippet ? h('p', { class: 'snippet' }, snippetNodes(r.snippet)) : null);
      }));
      const scope = speakerSelect.value ? ` said by ${speakerSelect.value}` : '';
      searchMeta.textContent = results.length
        ? `${formatNumber(results.length)} passage${results.length === 1 ? '' : 's'}${scope} match “${query}”.`
        : `Nothing${scope} matches “${query}”.`;
      if (results.length) jumpTo(range(results[0]));
    } catch (err) {
      if (stopped || controller !== searchController || err?.name === 'AbortError') return;
      searchMeta.textContent = '';
      searchAlert.replaceChildren(errorBanner('Search failed', err));
    } finally {
      if (controller === searchController) {
        searchController = null;
        searchButton.disabled = false;
      }
    }
  }

  async function onEnd() {
    if (!window.confirm(`End the meeting “${meeting?.title ?? id}”?\n\nNo more can be added to its transcript; the final summary and insights are made from it.`)) return;
    endButton.disabled = true;
    try {
      const answer = await request(`/meetings/${enc}/end`, { method: 'POST' });
      if (stopped) return;
      if (answer?.meeting) setMeeting(answer.meeting);
      setSummary(summary?.kind === 'final' ? summary : null);
    } catch (err) {
      if (stopped) return;
      alertRegion.replaceChildren(errorBanner('Could not end the meeting', err));
    } finally {
      endButton.disabled = false;
    }
  }

  // The key goes in a header, never in a URL: fetch the file, then hand it to the browser.
  async function download(event, d) {
    const key = getApiKey();
    if (!key) return; // no key: the link downloads by itself
    event.preventDefault();
    try {
      const response = await fetch(`${API_BASE}/meetings/${enc}/transcript?format=${d.format}`, {
        headers: { Authorization: `Bearer ${key}` },
      });
      if (!response.ok) throw new Error(`the download failed: HTTP ${response.status}`);
      const url = URL.createObjectURL(await response.blob());
      const link = h('a', { href: url, download: `${id}.${d.ext}` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      if (stopped) return;
      alertRegion.replaceChildren(errorBanner('Could not download the transcript', err));
    }
  }

  renderInsights();
  load(false);

  return () => {
    stopped = true;
    loadController?.abort();
    searchController?.abort();
    hub?.abort();
  };
}

// ---- helpers ------------------------------------------------------------------

/** replaceChildren without the null/false children (the DOM would print them as text). */
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
}

function kindName(kind) {
  return { action_item: 'action item', decision: 'decision', question: 'question', topic: 'topic' }[kind] ?? 'insight';
}

// "1:05:09" or "5:09" from milliseconds since the meeting's start.
function formatClock(ms) {
  if (!Number.isFinite(ms)) return '';
  const total = Math.floor(ms / 1000);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

function prefersReducedMotion() {
  return window.matchMedia?.('(prefers-reduced-motion: reduce)').matches ?? false;
}

function placeholderRow(text) {
  return h('tr', null, h('td', { colspan: 6, class: 'placeholder' }, text));
}
