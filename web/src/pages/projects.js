// Projects page: the projects (tenants) this key can see, and a form to create one (the master
// key only; a project's admin key sees its own project). Keys for a project are made on the
// API keys page.
//
//   GET  /api/v1/projects        POST /api/v1/projects {id, name?, org_id?}
//   GET  /api/v1/orgs            (the master key; used to offer organisations)
//   GET  /api/v1/whoami          who is signed in, to say what this page allows

import { request, getJSON } from '../api.js';
import { h, timeElement } from '../ui.js';

export const title = 'Projects';

let instance = 0;

export function mount(root) {
  const uid = `proj${++instance}`;
  let stopped = false;

  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const result = h('div', { class: 'alert-region', 'aria-live': 'polite' });
  const who = h('p', { class: 'page__meta' });
  const body = h('tbody', null, placeholderRow('Loading…'));

  const id = h('input', {
    id: `${uid}-id`, class: 'input mono', required: true, maxlength: 64, pattern: '[A-Za-z0-9_\\-]{1,64}',
    autocomplete: 'off', spellcheck: 'false', 'aria-describedby': `${uid}-id-hint`,
  });
  const name = h('input', { id: `${uid}-name`, class: 'input', maxlength: 100, autocomplete: 'off', placeholder: 'the id' });
  const org = h('input', {
    id: `${uid}-org`, class: 'input mono', maxlength: 64, autocomplete: 'off', spellcheck: 'false', placeholder: 'default',
    list: `${uid}-orgs`,
  });
  const orgs = h('datalist', { id: `${uid}-orgs` });
  const create = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Create project');
  const form = h('form', { class: 'card form', novalidate: true, 'aria-labelledby': `${uid}-new` },
    h('h2', { id: `${uid}-new` }, 'New project'),
    h('p', { class: 'field__hint' }, 'A project is a tenant: its documents, memories and keys are its own. Creating one needs the master key.'),
    h('div', { class: 'form__grid' },
      h('div', { class: 'field' }, h('label', { for: id.id }, 'Id'), id,
        h('p', { class: 'field__hint', id: `${uid}-id-hint` }, '1-64 letters, digits, “-” or “_”.')),
      h('div', { class: 'field' }, h('label', { for: name.id }, 'Name'), name),
      h('div', { class: 'field' }, h('label', { for: org.id }, 'Organisation'), org, orgs),
    ),
    h('div', { class: 'form__actions' }, create),
  );

  const heading = h('h2', { id: `${uid}-list` }, 'Projects');
  root.append(
    h('header', { class: 'page__header' }, h('h1', null, 'Projects'), who),
    alertRegion,
    result,
    form,
    h('section', { class: 'card', 'aria-labelledby': heading.id },
      heading,
      h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Project list', tabindex: 0 },
        h('table', null,
          h('thead', null, h('tr', null, ['Id', 'Name', 'Organisation', 'Created', ''].map((c, i) =>
            h('th', { scope: 'col' }, i === 4 ? h('span', { class: 'visually-hidden' }, 'Actions') : c)))),
          body))),
  );

  function showError(err) {
    alertRegion.replaceChildren(h('div', { class: 'banner banner--error' }, h('p', null, err?.message || String(err))));
  }

  async function load() {
    try {
      const { projects } = await getJSON('/projects');
      if (stopped) return;
      body.replaceChildren(...(projects.length ? projects.map(projectRow) : [placeholderRow('No projects.')]));
    } catch (err) {
      if (stopped) return;
      body.replaceChildren(placeholderRow('No data.'));
      showError(err);
    }
  }

  async function describeCaller() {
    try {
      const me = await getJSON('/whoami');
      if (stopped) return;
      form.hidden = !me.operator;
      who.textContent = me.operator
        ? 'Every project on this server.'
        : `Your project: ${me.project}. Only the master key creates projects.`;
      if (me.operator) {
        const data = await getJSON('/orgs');
        if (!stopped) orgs.replaceChildren(...(data.orgs || []).map((o) => h('option', { value: o.id }, o.name)));
      }
    } catch {
      /* the list reports errors */
    }
  }

  function projectRow(p) {
    return h('tr', null,
      h('th', { scope: 'row', class: 'mono' }, p.id),
      h('td', null, p.name),
      h('td', { class: 'mono' }, p.org_id),
      h('td', null, timeElement(p.created_at)),
      h('td', null, h('a', { href: `#/keys?project=${encodeURIComponent(p.id)}` }, 'Keys', h('span', { class: 'visually-hidden' }, ` of ${p.id}`))));
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alertRegion.replaceChildren();
    if (!id.checkValidity()) {
      showError(new Error('The id must be 1-64 letters, digits, “-” or “_”.'));
      id.focus();
      return;
    }
    const input = { id: id.value.trim() };
    if (name.value.trim()) input.name = name.value.trim();
    if (org.value.trim()) input.org_id = org.value.trim();
    create.disabled = true;
    try {
      const project = await request('/projects', { method: 'POST', body: input });
      if (stopped) return;
      result.replaceChildren(h('div', { class: 'banner banner--ok' },
        h('p', null, `Project ${project.id} created. `, h('a', { href: `#/keys?project=${encodeURIComponent(project.id)}` }, 'Create a key for it'), '.')));
      id.value = '';
      name.value = '';
      load();
    } catch (err) {
      if (!stopped) showError(err);
    } finally {
      create.disabled = false;
    }
  });

  describeCaller();
  load();
  return () => { stopped = true; };
}

function placeholderRow(text) {
  return h('tr', null, h('td', { colspan: 5, class: 'placeholder' }, text));
}
