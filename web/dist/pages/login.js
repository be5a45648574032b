// Sign-in page: paste an API key (or the master key). The key is kept in sessionStorage by
// api.js and sent in the Authorization header; it never goes into a URL.

import { request, getApiKey, setApiKey, clearApiKey } from '../api.js';
import { h } from '../ui.js';

export const title = 'Sign in';

const RETURN_TO = 'nexus.returnTo';

/** Remember where to go back to after signing in (a hash route, never a key). */
export function rememberReturn(hash) {
  try {
    if (hash && !hash.startsWith('#/login')) sessionStorage.setItem(RETURN_TO, hash);
  } catch { /* storage unavailable */ }
}

function takeReturn() {
  try {
    const to = sessionStorage.getItem(RETURN_TO);
    sessionStorage.removeItem(RETURN_TO);
    return to || '#/status';
  } catch {
    return '#/status';
  }
}

export function mount(root) {
  const alertRegion = h('div', { class: 'alert-region', role: 'alert' });
  const who = h('p', { class: 'page__meta' }, 'Checking…');
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', class: 'input mono', autocomplete: 'off',
    spellcheck: 'false', required: true, placeholder: 'nxs_…',
  });
  const submit = h('button', { type: 'submit', class: 'button button--primary' }, 'Sign in');
  const signOut = h('button', { type: 'button', class: 'button', hidden: !getApiKey() }, 'Sign out');
  const form = h('form', { class: 'card form', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'api-key' }, 'API key or master key'),
      input,
      h('p', { class: 'field__hint' },
        'Kept in this browser tab only (session storage) and sent in the Authorization header.'),
    ),
    h('div', { class: 'form__actions' }, submit, signOut),
  );

  root.append(h('header', { class: 'page__header' }, h('h1', null, 'Sign in'), who), alertRegion, form);

  function showError(text) {
    alertRegion.replaceChildren(h('div', { class: 'banner banner--error' }, h('p', null, text)));
  }

  function describe(me) {
    if (me.principal === 'open') {
      return 'This server listens on loopback without keys: no sign-in is needed.';
    }
    const scopes = (me.scopes || []).join(', ');
    return me.principal === 'master'
      ? 'Signed in with the master key.'
      : `Signed in with key ${me.key_id} for project ${me.project} (${scopes}).`;
  }

  async function refresh() {
    try {
      const me = await request('/whoami');
      who.textContent = describe(me);
      return me;
    } catch (err) {
      who.textContent = err.status === 401 ? 'Not signed in.' : `Cannot tell who you are: ${err.message}`;
      return null;
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      showError('Paste a key first.');
      input.focus();
      return;
    }
    submit.disabled = true;
    setApiKey(key);
    input.value = '';
    try {
      const me = await request('/whoami');
      alertRegion.replaceChildren();
      who.textContent = describe(me);
      location.hash = takeReturn();
    } catch (err) {
      clearApiKey();
      showError(err.status === 401 ? `That key was refused: ${err.message}` : err.message);
      input.focus();
    } finally {
      submit.disabled = false;
      signOut.hidden = !getApiKey();
    }
  });

  signOut.addEventListener('click', () => {
    clearApiKey();
    signOut.hidden = true;
    alertRegion.replaceChildren();
    refresh();
  });

  refresh();
  input.focus();
}
