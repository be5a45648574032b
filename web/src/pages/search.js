// Search page: one query over documents, memories and meetings. Documents
// through POST /api/v1/search (hybrid / keyword / semantic, collection and tags
// filters, pagination), memories through POST /api/v1/memories/search (the
// same mode, filtered by user and agent), meetings through POST /api/v1/search
// with sources ["meetings"] (passages of consecutive turns, filtered by
// speaker); the groups are shown side by side.
// "Ask": POST /api/v1/ask read as a server-sent event stream (citations, then
// deltas, then done/error) rendered as it arrives.
//
// The form state is mirrored into the hash ("#/search?q=...&mode=...") with
// history.replaceState, so reloading or sharing the URL repeats the search
// without the router remounting the page.

import { getJSON, request, streamEvents } from '../api.js';
import { h, srOnly, formatNumber, formatScore, snippetNodes, timeElement } from '../ui.js';

export const title = 'Search';

const MODES = [
  { value: 'hybrid', label: 'Hybrid' },
  { value: 'keyword', label: 'Keyword' },
  { value: 'semantic', label: 'Semantic' },
];
const SOURCES = [
  { value: 'documents', label: 'Documents' },
  { value: 'memories', label: 'Memories' },
  { value: 'meetings', label: 'Meetings' },
];
const DEFAULT_TOP_K = 10;
const MAX_TOP_K = 100;
const SEARCH_TIMEOUT_MS = 30_000;

// "[1]", "[2, 3]" in an answer are citation markers.
const MARKER_RE = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
// A tail that may still become a marker when the next delta arrives.
const PARTIAL_MARKER_RE = /\[[\d,\s]*$/;

let instance = 0; // keeps element ids unique if the page is mounted again

export function mount(root) {
  const uid = `search${++instance}`;
  const initial = readHashState();

  // ---- form ----
  const queryInput = h('input', {
    id: `${uid}-q`, class: 'input', type: 'search', name: 'q', required: true,
    autocomplete: 'off', spellcheck: 'false', placeholder: 'What are you looking for?',
  });
  queryInput.value = initial.query;

  const modeRadios = MODES.map((m) => {
    const input = h('input', { type: 'radio', name: `${uid}-mode`, value: m.value, class: 'segmented__input' });
    input.checked = m.value === initial.mode;
    return h('label', { class: 'segmented__option' }, input, h('span', null, m.label));
  });

  const collectionSelect = h('select', { id: `${uid}-collection`, class: 'select' },
    h('option', { value: '' }, 'All collections'));
  if (initial.collection) collectionSelect.append(h('option', { value: initial.collection }, initial.collection));
  collectionSelect.value = initial.collection;
  const collectionNote = h('span', { class: 'field__hint', id: `${uid}-collection-note` });

  const tagsInput = h('input', {
    id: `${uid}-tags`, class: 'input input--medium', type: 'text', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'any', 'aria-describedby': `${uid}-tags-hint`,
  });
  tagsInput.value = initial.tags.join(', ');
  const userInput = h('input', {
    id: `${uid}-user`, class: 'input input--medium', type: 'text', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'any', maxlength: 256,
  });
  userInput.value = initial.userId;
  const agentInput = h('input', {
    id: `${uid}-agent`, class: 'input input--medium', type: 'text', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'any', maxlength: 256,
  });
  agentInput.value = initial.agentId;
  const speakerInput = h('input', {
    id: `${uid}-speaker`, class: 'input input--medium', type: 'text', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'anyone', maxlength: 256,
  });
  speakerInput.value = initial.speaker;
  const sourceBoxes = SOURCES.map((src) => {
    const input = h('input', { type: 'checkbox', id: `${uid}-in-${src.value}`, value: src.value });
    input.checked = initial.sources.includes(src.value);
    return input;
  });

  const topKInput = h('input', {
    id: `${uid}-topk`, class: 'input input--narrow', type: 'number', min: 1, max: MAX_TOP_K, step: 1,
    inputmode: 'numeric', required: true,
  });
  topKInput.value = String(initial.topK);

  const searchButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Search');
  const askButton = h('button', { type: 'button', class: 'btn', onclick: onAskClick }, 'Ask');

  const form = h('form', { class: 'search-form card', role: 'search', 'aria-label': 'Search documents, memories and meetings', onsubmit: onSubmit },
    h('div', { class: 'search-form__row' },
      h('div', { class: 'field field--grow' },
        h('label', { for: queryInput.id }, 'Query'),
        queryInput,
      ),
      h('div', { class: 'search-form__actions' }, searchButton, askButton),
    ),
    h('div', { class: 'search-form__row' },
      h('fieldset', { class: 'field' },
        h('legend', null, 'Search in'),
        h('div', { class: 'checks checks--boxed' },
          sourceBoxes.map((box, i) => h('label', { class: 'check', for: box.id }, box, ` ${SOURCES[i].label}`))),
      ),
      h('fieldset', { class: 'field segmented' },
        h('legend', null, 'Mode'),
        h('div', { class: 'segmented__options' }, modeRadios),
      ),
      h('div', { class: 'field' },
        h('label', { for: topKInput.id }, 'Results per page'),
        topKInput,
      ),
    ),
    h('div', { class: 'search-form__row' },
      h('fieldset', { class: 'field filter-group' },
        h('legend', null, 'Document filters'),
        h('div', { class: 'search-form__row' },
          h('div', { class: 'field' },
            h('label', { for: collectionSelect.id }, 'Collection'),
            collectionSelect,
            collectionNote,
          ),
          h('div', { class: 'field' },
            h('label', { for: tagsInput.id }, 'Tags'),
            tagsInput,
            h('span', { class: 'field__hint', id: `${uid}-tags-hint` }, 'All of these; separate with commas.'),
          ),
        ),
      ),
      h('fieldset', { class: 'field filter-group' },
        h('legend', null, 'Memory filters'),
        h('div', { class: 'search-form__row' },
          h('div', { class: 'field' },
            h('label', { for: userInput.id }, 'User id'),
            userInput,
          ),
          h('div', { class: 'field' },
            h('label', { for: agentInput.id }, 'Agent id'),
            agentInput,
          ),
        ),
      ),
      h('fieldset', { class: 'field filter-group' },
        h('legend', null, 'Meeting filters'),
        h('div', { class: 'search-form__row' },
          h('div', { class: 'field' },
            h('label', { for: speakerInput.id }, 'Speaker'),
            speakerInput,
          ),
        ),
      ),
    ),
  );

  // ---- answer panel (Ask) ----
  const answer = buildAnswerPanel(uid);

  // ---- results ----
  const resultsHeading = h('h2', { id: `${uid}-results`, tabindex: -1 }, 'Documents');
  const resultsMeta = h('p', { class: 'page__meta' });
  const resultsAlert = h('div', { class: 'alert-region', role: 'alert' });
  const resultsList = h('ol', { class: 'results' });
  const prevButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => page(-1) }, '← Previous');
  const nextButton = h('button', { type: 'button', class: 'btn btn--small', onclick: () => page(1) }, 'Next →');
  const pageLabel = h('span', { class: 'pager__label' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Result pages', hidden: true }, prevButton, pageLabel, nextButton);
  const resultsSection = h('section', { class: 'card results-card', 'aria-labelledby': resultsHeading.id, hidden: true },
    h('div', { class: 'card__header' }, resultsHeading, resultsMeta),
    resultsAlert,
    resultsList,
    pager,
  );

  // ---- memory results ----
  const memHeading = h('h2', { id: `${uid}-memories`, tabindex: -1 }, 'Memories');
  const memMeta = h('p', { class: 'page__meta' });
  const memAlert = h('div', { class: 'alert-region', role: 'alert' });
  const memList = h('ol', { class: 'results' });
  const memSection = h('section', { class: 'card results-card', 'aria-labelledby': memHeading.id, hidden: true },
    h('div', { class: 'card__header' }, memHeading, memMeta),
    memAlert,
    memList,
  );

  // ---- meeting results ----
  const meetHeading = h('h2', { id: `${uid}-meetings`, tabindex: -1 }, 'Meetings');
  const meetMeta = h('p', { class: 'page__meta' });
  const meetAlert = h('div', { class: 'alert-region', role: 'alert' });
  const meetList = h('ol', { class: 'results' });
  const meetSection = h('section', { class: 'card results-card', 'aria-labelledby': meetHeading.id, hidden: true },
    h('div', { class: 'card__header' }, meetHeading, meetMeta),
    meetAlert,
    meetList,
  );

  // Screen-reader announcements (result counts, answer finished).
  const announcer = h('p', { class: 'visually-hidden', role: 'status' });

  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Search'),
      h('p', { class: 'page__meta' }, 'Find passages in your documents, what Nexus remembers and what was said in meetings, or ask a question about your documents.'),
    ),
    form,
    answer.section,
    h('div', { class: 'results-groups' }, resultsSection, memSection, meetSection),
    announcer,
  );

  // ---- state ----
  let stopped = false;
  let searchController = null;
  let askController = null;
  let memController = null;
  let meetController = null;
  let current = null; // the search shown: { query, mode, topK, collection, tags, userId, agentId, sources, offset }

  function readForm() {
    const mode = modeRadios.map((l) => l.querySelector('input')).find((i) => i.checked)?.value ?? 'hybrid';
    const topK = clampTopK(Number(topKInput.value));
    topKInput.value = String(topK);
    return {
      query: queryInput.value.trim(),
      mode,
      topK,
      collection: collectionSelect.value,
      tags: splitList(tagsInput.value),
      userId: userInput.value.trim(),
      agentId: agentInput.value.trim(),
      speaker: speakerInput.value.trim(),
      sources: sourceBoxes.filter((b) => b.checked).map((b) => b.value),
    };
  }

  function bodyFor(state) {
    const body = { query: state.query, mode: state.mode, top_k: state.topK, offset: state.offset };
    const filters = {};
    if (state.collection) filters.collection = state.collection;
    if (state.tags.length) filters.tags = state.tags;
    if (Object.keys(filters).length) body.filters = filters;
    return body;
  }

  function memoryBodyFor(state) {
    const body = { query: state.query, mode: state.mode, top_k: state.topK, relations: false };
    if (state.userId) body.user_id = state.userId;
    if (state.agentId) body.agent_id = state.agentId;
    return body;
  }

  function meetingBodyFor(state) {
    const body = { query: state.query, mode: state.mode, top_k: state.topK, sources: ['meetings'] };
    if (state.speaker) body.filters = { speaker: state.speaker };
    return body;
  }

  function announce(text) {
    announcer.textContent = '';
    // A fresh text node after clearing makes repeated messages be read again.
    setTimeout(() => { if (!stopped) announcer.textContent = text; }, 50);
  }

  // ---- search ----
  function onSubmit(event) {
    event.preventDefault();
    const state = readForm();
    if (!state.query) {
      queryInput.value = '';
      form.reportValidity();
      return;
    }
    if (!state.sources.length) {
      sourceBoxes[0].setCustomValidity('Choose at least one of documents, memories and meetings.');
      sourceBoxes[0].reportValidity();
      return;
    }
    runSearch({ ...state, offset: 0 }, false);
    runMemorySearch(state);
    runMeetingSearch(state);
  }
  for (const box of sourceBoxes) box.addEventListener('change', () => sourceBoxes[0].setCustomValidity(''));

  function page(direction) {
    if (!current) return;
    const offset = Math.max(0, current.offset + direction * current.topK);
    runSearch({ ...current, offset }, true);
  }

  async function runSearch(state, focusResults) {
    searchController?.abort();
    writeHashState(state);
    if (!state.sources.includes('documents')) {
      searchController = null;
      current = state;
      resultsSection.hidden = true;
      return;
    }
    const controller = new AbortController();
    searchController = controller;

    resultsSection.hidden = false;
    resultsSection.setAttribute('aria-busy', 'true');
    resultsMeta.textContent = 'Searching…';
    searchButton.disabled = true;
    prevButton.disabled = true;
    nextButton.disabled = true;

    let data;
    try {
      data = await request('/search', {
        method: 'POST', body: bodyFor(state), signal: controller.signal, timeoutMs: SEARCH_TIMEOUT_MS,
      });
    } catch (err) {
      if (controller !== searchController || stopped) return;
      current = null;
      resultsList.replaceChildren();
      pager.hidden = true;
      resultsMeta.textContent = '';
      resultsAlert.replaceChildren(errorBanner('Search failed', err));
      return;
    } finally {
      if (controller === searchController) {
        searchController = null;
        searchButton.disabled = false;
        resultsSection.removeAttribute('aria-busy');
      }
    }
    if (stopped) return;

    current = state;
    resultsAlert.replaceChildren();
    const results = Array.isArray(data?.results) ? data.results : [];
    renderResults(state, results);
    if (focusResults) resultsHeading.focus();
  }

  async function runMemorySearch(state) {
    memController?.abort();
    if (!state.sources.includes('memories')) {
      memController = null;
      memSection.hidden = true;
      return;
    }
    const controller = new AbortController();
    memController = controller;
    memSection.hidden = false;
    memSection.setAttribute('aria-busy', 'true');
    memMeta.textContent = 'Searching…';
    let data;
    try {
      data = await request('/memories/search', {
        method: 'POST', body: memoryBodyFor(state), signal: controller.signal, timeoutMs: SEARCH_TIMEOUT_MS,
      });
    } catch (err) {
      if (controller !== memController || stopped) return;
      memList.replaceChildren();
      memMeta.textContent = '';
      memAlert.replaceChildren(errorBanner('Memory search failed', err));
      return;
    } finally {
      if (controller === memController) {
        memController = null;
        memSection.removeAttribute('aria-busy');
      }
    }
    if (stopped) return;
    memAlert.replaceChildren();
    const results = Array.isArray(data?.results) ? data.results : [];
    const scope = [state.userId && `user “${state.userId}”`, state.agentId && `agent “${state.agentId}”`]
      .filter(Boolean).join(' · ');
    if (!results.length) {
      memMeta.textContent = scope;
      memList.replaceChildren(h('li', { class: 'results__empty' }, `No memories match “${state.query}”.`));
      announce('No memories match.');
    } else {
      memMeta.textContent = `${formatNumber(results.length)} best match${results.length === 1 ? '' : 'es'}${scope ? ` · ${scope}` : ''}`;
      memList.replaceChildren(...results.map(memoryResultItem));
      announce(`${results.length} memor${results.length === 1 ? 'y' : 'ies'} found.`);
    }
  }

  async function runMeetingSearch(state) {
    meetController?.abort();
    if (!state.sources.includes('meetings')) {
      meetController = null;
      meetSection.hidden = true;
      return;
    }
    const controller = new AbortController();
    meetController = controller;
    meetSection.hidden = false;
    meetSection.setAttribute('aria-busy', 'true');
    meetMeta.textContent = 'Searching…';
    let data;
    try {
      data = await request('/search', {
        method: 'POST', body: meetingBodyFor(state), signal: controller.signal, timeoutMs: SEARCH_TIMEOUT_MS,
      });
    } catch (err) {
      if (controller !== meetController || stopped) return;
      meetList.replaceChildren();
      meetMeta.textContent = '';
      meetAlert.replaceChildren(errorBanner('Meeting search failed', err));
      return;
    } finally {
      if (controller === meetController) {
        meetController = null;
        meetSection.removeAttribute('aria-busy');
      }
    }
    if (stopped) return;
    meetAlert.replaceChildren();
    const results = Array.isArray(data?.results) ? data.results : [];
    // Each result names its meeting by id; its title comes from the meeting itself.
    const titles = new Map();
    await Promise.all([...new Set(results.map((r) => r.meeting_id).filter(Boolean))].map(async (id) => {
      try {
        const meeting = await getJSON(`/meetings/${encodeURIComponent(id)}`, { signal: controller.signal });
        if (meeting?.title) titles.set(id, meeting.title);
      } catch {
        // a meeting deleted meanwhile keeps the generic heading
      }
    }));
    if (stopped || controller.signal.aborted) return;
    const scope = state.speaker ? `speaker “${state.speaker}”` : '';
    if (!results.length) {
      meetMeta.textContent = scope;
      meetList.replaceChildren(h('li', { class: 'results__empty' }, `Nothing said in meetings matches “${state.query}”.`));
      announce('No meeting passages match.');
    } else {
      meetMeta.textContent = `${formatNumber(results.length)} best match${results.length === 1 ? '' : 'es'}${scope ? ` · ${scope}` : ''}`;
      meetList.replaceChildren(...results.map((r) => meetingResultItem(r, titles.get(r.meeting_id))));
      announce(`${results.length} meeting passage${results.length === 1 ? '' : 's'} found.`);
    }
  }

  function renderResults(state, results) {
    const first = state.offset + 1;
    const last = state.offset + results.length;
    const modeLabel = MODES.find((m) => m.value === state.mode)?.label ?? state.mode;
    const scope = (state.collection ? ` in “${state.collection}”` : '')
      + (state.tags.length ? ` tagged ${state.tags.map((t) => `“${t}”`).join(', ')}` : '');

    if (results.length === 0) {
      resultsMeta.textContent = `${modeLabel} search${scope}`;
      const text = state.offset === 0
        ? `No results for “${state.query}”.`
        : 'No more results.';
      resultsList.replaceChildren(h('li', { class: 'results__empty' }, text));
      announce(text);
    } else {
      resultsMeta.textContent = `${formatNumber(first)}–${formatNumber(last)} · ${modeLabel} search${scope}`;
      resultsList.start = first;
      resultsList.replaceChildren(...results.map((r) => resultItem(r, state.mode)));
      announce(`Showing documents ${first} to ${last}.`);
    }

    const hasPrev = state.offset > 0;
    const hasNext = results.length >= state.topK;
    pager.hidden = !hasPrev && !hasNext;
    prevButton.disabled = !hasPrev;
    nextButton.disabled = !hasNext;
    pageLabel.textContent = `Page ${formatNumber(Math.floor(state.offset / state.topK) + 1)}`;
  }

  // ---- ask ----
  function onAskClick() {
    if (askController) {
      askController.abort();
      return;
    }
    const state = readForm();
    if (!state.query) {
      queryInput.value = '';
      form.reportValidity();
      return;
    }
    runAsk({ ...state, offset: 0 });
  }

  async function runAsk(state) {
    const controller = new AbortController();
    askController = controller;
    askButton.textContent = 'Stop';
    askButton.setAttribute('aria-label', 'Stop answering');
    writeHashState({ ...state, offset: current?.offset ?? 0 });

    const view = answer.start(state.query);
    let finished = false;
    try {
      await streamEvents('/ask', {
        body: bodyFor(state),
        signal: controller.signal,
        onEvent(ev) {
          if (stopped || controller !== askController) return;
          let data = null;
          try {
            data = ev.data ? JSON.parse(ev.data) : null;
          } catch {
            return; // ignore a malformed event rather than abandon the answer
          }
          if (ev.event === 'citations') view.citations(Array.isArray(data?.citations) ? data.citations : []);
          else if (ev.event === 'delta') view.delta(typeof data?.text === 'string' ? data.text : '');
          else if (ev.event === 'done') {
            finished = true;
            view.done(data?.mode);
            announce('The answer is complete.');
          } else if (ev.event === 'error') {
            finished = true;
            const e = data?.error;
            view.fail('The answer failed', e?.message || 'The server reported an error.');
            announce('The answer failed.');
          }
        },
      });
      if (!finished && !stopped) {
        view.fail('The answer stopped early', 'The server closed the stream before the answer was complete.');
      }
    } catch (err) {
      if (stopped) return;
      if (err?.name === 'AbortError') view.stopped();
      else view.fail(err?.isNetworkError ? 'Server unreachable' : 'The answer failed', err?.message || 'Unknown error.');
    } finally {
      if (controller === askController) {
        askController = null;
        askButton.textContent = 'Ask';
        askButton.removeAttribute('aria-label');
      }
    }
  }

  // ---- collections ----
  const collectionsController = new AbortController();
  getJSON('/collections', { signal: collectionsController.signal })
    .then((data) => {
      const list = Array.isArray(data?.collections) ? data.collections : [];
      const selected = collectionSelect.value;
      const names = new Set(list.map((c) => c.name));
      collectionSelect.replaceChildren(
        h('option', { value: '' }, 'All collections'),
        ...list.map((c) => h('option', { value: c.name },
          Number.isFinite(c.documents) ? `${c.name} (${formatNumber(c.documents)})` : c.name)),
        // keep a collection from the URL even if the server no longer lists it
        selected && !names.has(selected) ? h('option', { value: selected }, selected) : null,
      );
      collectionSelect.value = selected;
    })
    .catch((err) => {
      if (stopped || err?.name === 'AbortError') return;
      collectionNote.textContent = 'Collections could not be loaded.';
      collectionSelect.setAttribute('aria-describedby', collectionNote.id);
    });

  // Repeat the search from the URL (reload, shared link, back navigation).
  if (initial.query) {
    const state = readForm();
    runSearch({ ...state, offset: initial.offset }, false);
    runMemorySearch(state);
    runMeetingSearch(state);
  }

  return () => {
    stopped = true;
    searchController?.abort();
    memController?.abort();
    meetController?.abort();
    askController?.abort();
    collectionsController.abort();
  };
}

// ---- one search result ------------------------------------------------------

function memoryResultItem(m) {
  const scopes = ['user_id', 'agent_id', 'app_id', 'run_id'].filter((k) => m[k]);
  return h('li', { class: 'result' },
    h('h3', { class: 'result__title' },
      h('a', { href: `#/memories/${encodeURIComponent(m.id)}` }, m.memory || '(empty)')),
    h('p', { class: 'result__meta' },
      m.tier ? h('span', { class: `tier tier--${m.tier}` }, srOnly('Tier: '), m.tier) : null,
      scopes.map((k) => h('span', { class: 'chip' }, `${k.replace('_id', '')}: ${m[k]}`)),
      (Array.isArray(m.categories) ? m.categories : []).map((c) => h('span', { class: 'tag' }, c)),
      h('span', null, 'updated ', timeElement(m.updated_at ?? m.created_at, { dateOnly: true })),
    ),
    h('dl', { class: 'scores', 'aria-label': 'Scores' },
      scoreItem('Score', formatScore(m.score), m.score)),
  );
}

function meetingResultItem(r, title) {
  const speakers = Array.isArray(r.speakers) ? r.speakers : (r.speaker ? [r.speaker] : []);
  const at = Number.isFinite(r.start_ms) ? formatClock(r.start_ms) : null;
  return h('li', { class: 'result' },
    h('h3', { class: 'result__title' }, r.meeting_id
      ? h('a', { href: `#/meetings/${encodeURIComponent(r.meeting_id)}` }, title || 'Meeting')
      : title || 'Meeting'),
    h('p', { class: 'result__meta' },
      speakers.map((s) => h('span', { class: 'chip' }, srOnly('Speaker: '), s)),
      at ? h('span', null, `at ${at}`) : null,
      Number.isFinite(r.seq_start) ? h('span', { class: 'mono' }, `turns ${r.seq_start}–${r.seq_end ?? r.seq_start}`) : null,
    ),
    r.snippet ? h('p', { class: 'snippet' }, snippetNodes(r.snippet)) : null,
    h('dl', { class: 'scores', 'aria-label': 'Scores' },
      scoreItem('Score', formatScore(r.score), r.score)),
  );
}

// "1:05:09" or "5:09" from milliseconds since the meeting's start.
function formatClock(ms) {
  const total = Math.floor(ms / 1000);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

function resultItem(r, mode) {
  const heading = r.title || r.source || r.document_id || 'Untitled';
  const scores = r.scores && typeof r.scores === 'object' ? r.scores : {};
  return h('li', { class: 'result' },
    h('h3', { class: 'result__title' }, heading),
    h('p', { class: 'result__meta' },
      r.source && r.source !== heading ? h('span', { class: 'mono break' }, r.source) : null,
      r.collection ? h('span', { class: 'chip' }, srOnly('Collection: '), r.collection) : null,
    ),
    r.snippet ? h('p', { class: 'snippet' }, snippetNodes(r.snippet)) : null,
    h('dl', { class: 'scores', 'aria-label': 'Scores' },
      scoreItem('Score', formatScore(r.score), r.score),
      // A retriever the mode did not use is left out; in hybrid mode a missing
      // side means that retriever did not find this passage.
      mode !== 'semantic' || Number.isFinite(scores.keyword_rank)
        ? rankItem('Keyword', scores.keyword_rank, scores.keyword_score) : null,
      mode !== 'keyword' || Number.isFinite(scores.semantic_rank)
        ? rankItem('Semantic', scores.semantic_rank, scores.semantic_score) : null,
      // "Fused" is shown only when it is not already the score above.
      Number.isFinite(scores.fused) && scores.fused !== r.score
        ? scoreItem('Fused', formatScore(scores.fused), scores.fused) : null,
    ),
  );
}

function scoreItem(label, text, raw) {
  return h('div', { class: 'scores__item' },
    h('dt', null, label),
    h('dd', { title: Number.isFinite(raw) ? String(raw) : null }, text));
}

function rankItem(label, rank, score) {
  if (!Number.isFinite(rank) && !Number.isFinite(score)) {
    return h('div', { class: 'scores__item scores__item--none' },
      h('dt', null, label), h('dd', null, '—', srOnly(' (no match)')));
  }
  return h('div', { class: 'scores__item' },
    h('dt', null, label),
    h('dd', { title: Number.isFinite(score) ? String(score) : null },
      Number.isFinite(rank) ? `#${formatNumber(rank)}` : null,
      Number.isFinite(rank) && Number.isFinite(score) ? ' · ' : null,
      Number.isFinite(score) ? formatScore(score) : null,
    ));
}

// ---- the answer panel -------------------------------------------------------

function buildAnswerPanel(uid) {
  const heading = h('h2', { id: `${uid}-answer`, tabindex: -1 }, 'Answer');
  const badge = h('span');
  const question = h('p', { class: 'answer__question' });
  const statusLine = h('p', { class: 'page__meta answer__status' });
  const text = h('div', { class: 'answer__text', 'aria-live': 'polite' });
  const alert = h('div', { class: 'alert-region', role: 'alert' });
  const sourcesHeading = h('h3', { class: 'answer__sources-heading', id: `${uid}-sources` }, 'Sources');
  const sourcesList = h('ol', { class: 'citations', 'aria-labelledby': sourcesHeading.id });
  const sources = h('div', { class: 'answer__sources', hidden: true }, sourcesHeading, sourcesList);

  const section = h('section', { class: 'card answer', 'aria-labelledby': heading.id, hidden: true },
    h('div', { class: 'card__header' }, heading, badge),
    question,
    statusLine,
    text,
    alert,
    sources,
  );

  function start(query) {
    section.hidden = false;
    badge.replaceChildren();
    question.replaceChildren(h('span', { class: 'muted' }, 'Question: '), query);
    statusLine.textContent = 'Looking for sources…';
    statusLine.classList.add('is-working');
    text.replaceChildren();
    text.setAttribute('aria-busy', 'true'); // read the answer once, when it is complete
    alert.replaceChildren();
    sources.hidden = true;
    sourcesList.replaceChildren();

    const known = new Map(); // citation number -> list item id
    let pending = ''; // text held back because it may be the start of a marker
    let received = false;

    function appendText(chunk) {
      let last = 0;
      for (const m of chunk.matchAll(MARKER_RE)) {
        const numbers = m[1].split(',').map((s) => Number(s.trim()));
        if (!numbers.every((n) => known.has(n))) continue; // not a citation we know: keep as text
        if (m.index > last) text.append(chunk.slice(last, m.index));
        text.append(markerNode(numbers));
        last = m.index + m[0].length;
      }
      if (last < chunk.length) text.append(chunk.slice(last));
    }

    function markerNode(numbers) {
      return h('span', { class: 'cite-group' },
        numbers.map((n) => {
          const target = known.get(n);
          return h('a', {
            class: 'cite', href: `#${target}`,
            title: document.getElementById(target)?.dataset.title || `Source ${n}`,
            onclick: (e) => {
              // The router owns the hash: scroll and focus instead of navigating.
              e.preventDefault();
              const item = document.getElementById(target);
              if (!item) return;
              item.scrollIntoView({ block: 'nearest', behavior: prefersReducedMotion() ? 'auto' : 'smooth' });
              item.focus({ preventScroll: true });
              item.classList.remove('is-flashing');
              void item.offsetWidth; // restart the animation
              item.classList.add('is-flashing');
            },
          }, `[${n}]`, srOnly(` source ${n}`));
        }));
    }

    function flush(all) {
      let hold = pending.length;
      if (!all) {
        const m = PARTIAL_MARKER_RE.exec(pending);
        if (m && pending.length - m.index <= 24) hold = m.index;
      }
      const out = pending.slice(0, hold);
      pending = pending.slice(hold);
      if (out) appendText(out);
    }

    function finish() {
      flush(true);
      statusLine.classList.remove('is-working');
      text.removeAttribute('aria-busy');
    }

    return {
      citations(list) {
        sourcesList.replaceChildren(...list.map((c, i) => {
          const n = Number.isInteger(c?.n) ? c.n : i + 1;
          const id = `${uid}-cite-${n}`;
          known.set(n, id);
          const name = c.title || c.source || c.document_id || `Source ${n}`;
          return h('li', { id, value: n, tabindex: -1, class: 'citation', 'data-title': name },
            h('span', { class: 'citation__title' }, name),
            c.source && c.source !== name ? h('span', { class: 'citation__source mono break' }, c.source) : null,
            c.snippet ? h('p', { class: 'snippet' }, snippetNodes(c.snippet)) : null,
          );
        }));
        sources.hidden = list.length === 0;
        statusLine.textContent = list.length
          ? `Writing the answer from ${list.length} source${list.length === 1 ? '' : 's'}…`
          : 'No matching sources found; writing the answer…';
      },
      delta(chunk) {
        if (!chunk) return;
        if (!received) {
          received = true;
          if (!known.size) statusLine.textContent = 'Writing the answer…';
        }
        pending += chunk;
        flush(false);
      },
      done(mode) {
        finish();
        if (mode === 'llm') {
          badge.replaceChildren(h('span', { class: 'badge badge--info' }, 'Generated'));
          statusLine.textContent = 'Written by the language model from the sources below. Check important facts against them.';
        } else if (mode === 'extractive') {
          badge.replaceChildren(h('span', { class: 'badge badge--neutral' }, 'Extractive'));
          statusLine.textContent = 'Assembled from passages of the sources below; no language model was used.';
        } else {
          statusLine.textContent = 'Answer complete.';
        }
        if (!received) text.append(h('span', { class: 'muted' }, 'No answer was produced.'));
      },
      stopped() {
        finish();
        statusLine.textContent = 'Stopped. The answer above is incomplete.';
      },
      fail(title, message) {
        finish();
        statusLine.textContent = received ? 'The answer above is incomplete.' : '';
        alert.replaceChildren(h('div', { class: 'banner banner--error' },
          h('p', { class: 'banner__title' }, title),
          h('p', null, message)));
      },
    };
  }

  return { section, start };
}

// ---- helpers ------------------------------------------------------------------

function errorBanner(title, err) {
  const network = err?.isNetworkError;
  return h('div', { class: 'banner banner--error' },
    h('p', { class: 'banner__title' }, network ? 'Server unreachable' : title),
    h('p', null, err?.message || 'Unknown error.'));
}

function clampTopK(n) {
  if (!Number.isFinite(n)) return DEFAULT_TOP_K;
  return Math.min(MAX_TOP_K, Math.max(1, Math.round(n)));
}

function prefersReducedMotion() {
  return window.matchMedia?.('(prefers-reduced-motion: reduce)').matches ?? false;
}

function splitList(text) {
  return text.split(',').map((t) => t.trim()).filter(Boolean);
}

function readHashState() {
  const query = location.hash.split('?')[1] ?? '';
  const p = new URLSearchParams(query);
  const mode = MODES.some((m) => m.value === p.get('mode')) ? p.get('mode') : 'hybrid';
  const topK = p.has('top_k') ? clampTopK(Number(p.get('top_k'))) : DEFAULT_TOP_K;
  const offset = Math.max(0, Math.floor(Number(p.get('offset')) || 0));
  const sources = p.has('in')
    ? splitList(p.get('in')).filter((v) => SOURCES.some((s) => s.value === v))
    : SOURCES.map((s) => s.value);
  return {
    query: p.get('q') ?? '', mode, topK, collection: p.get('collection') ?? '', offset,
    tags: splitList(p.get('tags') ?? ''), userId: p.get('user_id') ?? '', agentId: p.get('agent_id') ?? '',
    speaker: p.get('speaker') ?? '',
    sources: sources.length ? sources : SOURCES.map((s) => s.value),
  };
}

function writeHashState(state) {
  const p = new URLSearchParams();
  p.set('q', state.query);
  if (state.mode !== 'hybrid') p.set('mode', state.mode);
  if (state.collection) p.set('collection', state.collection);
  if (state.tags.length) p.set('tags', state.tags.join(','));
  if (state.userId) p.set('user_id', state.userId);
  if (state.agentId) p.set('agent_id', state.agentId);
  if (state.speaker) p.set('speaker', state.speaker);
  if (state.sources.length !== SOURCES.length) p.set('in', state.sources.join(','));
  if (state.topK !== DEFAULT_TOP_K) p.set('top_k', String(state.topK));
  if (state.offset) p.set('offset', String(state.offset));
  const hash = `#/search?${p}`;
  // replaceState does not fire "hashchange", so the router leaves the page alone.
  if (location.hash !== hash) history.replaceState(history.state, '', hash);
}
