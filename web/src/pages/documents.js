// Documents page: upload files (multipart, with progress) and follow their
// ingestion jobs; list documents page by page, filter by collection, delete.
//
//   POST   /api/v1/documents            multipart: file (repeatable), collection, tags
//   GET    /api/v1/jobs/{id}            polled every second until finished
//   GET    /api/v1/documents?limit=50&after=KEY&collection=NAME
//   DELETE /api/v1/documents/{id}
//   GET    /api/v1/collections

import { getJSON, request, upload } from '../api.js';
import { h, srOnly, formatBytes, formatNumber, timeElement } from '../ui.js';

export const title = 'Documents';

const PAGE_SIZE = 50;
const JOB_POLL_MS = 1000;
const JOB_TIMEOUT_MS = 5000;
const FINISHED = new Set(['succeeded', 'failed', 'dead', 'cancelled']);
const STATE_LABELS = {
  queued: 'Queued',
  running: 'Running',
  succeeded: 'Succeeded',
  failed: 'Failed',
  dead: 'Failed permanently',
  cancelled: 'Cancelled',
  unknown: 'Unknown',
};
const STATE_BADGES = {
  queued: 'badge--neutral',
  running: 'badge--info',
  succeeded: 'badge--ok',
  failed: 'badge--error',
  dead: 'badge--error',
  cancelled: 'badge--neutral',
  unknown: 'badge--warn',
};

let instance = 0;

export function mount(root) {
  const uid = `docs${++instance}`;
  let stopped = false;

  const announcer = h('p', { class: 'visually-hidden', role: 'status' });
  function announce(text) {
    announcer.textContent = '';
    setTimeout(() => { if (!stopped) announcer.textContent = text; }, 50);
  }

  // =========================================================================
  // Upload
  // =========================================================================
  let selected = []; // File[]
  let uploadController = null;

  const fileInput = h('input', {
    id: `${uid}-files`, type: 'file', multiple: true, class: 'visually-hidden',
    'aria-describedby': `${uid}-drop-hint`,
    onchange: () => setSelection([...fileInput.files]),
  });
  const dropzone = h('div', { class: 'dropzone' },
    fileInput,
    h('p', { class: 'dropzone__text', id: `${uid}-drop-hint` }, 'Drag and drop files here, or'),
    h('label', { for: fileInput.id, class: 'btn' }, 'Choose files…'),
  );
  const selectionList = h('ul', { class: 'file-list', 'aria-label': 'Selected files' });
  const clearButton = h('button', { type: 'button', class: 'btn btn--small', hidden: true, onclick: () => setSelection([]) },
    'Clear selection');
  const selectionSummary = h('p', { class: 'page__meta', 'aria-live': 'polite' }, 'No files selected.');

  const collectionInput = h('input', {
    id: `${uid}-collection`, class: 'input', type: 'text', autocomplete: 'off',
    list: `${uid}-collections`, placeholder: 'default',
  });
  const collectionsDatalist = h('datalist', { id: `${uid}-collections` });
  const tagsInput = h('input', {
    id: `${uid}-tags`, class: 'input', type: 'text', autocomplete: 'off',
    placeholder: 'e.g. research, 2024', 'aria-describedby': `${uid}-tags-hint`,
  });

  const uploadButton = h('button', { type: 'submit', class: 'btn btn--primary', disabled: true }, 'Upload');
  const cancelButton = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => uploadController?.abort() },
    'Cancel upload');
  const progressBar = h('progress', { max: 100, value: 0, 'aria-labelledby': `${uid}-progress-label` });
  const progressLabel = h('span', { id: `${uid}-progress-label` });
  const progressRow = h('div', { class: 'upload-progress', hidden: true }, progressLabel, progressBar);
  const uploadAlert = h('div', { class: 'alert-region', role: 'alert' });

  const uploadForm = h('form', { class: 'upload-form', onsubmit: onUpload, 'aria-labelledby': `${uid}-upload` },
    dropzone,
    h('div', { class: 'file-selection' }, selectionSummary, selectionList, clearButton),
    h('div', { class: 'form-row' },
      h('div', { class: 'field field--grow' },
        h('label', { for: collectionInput.id }, 'Collection ', h('span', { class: 'field__optional' }, '(optional)')),
        collectionInput, collectionsDatalist,
      ),
      h('div', { class: 'field field--grow' },
        h('label', { for: tagsInput.id }, 'Tags ', h('span', { class: 'field__optional' }, '(optional)')),
        tagsInput,
        h('span', { class: 'field__hint', id: `${uid}-tags-hint` }, 'Separate tags with commas.'),
      ),
    ),
    h('div', { class: 'form-actions' }, uploadButton, cancelButton),
    progressRow,
    uploadAlert,
  );

  function setSelection(files) {
    selected = files;
    selectionList.replaceChildren(...files.map((f) =>
      h('li', null, h('span', { class: 'break' }, f.name), ' ', h('span', { class: 'muted' }, formatBytes(f.size)))));
    const total = files.reduce((sum, f) => sum + f.size, 0);
    selectionSummary.textContent = files.length
      ? `${files.length} file${files.length === 1 ? '' : 's'} selected · ${formatBytes(total)}`
      : 'No files selected.';
    clearButton.hidden = files.length === 0;
    uploadButton.disabled = files.length === 0 || uploadController !== null;
    if (!files.length) fileInput.value = '';
  }

  // ---- drag and drop ----
  let dragDepth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
  dropzone.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth += 1;
    dropzone.classList.add('is-dragover');
  });
  dropzone.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = uploadController ? 'none' : 'copy';
  });
  dropzone.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) dropzone.classList.remove('is-dragover');
  });
  dropzone.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    dropzone.classList.remove('is-dragover');
    if (uploadController) return;
    const files = [...e.dataTransfer.files];
    if (files.length) setSelection(files);
  });
  // A file dropped next to the zone would make the browser open it and leave
  // the app; swallow such drops while this page is shown.
  const swallowDrop = (e) => {
    if (hasFiles(e) && !dropzone.contains(e.target)) {
      e.preventDefault();
      if (e.type === 'dragover') e.dataTransfer.dropEffect = 'none';
    }
  };
  window.addEventListener('dragover', swallowDrop);
  window.addEventListener('drop', swallowDrop);

  async function onUpload(event) {
    event.preventDefault();
    if (!selected.length || uploadController) return;
    const files = selected;
    const collection = collectionInput.value.trim();
    const tags = tagsInput.value.split(',').map((t) => t.trim()).filter(Boolean);

    const form = new FormData();
    for (const file of files) form.append('file', file, file.name);
    if (collection) form.append('collection', collection);
    if (tags.length) form.append('tags', tags.join(','));

    const controller = new AbortController();
    uploadController = controller;
    setUploading(true);
    uploadAlert.replaceChildren();
    const totalBytes = files.reduce((sum, f) => sum + f.size, 0);
    showProgress(0, totalBytes);
    announce(`Uploading ${files.length} file${files.length === 1 ? '' : 's'}.`);

    try {
      const answer = await upload('/documents', form, {
        signal: controller.signal,
        onProgress: ({ loaded, total, lengthComputable }) => {
          if (!stopped) showProgress(loaded, lengthComputable ? total : totalBytes);
        },
      });
      if (stopped) return;
      const jobs = Array.isArray(answer?.jobs) ? answer.jobs : [];
      progressLabel.textContent = `Uploaded ${files.length} file${files.length === 1 ? '' : 's'} (${formatBytes(totalBytes)}).`;
      progressBar.value = 100;
      setSelection([]);
      addJobs(jobs, files);
      announce(`Upload complete. ${jobs.length} file${jobs.length === 1 ? '' : 's'} queued for processing.`);
    } catch (err) {
      if (stopped) return;
      progressRow.hidden = true;
      if (err?.name === 'AbortError') {
        announce('Upload cancelled.');
      } else {
        uploadAlert.replaceChildren(banner(err?.isNetworkError ? 'Server unreachable' : 'Upload failed', err?.message));
      }
    } finally {
      if (uploadController === controller) {
        uploadController = null;
        if (!stopped) setUploading(false);
      }
    }
  }

  function setUploading(busy) {
    for (const el of [fileInput, collectionInput, tagsInput, clearButton]) el.disabled = busy;
    dropzone.classList.toggle('is-disabled', busy);
    uploadButton.disabled = busy || selected.length === 0;
    cancelButton.hidden = !busy;
    uploadForm.setAttribute('aria-busy', String(busy));
  }

  function showProgress(loaded, total) {
    progressRow.hidden = false;
    const pct = total > 0 ? Math.min(100, Math.round((loaded / total) * 100)) : 0;
    progressBar.value = pct;
    progressLabel.textContent = total > 0
      ? `Uploading… ${pct}% (${formatBytes(loaded)} of ${formatBytes(total)})`
      : 'Uploading…';
  }

  // =========================================================================
  // Jobs
  // =========================================================================
  const jobs = new Map(); // job_id -> { job, row, cells, pollFailures }
  const jobsBody = h('tbody');
  const jobsHeading = h('h2', { id: `${uid}-jobs` }, 'Processing');
  const clearJobsButton = h('button', { type: 'button', class: 'btn btn--small', onclick: clearFinishedJobs },
    'Clear finished');
  const jobsSection = h('section', { class: 'card', 'aria-labelledby': jobsHeading.id, hidden: true },
    h('div', { class: 'card__header' }, jobsHeading, clearJobsButton),
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Files being processed', tabindex: 0 },
      h('table', null,
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'File'),
          h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col' }, 'Progress'),
          h('th', { scope: 'col', class: 'num' }, 'Attempts'),
          h('th', { scope: 'col' }, 'Details'),
        )),
        jobsBody,
      ),
    ),
  );

  let pollTimer = 0;
  let polling = false;
  const pollController = new AbortController();

  function addJobs(list, files) {
    list.forEach((j, i) => {
      if (!j?.job_id || jobs.has(j.job_id)) return;
      const cells = {
        state: h('td'),
        progress: h('td', { class: 'job-progress' }),
        attempts: h('td', { class: 'num' }, '—'),
        details: h('td', { class: 'job-details' }),
      };
      const name = j.file_name || files[i]?.name || j.document_id || j.job_id;
      const row = h('tr', null,
        h('th', { scope: 'row', class: 'cell-wrap' }, name), cells.state, cells.progress, cells.attempts, cells.details);
      const entry = { name, job: { id: j.job_id, state: 'queued' }, row, cells, pollFailures: 0, lastState: null };
      jobs.set(j.job_id, entry);
      jobsBody.prepend(row);
      renderJob(entry);
    });
    jobsSection.hidden = jobs.size === 0;
    updateClearJobs();
    schedulePoll(0);
  }

  function renderJob(entry) {
    const { job, cells } = entry;
    const state = job.state in STATE_LABELS ? job.state : 'unknown';
    cells.state.replaceChildren(
      h('span', { class: `badge ${STATE_BADGES[state] ?? 'badge--neutral'}` }, STATE_LABELS[state] ?? String(job.state)));

    const done = Number(job.progress?.done);
    const total = Number(job.progress?.total);
    if (Number.isFinite(done) && Number.isFinite(total) && total > 0) {
      cells.progress.replaceChildren(
        h('progress', { max: total, value: Math.min(done, total), 'aria-label': `${entry.name} progress` }),
        h('span', { class: 'muted' }, ` ${formatNumber(done)} / ${formatNumber(total)}`));
    } else if (state === 'running') {
      cells.progress.replaceChildren(h('progress', { 'aria-label': `${entry.name} progress` })); // indeterminate
    } else if (state === 'succeeded') {
      cells.progress.replaceChildren(h('progress', { max: 1, value: 1, 'aria-label': `${entry.name} progress` }));
    } else {
      cells.progress.replaceChildren(h('span', { class: 'muted' }, '—'));
    }

    cells.attempts.textContent = Number.isFinite(job.attempts) ? formatNumber(job.attempts) : '—';

    const details = [];
    if (job.error) details.push(h('span', { class: 'error-text' }, String(job.error)));
    if (entry.pollError) details.push(h('span', { class: 'muted' }, entry.pollError));
    cells.details.replaceChildren(...(details.length ? details : [h('span', { class: 'muted' }, '—')]));
  }

  function activeJobs() {
    return [...jobs.values()].filter((e) => !FINISHED.has(e.job.state) && e.job.state !== 'unknown');
  }

  function schedulePoll(delay) {
    clearTimeout(pollTimer);
    if (stopped || polling || activeJobs().length === 0) return;
    pollTimer = setTimeout(pollJobs, delay);
  }

  async function pollJobs() {
    const active = activeJobs();
    if (stopped || !active.length) return;
    polling = true;
    const finishedNow = [];
    await Promise.all(active.map(async (entry) => {
      try {
        const job = await getJSON(`/jobs/${encodeURIComponent(entry.job.id)}`,
          { signal: pollController.signal, timeoutMs: JOB_TIMEOUT_MS });
        if (stopped) return;
        entry.pollFailures = 0;
        entry.pollError = '';
        if (job && typeof job === 'object') entry.job = { ...job, id: job.id ?? entry.job.id };
      } catch (err) {
        if (stopped) return;
        if (err?.status === 404) {
          entry.job = { ...entry.job, state: 'unknown' };
          entry.pollError = 'The server no longer knows this job.';
        } else {
          entry.pollFailures += 1;
          entry.pollError = `Status unavailable (${err?.message || 'error'}); retrying.`;
        }
      }
      if (entry.job.state !== entry.lastState) {
        if (FINISHED.has(entry.job.state) || entry.job.state === 'unknown') finishedNow.push(entry);
        entry.lastState = entry.job.state;
      }
      renderJob(entry);
    }));
    polling = false;
    if (stopped) return;

    if (finishedNow.length) {
      announce(finishedNow.map((e) => `${e.name}: ${STATE_LABELS[e.job.state] ?? e.job.state}`).join('. '));
      if (finishedNow.some((e) => e.job.state === 'succeeded')) {
        loadCollections();
        reloadDocuments();
      }
      updateClearJobs();
    }
    // Back off gently while the server is unreachable.
    const failing = activeJobs().some((e) => e.pollFailures > 0);
    schedulePoll(failing ? JOB_POLL_MS * 3 : JOB_POLL_MS);
  }

  function clearFinishedJobs() {
    for (const [id, entry] of jobs) {
      if (FINISHED.has(entry.job.state) || entry.job.state === 'unknown') {
        entry.row.remove();
        jobs.delete(id);
      }
    }
    jobsSection.hidden = jobs.size === 0;
    updateClearJobs();
    if (jobsSection.hidden) listHeading.focus();
  }

  function updateClearJobs() {
    clearJobsButton.disabled = activeJobs().length === jobs.size;
  }

  // =========================================================================
  // Document list
  // =========================================================================
  const listHeading = h('h2', { id: `${uid}-list`, tabindex: -1 }, 'Documents');
  const listMeta = h('p', { class: 'page__meta' });
  const filterSelect = h('select', { id: `${uid}-filter`, class: 'select', onchange: () => reloadDocuments() },
    h('option', { value: '' }, 'All collections'));
  const refreshButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => { loadCollections(); reloadDocuments(); } },
    'Refresh');
  const listAlert = h('div', { class: 'alert-region', role: 'alert' });
  const docsBody = h('tbody', null, placeholderRow('Loading…'));
  const loadMoreButton = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => loadDocuments(false) },
    'Load more');

  const listSection = h('section', { class: 'card', 'aria-labelledby': listHeading.id },
    h('div', { class: 'card__header' }, listHeading, listMeta),
    h('div', { class: 'toolbar' },
      h('div', { class: 'field field--inline' },
        h('label', { for: filterSelect.id }, 'Collection'),
        filterSelect,
      ),
      refreshButton,
    ),
    listAlert,
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Document list', tabindex: 0 },
      h('table', { class: 'docs-table' },
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'Title'),
          h('th', { scope: 'col' }, 'Collection'),
          h('th', { scope: 'col' }, 'Format'),
          h('th', { scope: 'col', class: 'num' }, 'Size'),
          h('th', { scope: 'col', class: 'num' }, 'Chunks'),
          h('th', { scope: 'col' }, 'Updated'),
          h('th', { scope: 'col' }, srOnly('Actions')),
        )),
        docsBody,
      ),
    ),
    h('div', { class: 'list-footer' }, loadMoreButton),
  );

  let docs = []; // documents shown, in order
  let nextAfter = null;
  let listController = null;

  function reloadDocuments() {
    return loadDocuments(true);
  }

  async function loadDocuments(reset) {
    listController?.abort();
    const controller = new AbortController();
    listController = controller;
    const collection = filterSelect.value;

    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (!reset && nextAfter != null) params.set('after', String(nextAfter));
    if (collection) params.set('collection', collection);

    listSection.setAttribute('aria-busy', 'true');
    loadMoreButton.disabled = true;
    if (reset) listMeta.textContent = 'Loading…';
    else loadMoreButton.textContent = 'Loading…';

    try {
      const data = await getJSON(`/documents?${params}`, { signal: controller.signal });
      if (stopped || controller !== listController) return;
      const page = Array.isArray(data?.documents) ? data.documents : [];
      if (reset) docs = [];
      const seen = new Set(docs.map((d) => d.id));
      docs.push(...page.filter((d) => d && !seen.has(d.id)));
      nextAfter = data?.next_after ?? null;
      listAlert.replaceChildren();
      renderDocuments(reset ? null : page.length);
    } catch (err) {
      if (stopped || controller !== listController || err?.name === 'AbortError') return;
      listAlert.replaceChildren(banner(
        err?.isNetworkError ? 'Server unreachable' : 'Could not load documents', err?.message,
        h('button', { type: 'button', class: 'btn btn--small', onclick: () => loadDocuments(reset) }, 'Try again')));
      if (reset) {
        docs = [];
        nextAfter = null;
        docsBody.replaceChildren(placeholderRow('No data.'));
        listMeta.textContent = '';
      }
    } finally {
      if (controller === listController) {
        listController = null;
        listSection.removeAttribute('aria-busy');
        loadMoreButton.disabled = false;
        loadMoreButton.textContent = 'Load more';
        loadMoreButton.hidden = nextAfter == null;
      }
    }
  }

  function renderDocuments(addedCount) {
    if (!docs.length) {
      const filter = filterSelect.value;
      docsBody.replaceChildren(placeholderRow(filter
        ? `No documents in the collection “${filter}”.`
        : 'No documents yet. Upload some above.'));
    } else {
      docsBody.replaceChildren(...docs.map(docRow));
    }
    updateListMeta();
    if (addedCount != null) announce(`${addedCount} more document${addedCount === 1 ? '' : 's'} loaded.`);
  }

  function updateListMeta() {
    const n = docs.length;
    listMeta.textContent = n
      ? `${formatNumber(n)} document${n === 1 ? '' : 's'} shown${nextAfter != null ? ' · more available' : ''}`
      : '';
  }

  function docRow(doc) {
    const name = doc.title || doc.source || doc.id;
    const tags = Array.isArray(doc.tags) ? doc.tags : [];
    const deleteButton = h('button', {
      type: 'button', class: 'btn btn--small btn--danger', 'aria-label': `Delete ${name}`,
      onclick: () => deleteDocument(doc, row, deleteButton),
    }, 'Delete');
    const row = h('tr', { 'data-id': doc.id },
      h('th', { scope: 'row', class: 'cell-wrap doc-title' },
        h('span', { class: 'doc-title__name' }, name),
        doc.source && doc.source !== name ? h('span', { class: 'doc-title__source mono' }, doc.source) : null,
        Number.isFinite(doc.version) && doc.version > 1
          ? h('span', { class: 'doc-title__version muted' }, `version ${formatNumber(doc.version)}`) : null,
        tags.length
          ? h('ul', { class: 'tag-list', 'aria-label': 'Tags' }, tags.map((t) => h('li', { class: 'tag' }, t)))
          : null,
      ),
      h('td', null, doc.collection ? h('span', { class: 'chip' }, doc.collection) : h('span', { class: 'muted' }, '—')),
      h('td', null, doc.format ? h('span', { class: 'mono' }, doc.format) : '—'),
      h('td', { class: 'num', title: Number.isFinite(doc.size) ? `${formatNumber(doc.size)} bytes` : null }, formatBytes(doc.size)),
      h('td', { class: 'num' }, formatNumber(doc.chunks)),
      h('td', null, timeElement(doc.updated_at ?? doc.created_at, { dateOnly: true })),
      h('td', { class: 'actions' }, deleteButton),
    );
    return row;
  }

  async function deleteDocument(doc, row, button) {
    const name = doc.title || doc.source || doc.id;
    if (!window.confirm(`Delete “${name}”?\n\nThe document, its chunks and its search entries are removed. This cannot be undone.`)) {
      return;
    }
    // Read before disabling: a disabled button drops keyboard focus.
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    button.textContent = 'Deleting…';
    try {
      await request(`/documents/${encodeURIComponent(doc.id)}`, { method: 'DELETE' });
    } catch (err) {
      if (stopped) return;
      // Already gone is as good as deleted.
      if (err?.status !== 404) {
        button.disabled = false;
        button.textContent = 'Delete';
        listAlert.replaceChildren(banner(`Could not delete “${name}”`, err?.message));
        if (hadFocus) button.focus();
        return;
      }
    }
    if (stopped) return;

    // Keep keyboard focus nearby: the next row's Delete button, else the previous, else the heading.
    const index = docs.findIndex((d) => d.id === doc.id);
    const neighbour = row.nextElementSibling ?? row.previousElementSibling;
    if (index !== -1) docs.splice(index, 1);
    row.remove();
    listAlert.replaceChildren();
    if (!docs.length) renderDocuments(null);
    else updateListMeta();
    if (hadFocus) {
      const target = neighbour?.isConnected ? neighbour.querySelector('button') : null;
      (target ?? listHeading).focus();
    }
    announce(`Deleted “${name}”.`);
    loadCollections();
  }

  // =========================================================================
  // Collections (filter + upload suggestions)
  // =========================================================================
  const collectionsController = new AbortController();
  async function loadCollections() {
    try {
      const data = await getJSON('/collections', { signal: collectionsController.signal });
      if (stopped) return;
      const list = Array.isArray(data?.collections) ? data.collections : [];
      const current = filterSelect.value;
      const names = new Set(list.map((c) => c.name));
      filterSelect.replaceChildren(
        h('option', { value: '' }, 'All collections'),
        ...list.map((c) => h('option', { value: c.name },
          Number.isFinite(c.documents) ? `${c.name} (${formatNumber(c.documents)})` : c.name)),
        current && !names.has(current) ? h('option', { value: current }, current) : null,
      );
      filterSelect.value = current;
      collectionsDatalist.replaceChildren(...list.map((c) => h('option', { value: c.name })));
    } catch {
      /* the filter keeps its previous options; the list itself reports errors */
    }
  }

  // =========================================================================
  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Documents'),
      h('p', { class: 'page__meta' }, 'Upload files to index them; manage what is stored.'),
    ),
    h('section', { class: 'card', 'aria-labelledby': `${uid}-upload` },
      h('h2', { id: `${uid}-upload` }, 'Upload'),
      uploadForm,
    ),
    jobsSection,
    listSection,
    announcer,
  );

  loadCollections();
  reloadDocuments();

  return () => {
    stopped = true;
    clearTimeout(pollTimer);
    uploadController?.abort();
    pollController.abort();
    listController?.abort();
    collectionsController.abort();
    window.removeEventListener('dragover', swallowDrop);
    window.removeEventListener('drop', swallowDrop);
  };
}

function banner(title, message, action) {
  return h('div', { class: 'banner banner--error' },
    h('p', { class: 'banner__title' }, title),
    h('p', null, message || 'Unknown error.'),
    action ? h('p', { class: 'banner__actions' }, action) : null);
}

function placeholderRow(text) {
  return h('tr', null, h('td', { colspan: 7, class: 'placeholder' }, text));
}
