// Backups page: the archives in the backup directory, take one (a job, followed to the end),
// download one, verify one (a job), and the schedule's state. Needs the master key.

import { request, getJSON, getApiKey, API_BASE } from '../api.js';
import { h, formatBytes, formatNumber, timeElement } from '../ui.js';

export const title = 'Backups';

export function mount(root) {
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const progress = h('div', { class: 'alert-region', 'aria-live': 'polite' });
  const body = h('tbody', null, row('Loading…'));
  const schedule = h('dl', { class: 'facts' });
  const dirNote = h('p', { class: 'field__hint' });
  let stopped = false;

  const noDerived = h('input', { type: 'checkbox', id: 'backup-no-derived' });
  const take = h('button', { type: 'submit', class: 'button button--primary' }, 'Take a backup');
  const form = h('form', { class: 'card form' },
    h('h2', null, 'New backup'),
    h('p', null, 'Taken while Nexus keeps serving: writes go on, and the archive holds every write acknowledged before it started.'),
    h('label', { class: 'check' }, noDerived, ' Leave the derived stores out (smaller; rebuilt on restore)'),
    h('div', { class: 'form__actions' }, take),
  );

  root.append(
    h('header', { class: 'page__header' }, h('h1', null, 'Backups')),
    alertRegion,
    progress,
    form,
    h('section', { class: 'card', 'aria-labelledby': 'schedule-heading' },
      h('h2', { id: 'schedule-heading' }, 'Schedule'), schedule),
    h('section', { class: 'card', 'aria-labelledby': 'archives-heading' },
      h('h2', { id: 'archives-heading' }, 'Archives'),
      dirNote,
      h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Backup archives', tabindex: 0 },
        h('table', null,
          h('thead', null, h('tr', null,
            ['Archive', 'Taken', 'Size', 'Position', 'Contents', ''].map((c) => h('th', { scope: 'col' }, c)))),
          body))),
  );

  function showError(err) {
    alertRegion.replaceChildren(h('div', { class: 'banner banner--error' }, h('p', null, err.message || String(err))));
  }

  function say(kind, text) {
    progress.replaceChildren(h('div', { class: `banner banner--${kind}` }, h('p', null, text)));
  }

  async function load() {
    try {
      const listing = await getJSON('/admin/backups');
      if (stopped) return;
      dirNote.textContent = `In ${listing.dir} on the server.`;
      body.replaceChildren(...(listing.archives.length ? listing.archives.map(archiveRow) : [row('No backups yet.')]));
      renderSchedule(listing.schedule);
    } catch (err) {
      if (!stopped) {
        body.replaceChildren(row('No data.'));
        showError(err);
      }
    }
  }

  function renderSchedule(s) {
    const entries = s.schedule
      ? [
          ['Schedule (UTC)', h('code', null, s.schedule)],
          ['Next run', timeElement(s.next_run)],
          ['Last run', timeElement(s.last_run)],
          ['Last success', timeElement(s.last_success)],
          ['Last archive', s.last_archive || '—'],
          ['Verified', s.last_verified === true ? 'yes' : s.last_verified === false ? 'no: failed verification' : '—'],
          ['Failures', formatNumber(s.failures)],
          ['Last error', s.last_error || 'none'],
        ]
      : [['Schedule', 'none: set [backup] schedule in the configuration (cron syntax, UTC)']];
    schedule.replaceChildren(...entries.map(([term, value]) =>
      h('div', { class: 'facts__item' }, h('dt', null, term), h('dd', null, value))));
  }

  function archiveRow(a) {
    const download = h('button', { type: 'button', class: 'button button--small' }, 'Download');
    download.addEventListener('click', () => downloadArchive(a.name, download));
    const verify = h('button', { type: 'button', class: 'button button--small' }, 'Verify');
    verify.addEventListener('click', () => verifyArchive(a.name, verify));
    return h('tr', null,
      h('th', { scope: 'row', class: 'mono' }, a.name),
      h('td', null, timeElement(a.created_at)),
      h('td', null, formatBytes(a.size)),
      h('td', { class: 'mono' }, formatNumber(a.seq)),
      h('td', null, a.derived ? 'all stores' : 'record and files (derived stores rebuilt on restore)'),
      h('td', null, h('div', { class: 'row-actions' }, download, verify)));
  }

  // The key goes in a header, never in a URL: fetch the file, then hand it to the browser.
  async function downloadArchive(name, button) {
    button.disabled = true;
    say('info', `Downloading ${name}…`);
    try {
      const key = getApiKey();
      const response = await fetch(`${API_BASE}/admin/backups/${encodeURIComponent(name)}`, {
        headers: key ? { Authorization: `Bearer ${key}` } : {},
      });
      if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
      const url = URL.createObjectURL(await response.blob());
      const link = h('a', { href: url, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      const sum = response.headers.get('x-checksum-sha256');
      say('ok', sum ? `Downloaded ${name} (SHA-256 ${sum}).` : `Downloaded ${name}.`);
    } catch (err) {
      showError(err);
      progress.replaceChildren();
    } finally {
      button.disabled = false;
    }
  }

  async function follow(job, label) {
    for (;;) {
      if (stopped) return null;
      const current = await getJSON(`/jobs/${encodeURIComponent(job.id)}`);
      if (current.state === 'succeeded') return current;
      if (['failed', 'dead', 'cancelled'].includes(current.state)) {
        throw new Error(`${label} failed: ${current.error || current.state}`);
      }
      const p = current.progress || {};
      say('info', p.total ? `${label}: ${formatBytes(p.done || 0)} of ${formatBytes(p.total)}…` : `${label}…`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  async function verifyArchive(name, button) {
    button.disabled = true;
    alertRegion.replaceChildren();
    try {
      const job = await request(`/admin/backups/${encodeURIComponent(name)}/verify`, { method: 'POST' });
      const done = await follow(job, `Verifying ${name}`);
      if (!done) return;
      const r = done.result;
      say('ok', `${name} verified: ${formatNumber(r.files)} files match the manifest, integrity ${r.integrity}, `
        + `${formatNumber(r.records_checked)} records agree with the derived stores.`);
    } catch (err) {
      showError(err);
      progress.replaceChildren();
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    take.disabled = true;
    alertRegion.replaceChildren();
    try {
      const job = await request('/admin/backups', { method: 'POST', body: { no_derived: noDerived.checked } });
      const done = await follow(job, 'Taking a backup');
      if (!done) return;
      const r = done.result;
      say('ok', `Backup taken: ${r.path} (${formatBytes(r.size)}, change-log position ${formatNumber(r.header.seq)}).`);
      load();
    } catch (err) {
      showError(err);
      progress.replaceChildren();
    } finally {
      take.disabled = false;
    }
  });

  load();
  return () => { stopped = true; };
}

function row(text) {
  return h('tr', null, h('td', { colspan: 6, class: 'placeholder' }, text));
}
