// App shell: hash router + left navigation.
//
// Adding a page = one module under ./pages/ plus one entry in ROUTES.
// A page module exports:
//   export const title = 'Search';
//   export function mount(container, { params }) { ...; return cleanup; }
// `container` is an empty element inside <main>; `params` are the extra
// path segments ("#/documents/42" -> ["42"]); `cleanup` (optional) is
// called when the user navigates away (stop timers, abort fetches).

import { rememberReturn } from './pages/login.js';

const ROUTES = [
  { path: 'search', label: 'Search', load: () => import('./pages/search.js') },
  { path: 'documents', label: 'Documents', load: () => import('./pages/documents.js') },
  { path: 'memories', label: 'Memories', load: () => import('./pages/memories.js') },
  { path: 'meetings', label: 'Meetings', load: () => import('./pages/meetings.js') },
  { path: 'graph', label: 'Graph', load: () => import('./pages/graph.js') },
  { path: 'jobs', label: 'Jobs', load: () => import('./pages/jobs.js') },
  { path: 'status', label: 'Status', load: () => import('./pages/status.js') },
  { path: 'projects', label: 'Projects', load: () => import('./pages/projects.js') },
  { path: 'keys', label: 'API keys', load: () => import('./pages/keys.js') },
  { path: 'audit', label: 'Audit log', load: () => import('./pages/audit.js') },
  { path: 'backups', label: 'Backups', load: () => import('./pages/backups.js') },
  { path: 'login', label: 'Sign in', load: () => import('./pages/login.js') },
];
const DEFAULT_ROUTE = 'status';
// Pages served by the server beside the UI (not hash routes).
const LINKS = [{ href: '/docs', label: 'API docs' }];

const nav = document.getElementById('nav');
const main = document.getElementById('main');

let cleanup = null;
let navigationId = 0;
let firstRender = true;

function renderNav() {
  const item = (href, label, route) => {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = href;
    a.textContent = label;
    a.className = 'nav__link';
    if (route) a.dataset.route = route;
    li.append(a);
    return li;
  };
  nav.replaceChildren(
    ...ROUTES.map((route) => item(`#/${route.path}`, route.label, route.path)),
    ...LINKS.map((link) => item(link.href, link.label, null)),
  );
}

// ---- colour theme: the system's (prefers-color-scheme), or light or dark by choice ----
const THEME_STORAGE = 'nexus.theme';
const THEMES = [['auto', 'System'], ['light', 'Light'], ['dark', 'Dark']];

function storedTheme() {
  try {
    const theme = localStorage.getItem(THEME_STORAGE);
    return THEMES.some(([value]) => value === theme) ? theme : 'auto';
  } catch {
    return 'auto'; // storage disabled
  }
}

function applyTheme(theme) {
  if (theme === 'auto') document.documentElement.removeAttribute('data-theme');
  else document.documentElement.dataset.theme = theme;
}

function renderThemePicker() {
  const select = document.getElementById('theme');
  if (!select) return;
  const theme = storedTheme();
  select.replaceChildren(...THEMES.map(([value, label]) => {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = label;
    return option;
  }));
  select.value = theme;
  applyTheme(theme);
  select.addEventListener('change', () => {
    applyTheme(select.value);
    try {
      if (select.value === 'auto') localStorage.removeItem(THEME_STORAGE);
      else localStorage.setItem(THEME_STORAGE, select.value);
    } catch { /* the choice lasts until the page is reloaded */ }
  });
}

function parseHash() {
  // "#/documents/42?x=1" -> { path: "documents", params: ["42"] }
  const raw = location.hash.replace(/^#\/?/, '').split('?')[0];
  const [path = '', ...params] = raw.split('/').filter(Boolean).map(decodeURIComponent);
  return { path, params };
}

function setActive(path) {
  for (const link of nav.querySelectorAll('a[data-route]')) {
    if (link.dataset.route === path) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function showMessage(heading, text) {
  const section = document.createElement('section');
  section.className = 'page';
  const h1 = document.createElement('h1');
  h1.textContent = heading;
  const p = document.createElement('p');
  p.textContent = text;
  section.append(h1, p);
  main.replaceChildren(section);
}

async function route() {
  const { path, params } = parseHash();
  if (!path) {
    location.replace(`#/${DEFAULT_ROUTE}`);
    return;
  }

  const id = ++navigationId;
  if (cleanup) {
    try { cleanup(); } catch (err) { console.error(err); }
    cleanup = null;
  }
  setActive(path);

  const entry = ROUTES.find((r) => r.path === path);
  if (!entry) {
    document.title = 'Not found · Nexus';
    showMessage('Page not found', `There is no page at “#/${path}”. Use the navigation to pick a page.`);
    focusMain();
    return;
  }

  let page;
  try {
    page = await entry.load();
  } catch (err) {
    if (id !== navigationId) return;
    console.error(err);
    showMessage('Could not load page', 'This page failed to load. Reload the browser tab to try again.');
    return;
  }
  if (id !== navigationId) return; // user navigated elsewhere meanwhile

  document.title = `${page.title ?? entry.label} · Nexus`;
  const container = document.createElement('div');
  container.className = 'page';
  main.replaceChildren(container);
  const result = page.mount(container, { params });
  cleanup = typeof result === 'function' ? result : null;
  focusMain();
}

// Move focus to <main> after in-app navigation so keyboard and screen-reader
// users start at the new content; leave focus alone on the initial load.
function focusMain() {
  if (firstRender) {
    firstRender = false;
    return;
  }
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

// The skip link must not change the hash (that would be read as a route).
document.querySelector('[data-skip-link]')?.addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

// A 401 from any request: go to the sign-in page, and come back here afterwards.
window.addEventListener('nexus:unauthorized', () => {
  if (parseHash().path === 'login') return;
  rememberReturn(location.hash);
  location.hash = '#/login';
});

renderNav();
renderThemePicker();
window.addEventListener('hashchange', route);
route();
