// Memories page: browse memories by scope (user / agent / app / run), filter
// them, search them, open one to read, edit, follow its history or delete it,
// and add new ones.
//
//   GET    /api/v1/memories/scopes               the side list of scopes, with counts
//   GET    /api/v1/memories?user_id=…&tier=…&category=…&show_expired=…&offset=…&limit=…
//   POST   /api/v1/memories/search               {query, user_id?, …, tiers?, filters?, top_k, show_expired}
//   GET    /api/v1/memories/{id}
//   PUT    /api/v1/memories/{id}                 {text?, metadata?, tier?, categories?, expiration_date?, immutable?}
//   DELETE /api/v1/memories/{id}
//   GET    /api/v1/memories/{id}/history
//   POST   /api/v1/memories                      {text, user_id|agent_id|app_id|run_id, infer, tier?}
//
// The browsing state (scope, filters, query, page, open memory) is mirrored
// into the hash ("#/memories?user_id=alice&tier=factual&id=…") with
// history.replaceState, so a reload or a shared link shows the same view
// without the router remounting the page. "#/memories/<id>" opens a memory.

import { getJSON, request } from '../api.js';
import { h, srOnly, formatNumber, formatScore, timeElement } from '../ui.js';

export const title = 'Memories';

const PAGE_SIZE = 25;
const SEARCH_STEP = 25;
const MAX_TOP_K = 1000;
const SEARCH_TIMEOUT_MS = 30_000;
const ADD_TIMEOUT_MS = 60_000; // inference may call an LLM

const TIERS = [
  { value: 'working', label: 'Working' },
  { value: 'factual', label: 'Factual' },
  { value: 'episodic', label: 'Episodic' },
  { value: 'semantic', label: 'Semantic' },
];
const SCOPE_TYPES = [
  { type: 'user', param: 'user_id', label: 'User', plural: 'Users' },
  { type: 'agent', param: 'agent_id', label: 'Agent', plural: 'Agents' },
  { type: 'app', param: 'app_id', label: 'App', plural: 'Apps' },
  { type: 'run', param: 'run_id', label: 'Run', plural: 'Runs' },
];
const EVENT_BADGES = {
  ADD: 'badge--ok',
  UPDATE: 'badge--info',
  DELETE: 'badge--error',
  NONE: 'badge--neutral',
};

let instance = 0; // keeps element ids unique if the page is mounted again

export function mount(root, { params = [] } = {}) {
  const uid = `mem${++instance}`;
  const initial = readHashState(params);
  let stopped = false;

  const announcer = h('p', { class: 'visually-hidden', role: 'status' });
  function announce(text) {
    announcer.textContent = '';
    setTimeout(() => { if (!stopped) announcer.textContent = text; }, 50);
  }

  // The view: which scope, which filters, which page, which memory is open.
  const state = {
    scope: initial.scope,           // {type, name} or null for all memories
    tier: initial.tier,
    category: initial.category,
    showExpired: initial.showExpired,
    query: initial.query,
    offset: initial.offset,
    topK: SEARCH_STEP,
    selected: initial.selected,     // memory id or ''
  };

  // =========================================================================
  // Add a memory
  // =========================================================================
  const addText = h('textarea', {
    id: `${uid}-add-text`, class: 'input textarea', rows: 3, required: true, maxlength: 100000,
    placeholder: 'e.g. Prefers tea over coffee',
  });
  const addScopeType = h('select', { id: `${uid}-add-scope-type`, class: 'select select--narrow', 'aria-label': 'Scope type' },
    SCOPE_TYPES.map((s) => h('option', { value: s.type }, s.label)));
  const addScopeName = h('input', {
    id: `${uid}-add-scope`, class: 'input', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false',
    maxlength: 256, placeholder: 'e.g. alice', list: `${uid}-scope-names`,
  });
  const scopeNames = h('datalist', { id: `${uid}-scope-names` });
  const addTier = h('select', { id: `${uid}-add-tier`, class: 'select select--narrow' },
    h('option', { value: '' }, 'Automatic'),
    TIERS.map((t) => h('option', { value: t.value }, t.label)));
  const addInfer = h('input', { id: `${uid}-add-infer`, type: 'checkbox' });
  const addButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Add memory');
  const addAlert = h('div', { class: 'alert-region', role: 'alert' });
  const addResult = h('div', { class: 'alert-region', 'aria-live': 'polite' });

  const addForm = h('form', { class: 'memory-form', onsubmit: onAdd, novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: addText.id }, 'Text'),
      addText,
    ),
    h('div', { class: 'form-row' },
      h('div', { class: 'field' },
        h('label', { for: addScopeName.id }, 'Belongs to'),
        h('div', { class: 'input-group' }, addScopeType, addScopeName, scopeNames),
      ),
      h('div', { class: 'field' },
        h('label', { for: addTier.id }, 'Tier'),
        addTier,
      ),
      h('div', { class: 'field field--check' },
        h('label', { class: 'check', for: addInfer.id }, addInfer, ' Extract facts (infer)'),
        h('span', { class: 'field__hint' }, 'Off: the text is stored as written.'),
      ),
    ),
    h('div', { class: 'form-actions' }, addButton),
    addAlert,
    addResult,
  );
  const addSection = h('details', { class: 'card disclosure', open: initial.adding || null },
    h('summary', { class: 'disclosure__summary' }, h('h2', { class: 'disclosure__title' }, 'Add a memory')),
    addForm,
  );

  async function onAdd(event) {
    event.preventDefault();
    const text = addText.value.trim();
    const name = addScopeName.value.trim();
    if (!text || !name) {
      if (!text) addText.value = '';
      if (!name) addScopeName.value = '';
      addForm.reportValidity();
      return;
    }
    const scopeType = SCOPE_TYPES.find((s) => s.type === addScopeType.value) ?? SCOPE_TYPES[0];
    const body = { text, [scopeType.param]: name, infer: addInfer.checked };
    if (addTier.value) body.tier = addTier.value;

    addButton.disabled = true;
    addButton.textContent = 'Adding…';
    addAlert.replaceChildren();
    addResult.replaceChildren();
    try {
      const data = await request('/memories', { method: 'POST', body, timeoutMs: ADD_TIMEOUT_MS });
      if (stopped) return;
      const results = Array.isArray(data?.results) ? data.results : [];
      const relations = Array.isArray(data?.relations) ? data.relations : [];
      addResult.replaceChildren(addOutcome(results, relations));
      addText.value = '';
      announce(results.length
        ? `${results.length} change${results.length === 1 ? '' : 's'} made.`
        : 'Nothing was added.');
      loadScopes();
      reload();
    } catch (err) {
      if (stopped) return;
      addAlert.replaceChildren(banner(err?.isNetworkError ? 'Server unreachable' : 'Could not add the memory', err?.message));
    } finally {
      if (!stopped) {
        addButton.disabled = false;
        addButton.textContent = 'Add memory';
      }
    }
  }

  function addOutcome(results, relations) {
    return h('div', { class: 'banner banner--ok' },
      h('p', { class: 'banner__title' }, results.length
        ? `${results.length} change${results.length === 1 ? '' : 's'}`
        : 'Nothing was added (no facts found).'),
      results.length
        ? h('ul', { class: 'outcome-list' }, results.map((r) => h('li', null,
          h('span', { class: `badge ${EVENT_BADGES[r.event] ?? 'badge--neutral'}` }, r.event ?? '?'), ' ',
          r.tier ? h('span', { class: 'chip' }, r.tier) : null, ' ',
          r.event !== 'DELETE' && r.id
            ? h('button', { type: 'button', class: 'link-button', onclick: () => select(r.id, true) }, r.memory ?? r.id)
            : h('span', null, r.memory ?? r.id),
        )))
        : null,
      relations.length ? relationList(relations) : null,
    );
  }

  // =========================================================================
  // Scopes (side list)
  // =========================================================================
  const scopesHeading = h('h2', { id: `${uid}-scopes` }, 'Scopes');
  const scopesAlert = h('div', { class: 'alert-region', role: 'alert' });
  const scopesBody = h('div', { class: 'scope-groups' }, h('p', { class: 'muted' }, 'Loading…'));
  const scopesSection = h('nav', { class: 'card scope-nav', 'aria-labelledby': scopesHeading.id },
    h('div', { class: 'card__header' }, scopesHeading,
      h('button', { type: 'button', class: 'btn btn--small', onclick: () => loadScopes() }, 'Refresh')),
    scopesAlert,
    scopesBody,
  );
  let scopes = [];
  const scopesController = new AbortController();

  async function loadScopes() {
    scopesSection.setAttribute('aria-busy', 'true');
    try {
      const data = await getJSON('/memories/scopes', { signal: scopesController.signal });
      if (stopped) return;
      scopes = Array.isArray(data?.scopes) ? data.scopes : [];
      scopesAlert.replaceChildren();
      renderScopes();
    } catch (err) {
      if (stopped || err?.name === 'AbortError') return;
      scopesAlert.replaceChildren(banner('Could not load scopes', err?.message));
      if (!scopes.length) scopesBody.replaceChildren();
    } finally {
      scopesSection.removeAttribute('aria-busy');
    }
  }

  function renderScopes() {
    const isCurrent = (s) => (s === null
      ? state.scope === null
      : state.scope !== null && state.scope.type === s.type && state.scope.name === s.name);
    const scopeButton = (s, label, count) => h('button', {
      type: 'button', class: 'scope-link', 'aria-current': isCurrent(s) ? 'true' : null,
      onclick: () => chooseScope(s),
    }, h('span', { class: 'scope-link__name' }, label),
    count != null ? h('span', { class: 'scope-link__count' }, formatNumber(count), srOnly(count === 1 ? ' memory' : ' memories')) : null);

    const groups = SCOPE_TYPES.map((t) => {
      const items = scopes.filter((s) => s.type === t.type)
        .sort((a, b) => String(a.name).localeCompare(String(b.name)));
      // Keep a scope chosen by a link visible even when it holds nothing (yet).
      if (state.scope?.type === t.type && !items.some((s) => s.name === state.scope.name)) {
        items.push({ type: t.type, name: state.scope.name, memories: null });
      }
      if (!items.length) return null;
      return h('div', { class: 'scope-group' },
        h('h3', { class: 'scope-group__title', id: `${uid}-scopes-${t.type}` }, t.plural),
        h('ul', { class: 'scope-list', 'aria-labelledby': `${uid}-scopes-${t.type}` },
          items.map((s) => h('li', null, scopeButton({ type: s.type, name: s.name }, s.name, s.memories)))));
    }).filter(Boolean);

    scopesBody.replaceChildren(
      h('ul', { class: 'scope-list' }, h('li', null, scopeButton(null, 'All memories', null))),
      ...(groups.length ? groups : [h('p', { class: 'muted' }, 'No memories yet. Add one above.')]),
    );

    const names = [...new Set(scopes.map((s) => s.name))].sort();
    scopeNames.replaceChildren(...names.map((n) => h('option', { value: n })));
  }

  function chooseScope(scope) {
    state.scope = scope;
    state.offset = 0;
    state.topK = SEARCH_STEP;
    renderScopes();
    if (scope) {
      addScopeType.value = scope.type;
      addScopeName.value = scope.name;
    }
    reload(true);
  }

  // =========================================================================
  // Filters
  // =========================================================================
  const queryInput = h('input', {
    id: `${uid}-q`, class: 'input', type: 'search', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'Search the text of memories', maxlength: 2000,
  });
  queryInput.value = state.query;
  const tierSelect = h('select', { id: `${uid}-tier`, class: 'select select--narrow' },
    h('option', { value: '' }, 'All tiers'),
    TIERS.map((t) => h('option', { value: t.value }, t.label)));
  tierSelect.value = state.tier;
  const categoryInput = h('input', {
    id: `${uid}-category`, class: 'input input--medium', type: 'text', autocomplete: 'off', spellcheck: 'false',
    maxlength: 64, placeholder: 'any',
  });
  categoryInput.value = state.category;
  const expiredBox = h('input', { id: `${uid}-expired`, type: 'checkbox' });
  expiredBox.checked = state.showExpired;
  const applyButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Apply');
  const clearButton = h('button', { type: 'button', class: 'btn', onclick: clearFilters }, 'Clear');

  const filterForm = h('form', { class: 'card filter-form', role: 'search', 'aria-label': 'Filter memories', onsubmit: onFilter },
    h('div', { class: 'search-form__row' },
      h('div', { class: 'field field--grow' },
        h('label', { for: queryInput.id }, 'Search'),
        queryInput,
      ),
      h('div', { class: 'field' },
        h('label', { for: tierSelect.id }, 'Tier'),
        tierSelect,
      ),
      h('div', { class: 'field' },
        h('label', { for: categoryInput.id }, 'Category'),
        categoryInput,
      ),
    ),
    h('div', { class: 'search-form__row filter-form__actions' },
      h('label', { class: 'check', for: expiredBox.id }, expiredBox, ' Show expired'),
      h('div', { class: 'form-actions' }, applyButton, clearButton),
    ),
  );
  // Changing a select or the checkbox applies at once; text fields apply on Enter / Apply.
  tierSelect.addEventListener('change', () => onFilter());
  expiredBox.addEventListener('change', () => onFilter());

  function onFilter(event) {
    event?.preventDefault();
    state.query = queryInput.value.trim();
    state.tier = tierSelect.value;
    state.category = categoryInput.value.trim().toLowerCase();
    state.showExpired = expiredBox.checked;
    state.offset = 0;
    state.topK = SEARCH_STEP;
    reload(Boolean(event));
  }

  function clearFilters() {
    queryInput.value = '';
    tierSelect.value = '';
    categoryInput.value = '';
    expiredBox.checked = false;
    onFilter();
  }

  // =========================================================================
  // List / search results
  // =========================================================================
  const listHeading = h('h2', { id: `${uid}-list`, tabindex: -1 }, 'Memories');
  const listMeta = h('p', { class: 'page__meta', 'aria-live': 'polite' });
  const listAlert = h('div', { class: 'alert-region', role: 'alert' });
  const listBody = h('ol', { class: 'memory-list' });
  const prevButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => page(-1) }, '← Previous');
  const nextButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => page(1) }, 'Next →');
  const pageLabel = h('span', { class: 'pager__label' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Memory pages', hidden: true }, prevButton, pageLabel, nextButton);
  const moreButton = h('button', { type: 'button', class: 'btn', hidden: true, onclick: showMore }, 'Show more results');
  const listSection = h('section', { class: 'card', 'aria-labelledby': listHeading.id },
    h('div', { class: 'card__header' }, listHeading, listMeta),
    listAlert,
    listBody,
    pager,
    h('div', { class: 'list-footer' }, moreButton),
  );

  const relationsHeading = h('h2', { id: `${uid}-relations` }, 'Relations');
  const relationsBody = h('div');
  const relationsSection = h('section', { class: 'card', 'aria-labelledby': relationsHeading.id, hidden: true },
    h('div', { class: 'card__header' }, relationsHeading,
      h('p', { class: 'page__meta' }, 'Between entities named in the results')),
    relationsBody,
  );

  let listController = null;
  let shown = []; // memories in the list, in order

  function scopeParams(target) {
    if (state.scope) {
      const t = SCOPE_TYPES.find((s) => s.type === state.scope.type);
      if (t) target[t.param] = state.scope.name;
    }
    return target;
  }

  function describeView() {
    const parts = [];
    if (state.scope) {
      const t = SCOPE_TYPES.find((s) => s.type === state.scope.type);
      parts.push(`${t?.label ?? state.scope.type} “${state.scope.name}”`);
    }
    if (state.tier) parts.push(`tier ${state.tier}`);
    if (state.category) parts.push(`category “${state.category}”`);
    if (state.showExpired) parts.push('expired included');
    return parts.join(' · ');
  }

  async function reload(focusList = false) {
    writeHashState(state);
    listController?.abort();
    const controller = new AbortController();
    listController = controller;
    const searching = Boolean(state.query);

    listSection.setAttribute('aria-busy', 'true');
    listMeta.textContent = searching ? 'Searching…' : 'Loading…';
    prevButton.disabled = true;
    nextButton.disabled = true;
    moreButton.disabled = true;
    applyButton.disabled = true;

    try {
      if (searching) {
        const body = scopeParams({ query: state.query, top_k: state.topK, show_expired: state.showExpired });
        if (state.tier) body.tiers = [state.tier];
        if (state.category) body.filters = { categories: { contains: state.category } };
        const data = await request('/memories/search', {
          method: 'POST', body, signal: controller.signal, timeoutMs: SEARCH_TIMEOUT_MS,
        });
        if (stopped || controller !== listController) return;
        const results = Array.isArray(data?.results) ? data.results : [];
        const relations = Array.isArray(data?.relations) ? data.relations : [];
        shown = results;
        listAlert.replaceChildren();
        renderSearch(results, relations);
      } else {
        const q = scopeParams({});
        if (state.tier) q.tier = state.tier;
        if (state.category) q.category = state.category;
        if (state.showExpired) q.show_expired = 'true';
        q.offset = String(state.offset);
        q.limit = String(PAGE_SIZE);
        const data = await getJSON(`/memories?${new URLSearchParams(q)}`, { signal: controller.signal });
        if (stopped || controller !== listController) return;
        const memories = Array.isArray(data?.memories) ? data.memories : [];
        const total = Number.isFinite(data?.total) ? data.total : memories.length;
        // A page past the end (e.g. after deletions): go back to the last page.
        if (!memories.length && total > 0 && state.offset > 0) {
          state.offset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
          listController = null;
          reload(focusList);
          return;
        }
        shown = memories;
        listAlert.replaceChildren();
        renderList(memories, total);
      }
      if (focusList) listHeading.focus();
    } catch (err) {
      if (stopped || controller !== listController || err?.name === 'AbortError') return;
      shown = [];
      listBody.replaceChildren(h('li', { class: 'memory-list__empty' }, 'No data.'));
      listMeta.textContent = '';
      pager.hidden = true;
      moreButton.hidden = true;
      relationsSection.hidden = true;
      listAlert.replaceChildren(banner(
        err?.isNetworkError ? 'Server unreachable' : (searching ? 'Search failed' : 'Could not load memories'),
        err?.message,
        h('button', { type: 'button', class: 'btn btn--small', onclick: () => reload() }, 'Try again')));
    } finally {
      if (controller === listController) {
        listController = null;
        listSection.removeAttribute('aria-busy');
        moreButton.disabled = false;
        applyButton.disabled = false;
      }
    }
  }

  function renderList(memories, total) {
    relationsSection.hidden = true;
    moreButton.hidden = true;
    listHeading.textContent = 'Memories';
    const view = describeView();
    if (!memories.length) {
      listBody.replaceChildren(h('li', { class: 'memory-list__empty' },
        view ? 'No memories match.' : 'No memories yet. Add one above.'));
      listMeta.textContent = view;
      pager.hidden = true;
      announce('No memories match.');
      return;
    }
    const first = state.offset + 1;
    const last = state.offset + memories.length;
    listBody.start = first;
    listBody.replaceChildren(...memories.map((m) => memoryItem(m)));
    listMeta.textContent = `${formatNumber(first)}–${formatNumber(last)} of ${formatNumber(total)}${view ? ` · ${view}` : ''}`;
    const hasPrev = state.offset > 0;
    const hasNext = last < total;
    pager.hidden = !hasPrev && !hasNext;
    prevButton.disabled = !hasPrev;
    nextButton.disabled = !hasNext;
    pageLabel.textContent = `Page ${formatNumber(Math.floor(state.offset / PAGE_SIZE) + 1)} of ${formatNumber(Math.max(1, Math.ceil(total / PAGE_SIZE)))}`;
    announce(`Showing memories ${first} to ${last} of ${total}.`);
  }

  function renderSearch(results, relations) {
    pager.hidden = true;
    listHeading.textContent = 'Search results';
    const view = describeView();
    if (!results.length) {
      listBody.replaceChildren(h('li', { class: 'memory-list__empty' }, `No memories match “${state.query}”.`));
      listMeta.textContent = view;
      moreButton.hidden = true;
      announce('No results.');
    } else {
      listBody.start = 1;
      listBody.replaceChildren(...results.map((m) => memoryItem(m)));
      listMeta.textContent = `${formatNumber(results.length)} best match${results.length === 1 ? '' : 'es'} for “${state.query}”${view ? ` · ${view}` : ''}`;
      moreButton.hidden = results.length < state.topK || state.topK >= MAX_TOP_K;
      announce(`${results.length} result${results.length === 1 ? '' : 's'}.`);
    }
    relationsSection.hidden = relations.length === 0;
    relationsBody.replaceChildren(relations.length ? relationList(relations) : '');
  }

  function page(direction) {
    state.offset = Math.max(0, state.offset + direction * PAGE_SIZE);
    reload(true);
  }

  function showMore() {
    state.topK = Math.min(MAX_TOP_K, state.topK + SEARCH_STEP);
    reload();
  }

  function memoryItem(m) {
    const expired = isExpired(m);
    const isScored = Number.isFinite(m.score);
    return h('li', { class: `memory-item${m.id === state.selected ? ' is-selected' : ''}`, 'data-id': m.id },
      h('button', {
        type: 'button', class: 'memory-item__text link-button',
        'aria-current': m.id === state.selected ? 'true' : null,
        onclick: () => select(m.id, true),
      }, m.memory || h('span', { class: 'muted' }, '(empty)')),
      h('p', { class: 'memory-item__meta' },
        tierBadge(m.tier),
        scopeChips(m),
        (Array.isArray(m.categories) ? m.categories : []).map((c) => h('span', { class: 'tag' }, c)),
        m.immutable ? h('span', { class: 'badge badge--neutral' }, 'immutable') : null,
        expired ? h('span', { class: 'badge badge--warn' }, 'expired') : null,
        isScored ? h('span', { title: 'Relevance × tier weight × recency' }, `score ${formatScore(m.score)}`) : null,
        h('span', null, 'updated ', timeElement(m.updated_at ?? m.created_at, { dateOnly: true })),
      ),
    );
  }

  function markSelected() {
    for (const li of listBody.querySelectorAll('.memory-item')) {
      const on = li.dataset.id === state.selected;
      li.classList.toggle('is-selected', on);
      const button = li.querySelector('.memory-item__text');
      if (on) button?.setAttribute('aria-current', 'true');
      else button?.removeAttribute('aria-current');
    }
  }

  // =========================================================================
  // One memory: fields, edit, history, delete
  // =========================================================================
  const detailHeading = h('h2', { id: `${uid}-detail`, tabindex: -1 }, 'Memory');
  const detailAlert = h('div', { class: 'alert-region', role: 'alert' });
  const detailBody = h('div', { class: 'memory-detail' });
  const closeButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => select('', true) }, 'Close');
  const detailSection = h('section', { class: 'card detail-card', 'aria-labelledby': detailHeading.id, hidden: true },
    h('div', { class: 'card__header' }, detailHeading, closeButton),
    detailAlert,
    detailBody,
  );
  let detailController = null;

  function select(id, focus) {
    state.selected = id || '';
    writeHashState(state);
    markSelected();
    if (!state.selected) {
      detailController?.abort();
      detailSection.hidden = true;
      detailBody.replaceChildren();
      detailAlert.replaceChildren();
      if (focus !== false) listHeading.focus();
      return;
    }
    loadMemory(state.selected, focus);
  }

  async function loadMemory(id, focus) {
    detailController?.abort();
    const controller = new AbortController();
    detailController = controller;
    detailSection.hidden = false;
    detailSection.setAttribute('aria-busy', 'true');
    detailHeading.textContent = 'Memory';
    detailAlert.replaceChildren();
    detailBody.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    if (focus) detailHeading.focus();

    const [memory, history] = await Promise.allSettled([
      getJSON(`/memories/${encodeURIComponent(id)}`, { signal: controller.signal }),
      getJSON(`/memories/${encodeURIComponent(id)}/history`, { signal: controller.signal }),
    ]);
    if (stopped || controller !== detailController) return;
    detailController = null;
    detailSection.removeAttribute('aria-busy');

    if (memory.status === 'rejected') {
      const err = memory.reason;
      detailBody.replaceChildren(history.status === 'fulfilled' ? historyView(history.value) : '');
      detailAlert.replaceChildren(banner(
        err?.status === 404 ? 'Memory not found' : 'Could not load the memory',
        err?.message,
        err?.status === 404 && history.status === 'fulfilled' ? 'It was deleted; its history is below.' : null));
      return;
    }
    renderDetail(memory.value, history);
  }

  function renderDetail(m, history) {
    detailHeading.textContent = 'Memory';
    detailBody.replaceChildren(
      h('blockquote', { class: 'memory-detail__text' }, m.memory),
      factsView(m),
      editForm(m),
      history.status === 'fulfilled'
        ? historyView(history.value)
        : banner('Could not load the history', history.reason?.message),
      h('div', { class: 'danger-zone' },
        h('button', { type: 'button', class: 'btn btn--danger', onclick: (e) => deleteMemory(m, e.currentTarget) }, 'Delete memory')),
    );
  }

  function factsView(m) {
    const item = (label, value, wide) => h('div', { class: wide ? 'facts__item--wide' : null },
      h('dt', null, label), h('dd', null, value));
    const none = () => h('span', { class: 'muted' }, '—');
    const categories = Array.isArray(m.categories) ? m.categories : [];
    const entities = Array.isArray(m.entities) ? m.entities : [];
    const scopeItems = SCOPE_TYPES.filter((t) => m[t.param]).map((t) => item(t.label, h('span', { class: 'mono break' }, m[t.param])));
    return h('dl', { class: 'facts facts--compact' },
      item('Id', h('span', { class: 'mono break' }, m.id), true),
      item('Tier', tierBadge(m.tier)),
      scopeItems.length ? scopeItems : item('Scope', none()),
      item('Immutable', m.immutable ? 'yes' : 'no'),
      item('Categories', categories.length
        ? h('ul', { class: 'tag-list' }, categories.map((c) => h('li', { class: 'tag' }, c))) : none()),
      item('Entities', entities.length
        ? h('ul', { class: 'tag-list' }, entities.map((c) => h('li', { class: 'chip' }, c))) : none()),
      item('Event time', m.event_time ? timeElement(m.event_time) : none()),
      item('Expiration date', m.expiration_date ? h('span', { class: 'mono' }, m.expiration_date) : none()),
      item('Expires at', m.expires_at
        ? h('span', null, timeElement(m.expires_at), isExpired(m) ? h('span', { class: 'badge badge--warn badge--inline' }, 'expired') : null)
        : none()),
      item('Created', timeElement(m.created_at)),
      item('Updated', timeElement(m.updated_at)),
      item('Metadata', jsonBlock(m.metadata), true),
      item('Provenance', m.provenance != null ? jsonBlock(m.provenance) : none(), true),
    );
  }

  function editForm(m) {
    const fid = `${uid}-edit`;
    const text = h('textarea', { id: `${fid}-text`, class: 'input textarea', rows: 3, required: true });
    text.value = m.memory ?? '';
    const tier = h('select', { id: `${fid}-tier`, class: 'select select--narrow' },
      TIERS.map((t) => h('option', { value: t.value }, t.label)));
    tier.value = m.tier;
    const categories = h('input', {
      id: `${fid}-categories`, class: 'input', type: 'text', autocomplete: 'off', spellcheck: 'false',
      'aria-describedby': `${fid}-categories-hint`,
    });
    categories.value = (m.categories ?? []).join(', ');
    const expiration = h('input', { id: `${fid}-expiration`, class: 'input input--medium', type: 'date', 'aria-describedby': `${fid}-expiration-hint` });
    expiration.value = m.expiration_date ?? '';
    const immutable = h('input', { id: `${fid}-immutable`, type: 'checkbox' });
    immutable.checked = Boolean(m.immutable);
    const metadata = h('textarea', {
      id: `${fid}-metadata`, class: 'input textarea mono', rows: 4, spellcheck: 'false', 'aria-describedby': `${fid}-metadata-hint`,
    });
    metadata.value = JSON.stringify(m.metadata ?? {}, null, 2);
    const save = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Save changes');
    const reset = h('button', { type: 'button', class: 'btn' }, 'Reset');
    const alert = h('div', { class: 'alert-region', role: 'alert' });

    const form = h('form', { class: 'memory-form edit-form', novalidate: true, 'aria-labelledby': `${fid}-heading` },
      h('h3', { id: `${fid}-heading`, class: 'subheading' }, 'Edit'),
      h('div', { class: 'field' },
        h('label', { for: text.id }, 'Text'),
        text,
        m.immutable ? h('span', { class: 'field__hint' }, 'This memory is immutable: its text cannot change.') : null,
      ),
      h('div', { class: 'form-row' },
        h('div', { class: 'field' }, h('label', { for: tier.id }, 'Tier'), tier),
        h('div', { class: 'field field--grow' },
          h('label', { for: categories.id }, 'Categories'),
          categories,
          h('span', { class: 'field__hint', id: `${fid}-categories-hint` }, 'Separate categories with commas.'),
        ),
        h('div', { class: 'field' },
          h('label', { for: expiration.id }, 'Expiration date'),
          expiration,
          h('span', { class: 'field__hint', id: `${fid}-expiration-hint` }, 'Empty: never expires.'),
        ),
        h('div', { class: 'field field--check' },
          h('label', { class: 'check', for: immutable.id }, immutable, ' Immutable'),
        ),
      ),
      h('div', { class: 'field' },
        h('label', { for: metadata.id }, 'Metadata (JSON object)'),
        metadata,
        h('span', { class: 'field__hint', id: `${fid}-metadata-hint` }, 'Replaces the whole metadata object.'),
      ),
      h('div', { class: 'form-actions' }, save, reset),
      alert,
    );

    reset.addEventListener('click', () => {
      text.value = m.memory ?? '';
      tier.value = m.tier;
      categories.value = (m.categories ?? []).join(', ');
      expiration.value = m.expiration_date ?? '';
      immutable.checked = Boolean(m.immutable);
      metadata.value = JSON.stringify(m.metadata ?? {}, null, 2);
      alert.replaceChildren();
    });

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      alert.replaceChildren();
      const update = {};
      const newText = text.value.trim();
      if (!newText) {
        alert.replaceChildren(banner('Cannot save', 'The text must not be empty; delete the memory instead.'));
        text.focus();
        return;
      }
      if (newText !== m.memory) update.text = newText;
      if (tier.value !== m.tier) update.tier = tier.value;
      const cats = splitList(categories.value).map((c) => c.toLowerCase());
      if (!sameList(cats, m.categories ?? [])) update.categories = cats;
      if (expiration.value !== (m.expiration_date ?? '')) update.expiration_date = expiration.value;
      if (immutable.checked !== Boolean(m.immutable)) update.immutable = immutable.checked;
      let meta;
      try {
        meta = JSON.parse(metadata.value.trim() || '{}');
      } catch (err) {
        alert.replaceChildren(banner('Metadata is not valid JSON', err?.message));
        metadata.focus();
        return;
      }
      if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
        alert.replaceChildren(banner('Metadata must be a JSON object', 'For example {"source": "chat"}.'));
        metadata.focus();
        return;
      }
      if (JSON.stringify(meta) !== JSON.stringify(m.metadata ?? {})) update.metadata = meta;
      if (!Object.keys(update).length) {
        alert.replaceChildren(h('div', { class: 'banner banner--info' }, h('p', null, 'Nothing changed.')));
        return;
      }

      save.disabled = true;
      save.textContent = 'Saving…';
      try {
        await request(`/memories/${encodeURIComponent(m.id)}`, { method: 'PUT', body: update });
        if (stopped || state.selected !== m.id) return;
        announce('Memory saved.');
        // Show the saved memory and its new history entry; refresh the list around it.
        await loadMemory(m.id, true);
        if (stopped || state.selected !== m.id) return;
        detailAlert.replaceChildren(h('div', { class: 'banner banner--ok' }, h('p', null, 'Saved.')));
        reload();
        loadScopes();
      } catch (err) {
        if (stopped) return;
        alert.replaceChildren(banner(
          err?.status === 409 ? 'Not saved' : 'Could not save the memory', err?.message));
      } finally {
        if (save.isConnected) {
          save.disabled = false;
          save.textContent = 'Save changes';
        }
      }
    });
    return form;
  }

  function historyView(data) {
    const entries = Array.isArray(data?.history) ? data.history : [];
    return h('section', { class: 'history', 'aria-labelledby': `${uid}-history` },
      h('h3', { id: `${uid}-history`, class: 'subheading' }, 'History'),
      entries.length
        ? h('ol', { class: 'history__list' }, entries.map(historyItem))
        : h('p', { class: 'muted' }, 'No history.'),
    );
  }

  function historyItem(e) {
    const changed = e.old_memory != null && e.new_memory != null && e.old_memory !== e.new_memory;
    // An update's input names the fields it set.
    const fields = e.event === 'UPDATE' && e.input && typeof e.input === 'object' && !Array.isArray(e.input)
      ? Object.keys(e.input) : [];
    return h('li', { class: 'history__entry' },
      h('p', { class: 'history__meta' },
        h('span', { class: `badge ${EVENT_BADGES[e.event] ?? 'badge--neutral'}` }, e.event ?? '?'),
        timeElement(e.created_at),
        e.actor ? h('span', null, 'by ', h('span', { class: 'mono' }, e.actor)) : null,
      ),
      changed
        ? h('div', { class: 'history__change' },
          h('p', { class: 'history__old' }, srOnly('Before: '), h('del', null, e.old_memory)),
          h('p', { class: 'history__new' }, srOnly('After: '), h('ins', null, e.new_memory)))
        : e.event !== 'UPDATE' && (e.new_memory ?? e.old_memory) != null
          ? h('p', { class: 'history__text' }, e.new_memory ?? e.old_memory)
          : null,
      fields.length
        ? h('p', { class: 'history__note muted' }, 'Changed: ', fields.map((f, i) => [i ? ', ' : '', h('span', { class: 'mono' }, f)]))
        : null,
      e.note ? h('p', { class: 'history__note muted' }, 'Note: ', e.note) : null,
    );
  }

  async function deleteMemory(m, button) {
    const preview = m.memory.length > 120 ? `${m.memory.slice(0, 117)}…` : m.memory;
    if (!window.confirm(`Delete this memory?\n\n“${preview}”\n\nIts history is kept. This cannot be undone.`)) return;
    button.disabled = true;
    button.textContent = 'Deleting…';
    try {
      await request(`/memories/${encodeURIComponent(m.id)}`, { method: 'DELETE' });
    } catch (err) {
      if (stopped) return;
      if (err?.status !== 404) { // already gone is as good as deleted
        button.disabled = false;
        button.textContent = 'Delete memory';
        detailAlert.replaceChildren(banner('Could not delete the memory', err?.message));
        return;
      }
    }
    if (stopped) return;
    announce('Memory deleted.');
    select('', true);
    reload();
    loadScopes();
  }

  // =========================================================================
  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Memories'),
      h('p', { class: 'page__meta' }, 'What Nexus remembers about users, agents, apps and runs.'),
    ),
    addSection,
    h('div', { class: 'memories-layout' },
      scopesSection,
      h('div', { class: 'memories-main' },
        filterForm,
        detailSection,
        listSection,
        relationsSection,
      ),
    ),
    announcer,
  );

  if (state.scope) {
    addScopeType.value = state.scope.type;
    addScopeName.value = state.scope.name;
  }
  renderScopes();
  loadScopes();
  reload();
  if (state.selected) loadMemory(state.selected, false);

  return () => {
    stopped = true;
    scopesController.abort();
    listController?.abort();
    detailController?.abort();
  };
}

// ---- helpers -----------------------------------------------------------------

function tierBadge(tier) {
  return h('span', { class: `tier tier--${TIERS.some((t) => t.value === tier) ? tier : 'unknown'}` }, tier ?? '?');
}

function scopeChips(m) {
  return SCOPE_TYPES.filter((t) => m[t.param])
    .map((t) => h('span', { class: 'chip', title: t.param }, `${t.type}: ${m[t.param]}`));
}

function relationList(relations) {
  return h('ul', { class: 'relation-list' }, relations.map((r) => h('li', { class: 'relation' },
    h('span', { class: 'relation__node' }, r.source),
    h('span', { class: 'relation__edge' }, ` — ${r.relationship} → `),
    h('span', { class: 'relation__node' }, r.target),
  )));
}

function jsonBlock(value) {
  const empty = value == null || (typeof value === 'object' && !Array.isArray(value) && !Object.keys(value).length);
  if (empty) return h('span', { class: 'muted' }, '{}');
  return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
}

function isExpired(m) {
  const t = m?.expires_at ? Date.parse(m.expires_at) : NaN;
  return Number.isFinite(t) && t <= Date.now();
}

function splitList(text) {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function banner(title, message, action) {
  return h('div', { class: 'banner banner--error' },
    h('p', { class: 'banner__title' }, title),
    h('p', null, message || 'Unknown error.'),
    action ? h('p', { class: 'banner__actions' }, action) : null);
}

function readHashState(params) {
  const query = location.hash.split('?')[1] ?? '';
  const p = new URLSearchParams(query);
  let scope = null;
  for (const t of SCOPE_TYPES) {
    const name = p.get(t.param);
    if (name) {
      scope = { type: t.type, name };
      break;
    }
  }
  const tier = TIERS.some((t) => t.value === p.get('tier')) ? p.get('tier') : '';
  return {
    scope,
    tier,
    category: p.get('category') ?? '',
    showExpired: p.get('expired') === '1',
    query: p.get('q') ?? '',
    offset: Math.max(0, Math.floor(Number(p.get('offset')) || 0)),
    selected: params[0] ?? p.get('id') ?? '',
    adding: p.get('add') === '1',
  };
}

function writeHashState(state) {
  const p = new URLSearchParams();
  if (state.scope) {
    const t = SCOPE_TYPES.find((s) => s.type === state.scope.type);
    if (t) p.set(t.param, state.scope.name);
  }
  if (state.query) p.set('q', state.query);
  if (state.tier) p.set('tier', state.tier);
  if (state.category) p.set('category', state.category);
  if (state.showExpired) p.set('expired', '1');
  if (state.offset && !state.query) p.set('offset', String(state.offset));
  if (state.selected) p.set('id', state.selected);
  const qs = p.toString();
  const hash = qs ? `#/memories?${qs}` : '#/memories';
  // replaceState does not fire "hashchange", so the router leaves the page alone.
  if (location.hash !== hash) history.replaceState(history.state, '', hash);
}
