// API keys page: list, create (the key is shown once), revoke. Needs a key with the `admin`
// scope (or the master key).

import { request, getJSON } from '../api.js';
import { h, formatTime } from '../ui.js';

export const title = 'API keys';

const SCOPES = ['read', 'write', 'admin'];

export function mount(root) {
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const reveal = h('div', { class: 'alert-region', 'aria-live': 'polite' });
  const body = h('tbody', null, row('Loading…'));
  let stopped = false;

  // ---- create form ----
  const name = h('input', { id: 'key-name', class: 'input', required: true, maxlength: 100, autocomplete: 'off' });
  const project = h('input', { id: 'key-project', class: 'input mono', placeholder: 'your own', autocomplete: 'off' });
  // "#/keys?project=x" (from the Projects page) proposes that project.
  project.value = new URLSearchParams(location.hash.split('?')[1] ?? '').get('project') ?? '';
  const days = h('input', { id: 'key-days', class: 'input', type: 'number', min: 1, max: 36500, placeholder: 'never' });
  const boxes = SCOPES.map((scope) =>
    h('input', { type: 'checkbox', id: `scope-${scope}`, value: scope, checked: scope !== 'admin' }));
  const create = h('button', { type: 'submit', class: 'button button--primary' }, 'Create key');
  const form = h('form', { class: 'card form', novalidate: true },
    h('h2', null, 'New key'),
    h('div', { class: 'form__grid' },
      field('key-name', 'Name', name, 'What the key is for.'),
      field('key-project', 'Project', project, 'Leave empty for your own project.'),
      field('key-days', 'Expires in (days)', days, 'Leave empty for a key that does not expire.'),
      h('fieldset', { class: 'field' },
        h('legend', null, 'Scopes'),
        h('div', { class: 'checks' },
          boxes.map((box) => h('label', { class: 'check' }, box, ` ${box.value}`))),
      ),
    ),
    h('div', { class: 'form__actions' }, create),
  );

  root.append(
    h('header', { class: 'page__header' }, h('h1', null, 'API keys')),
    alertRegion,
    reveal,
    form,
    h('section', { class: 'card', 'aria-labelledby': 'keys-heading' },
      h('h2', { id: 'keys-heading' }, 'Keys'),
      h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Key list', tabindex: 0 },
        h('table', null,
          h('thead', null, h('tr', null,
            ['Id', 'Name', 'Project', 'Scopes', 'Created', 'Expires', 'Last used', 'State', ''].map((c) =>
              h('th', { scope: 'col' }, c)))),
          body))),
  );

  function showError(err) {
    alertRegion.replaceChildren(h('div', { class: 'banner banner--error' }, h('p', null, err.message || String(err))));
  }

  async function load() {
    try {
      const { keys } = await getJSON('/keys');
      if (stopped) return;
      body.replaceChildren(...(keys.length ? keys.map(keyRow) : [row('No keys yet.')]));
    } catch (err) {
      if (!stopped) {
        body.replaceChildren(row('No data.'));
        showError(err);
      }
    }
  }

  function keyRow(key) {
    const now = Date.now();
    const state = key.revoked_at ? 'revoked'
      : key.expires_at && Date.parse(key.expires_at) <= now ? 'expired' : 'active';
    const revoke = state === 'active'
      ? h('button', {
        type: 'button', class: 'button button--small', 'aria-label': `Revoke key ${key.id} (${key.name})`,
        onclick: () => revokeKey(key),
      }, 'Revoke')
      : null;
    return h('tr', null,
      h('th', { scope: 'row', class: 'mono' }, key.id),
      h('td', null, key.name),
      h('td', { class: 'mono' }, key.project),
      h('td', null, (key.scopes || []).join(', ')),
      h('td', null, when(key.created_at)),
      h('td', null, key.expires_at ? when(key.expires_at) : 'never'),
      h('td', null, key.last_used_at ? when(key.last_used_at) : '—'),
      h('td', null, h('span', { class: state === 'active' ? 'badge badge--ok' : 'badge badge--warn' }, state)),
      h('td', null, revoke));
  }

  async function revokeKey(key) {
    if (!window.confirm(`Revoke key ${key.id} (${key.name})? Clients using it stop working at once.`)) return;
    try {
      await request(`/keys/${encodeURIComponent(key.id)}`, { method: 'DELETE' });
      alertRegion.replaceChildren();
      load();
    } catch (err) {
      showError(err);
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const scopes = boxes.filter((b) => b.checked).map((b) => b.value);
    const input = { name: name.value.trim(), scopes };
    if (project.value.trim()) input.project = project.value.trim();
    if (days.value) input.expires_in_days = Number(days.value);
    create.disabled = true;
    try {
      const created = await request('/keys', { method: 'POST', body: input });
      alertRegion.replaceChildren();
      showKeyOnce(created);
      name.value = '';
      load();
    } catch (err) {
      showError(err);
    } finally {
      create.disabled = false;
    }
  });

  function showKeyOnce(created) {
    const value = h('input', { class: 'input mono', readonly: true, value: created.key, 'aria-label': 'New API key' });
    const copy = h('button', { type: 'button', class: 'button' }, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(created.key);
        copy.textContent = 'Copied';
      } catch {
        value.select();
      }
    });
    const done = h('button', { type: 'button', class: 'button' }, 'Done');
    done.addEventListener('click', () => reveal.replaceChildren());
    reveal.replaceChildren(h('div', { class: 'banner banner--ok' },
      h('p', { class: 'banner__title' }, `Key ${created.api_key.id} created`),
      h('p', null, 'Copy it now: it is shown only this once.'),
      h('div', { class: 'key-reveal' }, value, copy, done)));
    value.focus();
    value.select();
  }

  load();
  return () => { stopped = true; };
}

function field(id, label, input, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, h('p', { class: 'field__hint' }, hint));
}

function row(text) {
  return h('tr', null, h('td', { colspan: 9, class: 'placeholder' }, text));
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? '—'
    : h('time', { datetime: iso, title: date.toString() }, `${date.toLocaleDateString()} ${formatTime(date)}`);
}
