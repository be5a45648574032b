// Graph page: find an entity, draw its neighbourhood in time, find paths, add
// entities and relations.
//
//   GET  /api/v1/graph/entities?query=&type=&limit=          entity search (or the list without query)
//   GET  /api/v1/graph/entities/{id}
//   GET  /api/v1/graph/entities/{id}/neighbourhood?hops=&limit=&as_of=&known_at=
//   GET  /api/v1/graph/path?from=&to=&as_of=&known_at=
//   POST /api/v1/graph/entities                               {name, type, aliases?, summary?}
//   POST /api/v1/graph/relations                              {source, type, target, fact?, valid_at?, invalid_at?}
//   POST /api/v1/graph/analytics                              {algorithm: "communities", filter?} (when the server has it)
//
// The view (open entity, hops, as-of and known-at dates) is mirrored into the
// hash ("#/graph/<id>?hops=2&as_of=2021-01-01"): re-centring pushes a history
// entry, changing the view replaces it, so a reload or a shared link shows the
// same drawing. The drawing is an SVG with a radial layout (the open entity in
// the middle, each further ring one relation further away); the relations
// table beside it holds the same facts for keyboard and screen-reader use.

import { getJSON, request } from '../api.js';
import { h, srOnly, formatNumber, formatScore, timeElement } from '../ui.js';

export const title = 'Graph';

const SEARCH_LIMIT = 20;
const HOOD_LIMIT = 200; // a larger neighbourhood is refused by the server with its own message
const PALETTE_SIZE = 8;
const NODE_RADIUS = 16;
const CENTRE_RADIUS = 22;
const RING_GAP = 170;
const NODE_SPACING = 90; // the least arc between two nodes of a ring
const LABEL_MAX = 24;
const ANALYTICS_PATH = '/api/v1/graph/analytics';

const ENTITY_TYPES = ['person', 'organization', 'place', 'project', 'product', 'event', 'topic'];
const RELATION_TYPES = ['works_for', 'reports_to', 'member_of', 'lives_in', 'located_in', 'works_on', 'knows', 'part_of', 'owns'];
// Colours of common types stay the same from view to view; others follow from their name.
const TYPE_COLOURS = { person: 0, organization: 1, organisation: 1, place: 2, project: 3, product: 4, event: 5, topic: 6 };

const SVG_NS = 'http://www.w3.org/2000/svg';

let instance = 0; // keeps element ids unique if the page is mounted again
let analyticsAvailable = null; // a Promise<boolean>, asked once per page load

export function mount(root, { params = [] } = {}) {
  const uid = `graph${++instance}`;
  const initial = readHashState(params);
  let stopped = false;

  const state = {
    query: initial.query,
    centre: initial.centre,   // entity id or ''
    hops: initial.hops,
    asOf: initial.asOf,       // 'YYYY-MM-DD' or ''
    knownAt: initial.knownAt, // 'YYYY-MM-DD' or ''
    pathTo: null,             // {id, name, type} the path finder's other end
    colourBy: 'type',         // 'type' | 'community'
  };
  // Every entity the page has seen, by id: names for ids in relations and paths.
  const known = new Map();
  let hood = null;        // {entities: [{id, depth, entity?}], relations: [...]}
  let path = null;        // {ids: [...], relations: [...]} or {ids: null} when not connected
  let communities = null; // Map entity id -> community number

  const announcer = h('p', { class: 'visually-hidden', role: 'status' });
  function announce(text) {
    announcer.textContent = '';
    setTimeout(() => { if (!stopped) announcer.textContent = text; }, 50);
  }

  function remember(entity) {
    if (entity?.id) known.set(entity.id, entity);
    renderSuggestions();
  }

  function nameOf(id) {
    return known.get(id)?.name ?? id;
  }

  // =========================================================================
  // Find an entity
  // =========================================================================
  const queryInput = h('input', {
    id: `${uid}-q`, class: 'input', type: 'search', autocomplete: 'off', spellcheck: 'false',
    maxlength: 500, placeholder: 'A name, an alias or words from a summary',
  });
  queryInput.value = state.query;
  const typeFilter = h('input', {
    id: `${uid}-type`, class: 'input input--medium', type: 'text', autocomplete: 'off', spellcheck: 'false',
    maxlength: 64, placeholder: 'any', list: `${uid}-entity-types`,
  });
  const entityTypes = h('datalist', { id: `${uid}-entity-types` }, ENTITY_TYPES.map((t) => h('option', { value: t })));
  const findButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Find');
  const findHeading = h('h2', { id: `${uid}-find` }, 'Entities');
  const findMeta = h('p', { class: 'page__meta', 'aria-live': 'polite' });
  const findAlert = h('div', { class: 'alert-region', role: 'alert' });
  const findResults = h('ol', { class: 'results entity-results' });
  const findSection = h('section', { class: 'card', 'aria-labelledby': findHeading.id },
    h('div', { class: 'card__header' }, findHeading, findMeta),
    h('form', { class: 'search-form', role: 'search', 'aria-label': 'Entity search', onsubmit: onFind },
      h('div', { class: 'search-form__row' },
        h('div', { class: 'field field--grow' }, h('label', { for: queryInput.id }, 'Find an entity'), queryInput),
        h('div', { class: 'field' }, h('label', { for: typeFilter.id }, 'Type'), typeFilter, entityTypes),
        h('div', { class: 'form-actions' }, findButton),
      ),
    ),
    findAlert,
    findResults,
  );
  let findController = null;

  function onFind(event) {
    event?.preventDefault();
    state.query = queryInput.value.trim();
    writeHash(false);
    find();
  }

  async function find() {
    findController?.abort();
    const controller = new AbortController();
    findController = controller;
    const q = { limit: String(SEARCH_LIMIT) };
    if (state.query) q.query = state.query;
    const type = typeFilter.value.trim();
    if (type) q.type = type;
    findSection.setAttribute('aria-busy', 'true');
    findMeta.textContent = state.query ? 'Searching…' : 'Loading…';
    findButton.disabled = true;
    try {
      const data = await getJSON(`/graph/entities?${new URLSearchParams(q)}`, { signal: controller.signal });
      if (stopped || controller !== findController) return;
      const hits = Array.isArray(data?.entities) ? data.entities : [];
      hits.forEach(remember);
      findAlert.replaceChildren();
      findMeta.textContent = state.query
        ? `${formatNumber(hits.length)} found for “${state.query}”`
        : `${formatNumber(hits.length)}${data?.next_after ? '+' : ''} entit${hits.length === 1 ? 'y' : 'ies'}`;
      findResults.replaceChildren(...(hits.length
        ? hits.map((e) => entityResult(e, Boolean(state.query), () => open(e.id, true)))
        : [h('li', { class: 'results__empty' }, state.query
          ? `No entity matches “${state.query}”.`
          : 'No entities yet. Add one below.')]));
      if (state.query) announce(`${hits.length} entit${hits.length === 1 ? 'y' : 'ies'} found.`);
    } catch (err) {
      if (stopped || err?.name === 'AbortError') return;
      findMeta.textContent = '';
      findAlert.replaceChildren(banner('Could not find entities', err?.message));
    } finally {
      if (controller === findController) {
        findSection.removeAttribute('aria-busy');
        findButton.disabled = false;
      }
    }
  }

  // =========================================================================
  // The open entity: view controls, drawing, relations table
  // =========================================================================
  const hopsSelect = h('select', { id: `${uid}-hops`, class: 'select select--narrow' },
    [1, 2, 3].map((n) => h('option', { value: String(n) }, String(n))));
  hopsSelect.value = String(state.hops);
  const asOfInput = h('input', {
    id: `${uid}-as-of`, class: 'input input--medium', type: 'date', 'aria-describedby': `${uid}-as-of-hint`,
  });
  asOfInput.value = state.asOf;
  const knownAtInput = h('input', {
    id: `${uid}-known-at`, class: 'input input--medium', type: 'date', 'aria-describedby': `${uid}-known-at-hint`,
    max: today(),
  });
  knownAtInput.value = state.knownAt;
  const nowButton = h('button', { type: 'button', class: 'btn', onclick: resetTime }, 'Now');
  const colourButton = h('button', {
    type: 'button', class: 'btn', 'aria-pressed': 'false', hidden: true, onclick: toggleCommunities,
  }, 'Colour by community');

  const viewForm = h('form', { class: 'graph-view', 'aria-label': 'View', onsubmit: (e) => { e.preventDefault(); onView(); } },
    h('div', { class: 'field' }, h('label', { for: hopsSelect.id }, 'Hops'), hopsSelect),
    h('div', { class: 'field' },
      h('label', { for: asOfInput.id }, 'As of'),
      asOfInput,
      h('span', { class: 'field__hint', id: `${uid}-as-of-hint` }, 'Only what was true that day. Empty: every relation.'),
    ),
    h('div', { class: 'field' },
      h('label', { for: knownAtInput.id }, 'Known at'),
      knownAtInput,
      h('span', { class: 'field__hint', id: `${uid}-known-at-hint` }, 'As Nexus knew it by the end of that day.'),
    ),
    h('div', { class: 'form-actions' }, nowButton, colourButton),
  );
  hopsSelect.addEventListener('change', onView);
  asOfInput.addEventListener('change', onView);
  knownAtInput.addEventListener('change', onView);

  const entityHeading = h('h2', { id: `${uid}-entity`, tabindex: -1 }, 'Entity');
  const entityFacts = h('div', { class: 'entity-facts' });
  const hoodMeta = h('p', { class: 'page__meta', 'aria-live': 'polite' });
  const hoodAlert = h('div', { class: 'alert-region', role: 'alert' });
  const drawing = h('div', { class: 'graph-drawing' });
  const legend = h('ul', { class: 'graph-legend', 'aria-label': 'Colours' });
  const tableBody = h('tbody');
  const tableCaption = h('caption', { class: 'visually-hidden' }, 'Relations');
  const relationsTable = h('table', { class: 'relations-table' },
    tableCaption,
    h('thead', null, h('tr', null,
      ['Source', 'Relation', 'Target', 'Fact', 'Valid from', 'Valid to'].map((c) => h('th', { scope: 'col' }, c)))),
    tableBody,
  );
  const relationsHeading = h('h3', { id: `${uid}-relations`, class: 'subheading' }, 'Relations');
  const explorer = h('section', { class: 'card graph-explorer', 'aria-labelledby': entityHeading.id, hidden: true },
    h('div', { class: 'card__header' }, entityHeading, hoodMeta),
    entityFacts,
    viewForm,
    hoodAlert,
    h('div', { class: 'graph-layout' },
      h('figure', { class: 'graph-figure' }, drawing, legend),
      h('section', { class: 'graph-relations', 'aria-labelledby': relationsHeading.id },
        relationsHeading,
        h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Relation list', tabindex: 0 }, relationsTable),
      ),
    ),
  );
  let hoodController = null;

  function view() {
    const v = {};
    if (state.asOf) v.as_of = `${state.asOf}T00:00:00Z`;
    // The end of the chosen day; today or later is what Nexus knows now (the default).
    if (state.knownAt && state.knownAt < today()) v.known_at = `${state.knownAt}T23:59:59Z`;
    return v;
  }

  // Ended at the moment viewed (the as-of day, else now): drawn dashed. Every relation shown as
  // of a day was true that day, even one that ended later.
  function isEnded(r) {
    const moment = state.asOf ? Date.parse(`${state.asOf}T00:00:00Z`) : Date.now();
    const end = r.invalid_at ? Date.parse(r.invalid_at) : NaN;
    return (Number.isFinite(end) && end <= moment) || Boolean(r.expired_at);
  }

  function describeView() {
    const parts = [`${state.hops} hop${state.hops === 1 ? '' : 's'}`];
    if (state.asOf) parts.push(`as of ${state.asOf}`);
    if (state.knownAt) parts.push(`known at ${state.knownAt}`);
    return parts.join(', ');
  }

  function onView() {
    state.hops = Number(hopsSelect.value) || 2;
    state.asOf = asOfInput.value;
    state.knownAt = knownAtInput.value;
    writeHash(false);
    if (state.centre) loadHood(false);
  }

  function resetTime() {
    asOfInput.value = '';
    knownAtInput.value = '';
    onView();
  }

  // Opens an entity: a new history entry when the user asked for it.
  function open(id, push) {
    if (!id) return;
    const changed = id !== state.centre;
    state.centre = id;
    if (state.pathTo?.id === id) clearPath();
    writeHash(push && changed);
    loadHood(true);
  }

  async function loadHood(focus) {
    hoodController?.abort();
    const controller = new AbortController();
    hoodController = controller;
    const id = state.centre;
    explorer.hidden = false;
    explorer.setAttribute('aria-busy', 'true');
    hoodMeta.textContent = 'Loading…';
    if (focus) {
      entityHeading.textContent = nameOf(id);
      entityHeading.focus();
    }
    const q = new URLSearchParams({ hops: String(state.hops), limit: String(HOOD_LIMIT), ...view() });
    try {
      const [entity, data] = await Promise.all([
        getJSON(`/graph/entities/${encodeURIComponent(id)}`, { signal: controller.signal }),
        getJSON(`/graph/entities/${encodeURIComponent(id)}/neighbourhood?${q}`, { signal: controller.signal }),
      ]);
      if (stopped || controller !== hoodController) return;
      remember(entity);
      for (const e of data?.entities ?? []) if (e.entity) remember(e.entity);
      hood = {
        entities: Array.isArray(data?.entities) ? data.entities : [],
        relations: Array.isArray(data?.relations) ? data.relations : [],
      };
      hoodAlert.replaceChildren();
      renderEntity(entity);
      if (state.colourBy === 'community') await loadCommunities(controller);
      if (state.pathTo) await loadPath(controller);
      if (stopped || controller !== hoodController) return;
      render();
      hoodMeta.textContent = `${formatNumber(hood.entities.length)} entit${hood.entities.length === 1 ? 'y' : 'ies'}, `
        + `${formatNumber(hood.relations.length)} relation${hood.relations.length === 1 ? '' : 's'} · ${describeView()}`;
      announce(`${entity.name}: ${hood.entities.length} entities and ${hood.relations.length} relations, ${describeView()}.`);
    } catch (err) {
      if (stopped || err?.name === 'AbortError' || controller !== hoodController) return;
      hoodMeta.textContent = '';
      hoodAlert.replaceChildren(banner(
        err?.status === 404 ? 'Entity not found' : 'Could not load the neighbourhood', err?.message));
      if (err?.status === 404) {
        hood = null;
        entityHeading.textContent = 'Entity not found';
        entityFacts.replaceChildren();
        render();
      }
    } finally {
      if (controller === hoodController) explorer.removeAttribute('aria-busy');
    }
  }

  function renderEntity(e) {
    entityHeading.textContent = e.name;
    // The relation form starts at the open entity until the user writes another source.
    if (!relSource.value || relSource.dataset.filled === 'true') {
      relSource.value = endText(e);
      relSource.dataset.filled = 'true';
    }
    const aliases = Array.isArray(e.aliases) ? e.aliases : [];
    const attributes = e.attributes && typeof e.attributes === 'object' ? Object.entries(e.attributes) : [];
    entityFacts.replaceChildren(...[
      h('p', { class: 'entity-facts__line' },
        h('span', { class: `chip graph-swatch graph-swatch--c${typeColour(e.type)}` }, e.type),
        aliases.length ? h('span', { class: 'muted' }, ` also known as ${aliases.join(', ')}`) : null,
        h('span', { class: 'mono muted entity-facts__id' }, e.id),
      ),
      e.summary ? h('p', { class: 'entity-facts__summary' }, e.summary) : null,
      attributes.length
        ? h('dl', { class: 'facts facts--compact' }, attributes.map(([k, v]) => h('div', null,
          h('dt', null, k), h('dd', null, typeof v === 'string' ? v : JSON.stringify(v)))))
        : null,
    ].filter(Boolean));
  }

  // The nodes and edges drawn: the neighbourhood, plus a path that leaves it.
  function graphData() {
    const nodes = new Map();
    const edges = new Map();
    if (hood) {
      for (const e of hood.entities) nodes.set(e.id, { id: e.id });
      for (const r of hood.relations) edges.set(r.id, r);
    }
    if (path?.ids) {
      for (const id of path.ids) if (!nodes.has(id)) nodes.set(id, { id });
      for (const r of path.relations) if (r && !edges.has(r.id)) edges.set(r.id, r);
    }
    return { nodes: [...nodes.values()], edges: [...edges.values()] };
  }

  function pathRelationIds() {
    return new Set((path?.relations ?? []).filter(Boolean).map((r) => r.id));
  }

  function render() {
    if (!hood) {
      drawing.replaceChildren();
      legend.replaceChildren();
      tableBody.replaceChildren();
      renderPath();
      return;
    }
    const { nodes, edges } = graphData();
    const onPath = new Set(path?.ids ?? []);
    const pathEdges = pathRelationIds();
    // A redrawn node keeps the keyboard focus it had.
    const focused = drawing.contains(document.activeElement) ? document.activeElement.closest('.graph-node')?.dataset.id : null;
    drawing.replaceChildren(drawGraph(nodes, edges, onPath, pathEdges));
    if (focused) [...drawing.querySelectorAll('a.graph-node')].find((a) => a.dataset.id === focused)?.focus();
    renderLegend(nodes);
    renderTable(edges, pathEdges);
    renderPath();
  }

  function colourOf(id) {
    if (state.colourBy === 'community') {
      const c = communities?.get(id);
      return Number.isFinite(c) ? ((c % PALETTE_SIZE) + PALETTE_SIZE) % PALETTE_SIZE : 'none';
    }
    return typeColour(known.get(id)?.type);
  }

  function drawGraph(nodes, edges, onPath, pathEdges) {
    const centre = state.centre;
    const positions = radialLayout(nodes.map((n) => n.id), edges, centre, nameOf);
    const titleId = `${uid}-svg-title`;
    const descId = `${uid}-svg-desc`;
    const xs = [...positions.values()].map((p) => p.x);
    const ys = [...positions.values()].map((p) => p.y);
    const margin = 200; // room for a name beside a node
    const minX = Math.min(-120, ...xs) - margin;
    const maxX = Math.max(120, ...xs) + margin;
    const minY = Math.min(-120, ...ys) - 50;
    const maxY = Math.max(120, ...ys) + 50;

    const arrow = `${uid}-arrow`;
    const arrowPath = `${uid}-arrow-path`;
    const marker = (id, cls) => s('marker', {
      id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
    }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: cls }));

    // Relations between the same two entities fan out as curves.
    const pairs = new Map();
    for (const r of edges) {
      const key = [r.source, r.target].sort().join('\u0000');
      if (!pairs.has(key)) pairs.set(key, []);
      pairs.get(key).push(r);
    }
    const edgeEls = [];
    for (const group of pairs.values()) {
      group.forEach((r, i) => {
        const a = positions.get(r.source);
        const b = positions.get(r.target);
        if (!a || !b) return;
        const bend = (i - (group.length - 1) / 2) * 46 * (r.source < r.target ? 1 : -1);
        const ended = isEnded(r);
        const onThePath = pathEdges.has(r.id);
        const geometry = edgeGeometry(a, b, bend,
          r.source === centre ? CENTRE_RADIUS : NODE_RADIUS, r.target === centre ? CENTRE_RADIUS : NODE_RADIUS);
        const label = `${nameOf(r.source)} ${r.type} ${nameOf(r.target)}${ended ? ' (ended)' : ''}`;
        edgeEls.push(s('g', {
          class: `graph-edge${ended ? ' graph-edge--ended' : ''}${onThePath ? ' graph-edge--path' : ''}`,
          'data-relation': r.id, 'data-type': r.type,
        },
        s('title', null, label),
        s('path', { d: geometry.d, class: 'graph-edge__line', 'marker-end': `url(#${onThePath ? arrowPath : arrow})` }),
        s('text', { x: geometry.lx, y: geometry.ly, class: 'graph-edge__label', 'text-anchor': 'middle', 'dominant-baseline': 'middle' }, r.type)));
      });
    }

    const nodeEls = nodes.map((n) => {
      const p = positions.get(n.id);
      const entity = known.get(n.id);
      const isCentre = n.id === centre;
      const r = isCentre ? CENTRE_RADIUS : NODE_RADIUS;
      const name = entity?.name ?? n.id;
      const label = name.length > LABEL_MAX ? `${name.slice(0, LABEL_MAX - 1)}…` : name;
      const cls = `graph-node graph-node--c${colourOf(n.id)}${isCentre ? ' graph-node--centre' : ''}${onPath.has(n.id) ? ' graph-node--path' : ''}`;
      const body = [
        s('title', null, entity ? `${name} (${entity.type})` : name),
        s('circle', { cx: p.x, cy: p.y, r, class: 'graph-node__dot' }),
        nodeLabel(p, r, isCentre, label),
      ];
      if (isCentre) return s('g', { class: cls, 'data-id': n.id, 'data-name': name }, body);
      return s('a', {
        class: cls, href: hashFor(n.id), 'data-id': n.id, 'data-name': name,
        'aria-label': `${name}${entity ? ` (${entity.type})` : ''}: open`,
        onclick: (event) => {
          if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
          event.preventDefault();
          open(n.id, true);
        },
      }, body);
    });

    const nodeCount = nodes.length;
    const edgeCount = edges.length;
    return s('svg', {
      class: 'graph-svg', viewBox: `${minX} ${minY} ${maxX - minX} ${maxY - minY}`, role: 'group',
      'aria-labelledby': titleId, 'aria-describedby': descId,
    },
    s('title', { id: titleId }, `Neighbourhood of ${nameOf(centre)}`),
    s('desc', { id: descId },
      `${nodeCount} entit${nodeCount === 1 ? 'y' : 'ies'} and ${edgeCount} relation${edgeCount === 1 ? '' : 's'}, ${describeView()}.`
      + ' Select an entity to put it in the middle. The relations table holds the same relations.'),
    s('defs', null, marker(arrow, 'graph-arrow'), marker(arrowPath, 'graph-arrow graph-arrow--path')),
    s('g', { class: 'graph-edges' }, edgeEls),
    s('g', { class: 'graph-nodes' }, nodeEls));
  }

  function renderLegend(nodes) {
    if (state.colourBy === 'community') {
      const seen = [...new Set(nodes.map((n) => communities?.get(n.id)).filter(Number.isFinite))].sort((a, b) => a - b);
      const items = seen.map((c) => legendItem(colourOf(nodes.find((n) => communities.get(n.id) === c).id), `community ${c}`));
      if (nodes.some((n) => !Number.isFinite(communities?.get(n.id)))) items.push(legendItem('none', 'no community'));
      legend.replaceChildren(...items);
      return;
    }
    const types = [...new Set(nodes.map((n) => known.get(n.id)?.type).filter(Boolean))].sort();
    legend.replaceChildren(...types.map((t) => legendItem(typeColour(t), t)));
  }

  function renderTable(edges, pathEdges) {
    const rows = [...edges].sort((a, b) => Number(pathEdges.has(b.id)) - Number(pathEdges.has(a.id))
      || nameOf(a.source).localeCompare(nameOf(b.source)) || a.type.localeCompare(b.type)
      || String(a.valid_at ?? '').localeCompare(String(b.valid_at ?? '')));
    const end = (id) => (id === state.centre
      ? h('span', { class: 'relation__node' }, nameOf(id))
      : h('button', { type: 'button', class: 'link-button', onclick: () => open(id, true) }, nameOf(id)));
    tableBody.replaceChildren(...(rows.length
      ? rows.map((r) => {
        const ended = isEnded(r);
        return h('tr', {
          class: `${ended ? 'is-ended' : ''}${pathEdges.has(r.id) ? ' is-path' : ''}`.trim() || null,
          'data-relation': r.id,
        },
        h('td', null, end(r.source)),
        h('td', null, h('span', { class: 'mono' }, r.type), pathEdges.has(r.id) ? srOnly(' (on the path)') : null),
        h('td', null, end(r.target)),
        h('td', { class: 'cell-wrap' }, r.fact ?? h('span', { class: 'muted' }, '—')),
        h('td', null, r.valid_at ? timeElement(r.valid_at, { dateOnly: true }) : h('span', { class: 'muted' }, '—')),
        h('td', null, r.invalid_at
          ? timeElement(r.invalid_at, { dateOnly: true })
          : r.expired_at ? h('span', { class: 'muted' }, 'retired') : h('span', { class: 'muted' }, '—')));
      })
      : [h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'No relations in this view.'))]));
  }

  // =========================================================================
  // Colour by community (only when the server has the analytics route)
  // =========================================================================
  async function toggleCommunities() {
    state.colourBy = state.colourBy === 'community' ? 'type' : 'community';
    colourButton.setAttribute('aria-pressed', String(state.colourBy === 'community'));
    if (state.colourBy === 'community') {
      const controller = hoodController ?? new AbortController();
      colourButton.disabled = true;
      try {
        await loadCommunities(controller);
      } catch {
        return; // the neighbourhood is loading again, with the communities
      } finally {
        colourButton.disabled = false;
      }
    }
    if (!stopped) render();
  }

  async function loadCommunities(controller) {
    try {
      const body = { algorithm: 'communities' };
      const filter = view();
      if (Object.keys(filter).length) body.filter = filter;
      const data = await request('/graph/analytics', { method: 'POST', body, signal: controller.signal, timeoutMs: 60_000 });
      if (stopped) return;
      communities = new Map((Array.isArray(data?.results) ? data.results : [])
        .filter((r) => r && typeof r.entity_id === 'string')
        .map((r) => [r.entity_id, Number(r.value)]));
    } catch (err) {
      if (stopped || err?.name === 'AbortError') throw err;
      communities = null;
      state.colourBy = 'type';
      colourButton.setAttribute('aria-pressed', 'false');
      if (err?.status === 404 && err?.code === 'route_not_found') {
        analyticsAvailable = Promise.resolve(false);
        colourButton.hidden = true;
        hoodAlert.replaceChildren(h('div', { class: 'banner banner--info' },
          h('p', null, 'This server does not compute communities; nodes are coloured by type.')));
      } else {
        hoodAlert.replaceChildren(banner('Could not compute communities', err?.message));
      }
    }
  }

  // =========================================================================
  // Path finder
  // =========================================================================
  const pathInput = h('input', {
    id: `${uid}-path-q`, class: 'input', type: 'search', autocomplete: 'off', spellcheck: 'false',
    maxlength: 500, placeholder: 'The other entity',
  });
  const pathFindButton = h('button', { type: 'submit', class: 'btn' }, 'Find');
  const pathClearButton = h('button', { type: 'button', class: 'btn', hidden: true, onclick: () => { clearPath(); render(); } }, 'Clear path');
  const pathAlert = h('div', { class: 'alert-region', role: 'alert' });
  const pathChoices = h('ol', { class: 'results entity-results' });
  const pathResult = h('div', { 'aria-live': 'polite' });
  const pathHeading = h('h3', { id: `${uid}-path`, class: 'subheading' }, 'Path to another entity');
  const pathSection = h('section', { class: 'graph-path', 'aria-labelledby': pathHeading.id },
    pathHeading,
    h('form', { class: 'search-form', role: 'search', 'aria-label': 'Find the other end of a path', onsubmit: onPathFind },
      h('div', { class: 'search-form__row' },
        h('div', { class: 'field field--grow' }, h('label', { for: pathInput.id }, 'Path to'), pathInput),
        h('div', { class: 'form-actions' }, pathFindButton, pathClearButton),
      ),
    ),
    pathAlert,
    pathChoices,
    pathResult,
  );
  explorer.append(pathSection);

  async function onPathFind(event) {
    event.preventDefault();
    const query = pathInput.value.trim();
    if (!query) {
      pathInput.focus();
      return;
    }
    pathFindButton.disabled = true;
    pathAlert.replaceChildren();
    try {
      const data = await getJSON(`/graph/entities?${new URLSearchParams({ query, limit: '10' })}`);
      if (stopped) return;
      const hits = (Array.isArray(data?.entities) ? data.entities : []).filter((e) => e.id !== state.centre);
      hits.forEach(remember);
      pathChoices.replaceChildren(...(hits.length
        ? hits.map((e) => entityResult(e, true, () => choosePathEnd(e)))
        : [h('li', { class: 'results__empty' }, `No other entity matches “${query}”.`)]));
      if (hits.length) pathChoices.querySelector('button')?.focus();
    } catch (err) {
      if (stopped) return;
      pathAlert.replaceChildren(banner('Could not find entities', err?.message));
    } finally {
      pathFindButton.disabled = false;
    }
  }

  async function choosePathEnd(entity) {
    state.pathTo = { id: entity.id, name: entity.name, type: entity.type };
    pathChoices.replaceChildren();
    pathClearButton.hidden = false;
    const controller = hoodController ?? new AbortController();
    try {
      await loadPath(controller);
    } catch {
      return; // the neighbourhood is loading again, with the path
    }
    if (stopped) return;
    render();
    pathResult.querySelector('[tabindex="-1"]')?.focus();
  }

  function clearPath() {
    state.pathTo = null;
    path = null;
    pathClearButton.hidden = true;
    pathChoices.replaceChildren();
    pathResult.replaceChildren();
  }

  async function loadPath(controller) {
    const to = state.pathTo;
    if (!to || !state.centre) return;
    try {
      // Always walked in a view (an empty `types` is every type, as now): the answer then names
      // the relation taken at each step, as the neighbourhood sees it.
      const q = new URLSearchParams({ from: state.centre, to: to.id, types: '', ...view() });
      const data = await getJSON(`/graph/path?${q}`, { signal: controller.signal });
      if (stopped) return;
      const ids = Array.isArray(data?.path) ? data.path : null;
      if (!ids) {
        path = { ids: null, relations: [] };
        pathAlert.replaceChildren();
        return;
      }
      // The entities along the path that the page has not seen yet.
      const missing = ids.filter((id) => !known.has(id));
      const fetched = await Promise.allSettled(missing.map((id) =>
        getJSON(`/graph/entities/${encodeURIComponent(id)}`, { signal: controller.signal })));
      if (stopped) return;
      for (const f of fetched) if (f.status === 'fulfilled') remember(f.value);
      // Should a step come without its relation, take a drawn one between the same two entities.
      const given = Array.isArray(data?.relations) ? data.relations : null;
      const relations = ids.slice(1).map((id, i) => given?.[i] ?? (hood?.relations ?? []).find((r) =>
        (r.source === ids[i] && r.target === id) || (r.target === ids[i] && r.source === id)) ?? null);
      path = { ids, relations };
      pathAlert.replaceChildren();
    } catch (err) {
      if (stopped || err?.name === 'AbortError') throw err;
      path = null;
      pathAlert.replaceChildren(banner('Could not find a path', err?.message));
    }
  }

  function renderPath() {
    const to = state.pathTo;
    if (!to || !path) {
      pathResult.replaceChildren();
      return;
    }
    if (!path.ids) {
      pathResult.replaceChildren(h('p', { class: 'muted', tabindex: -1 },
        `No path between ${nameOf(state.centre)} and ${to.name} in this view.`));
      return;
    }
    const steps = path.ids.length - 1;
    pathResult.replaceChildren(
      h('p', { class: 'graph-path__summary', tabindex: -1 },
        `${nameOf(state.centre)} to ${to.name}: ${steps} step${steps === 1 ? '' : 's'}, highlighted in the drawing.`),
      h('ol', { class: 'graph-path__steps' }, path.ids.map((id, i) => {
        const r = i > 0 ? path.relations[i - 1] : null;
        const backwards = r && r.source === id;
        return h('li', null,
          r ? h('span', { class: 'relation__edge' }, backwards ? `← ${r.type} — ` : `— ${r.type} → `) : null,
          h('span', { class: 'relation__node' }, nameOf(id)));
      })),
    );
  }

  // =========================================================================
  // Add an entity / a relation
  // =========================================================================
  const entityName = h('input', { id: `${uid}-new-name`, class: 'input', type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  const entityType = h('input', {
    id: `${uid}-new-type`, class: 'input input--medium', type: 'text', required: true, maxlength: 64,
    autocomplete: 'off', spellcheck: 'false', list: `${uid}-entity-types`, placeholder: 'e.g. person',
  });
  const entityAliases = h('input', {
    id: `${uid}-new-aliases`, class: 'input', type: 'text', autocomplete: 'off', 'aria-describedby': `${uid}-new-aliases-hint`,
  });
  const entitySummary = h('textarea', { id: `${uid}-new-summary`, class: 'input textarea', rows: 2, maxlength: 4000 });
  const entityButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Add entity');
  const entityAlert = h('div', { class: 'alert-region', role: 'alert' });
  const entityOutcome = h('div', { class: 'alert-region', 'aria-live': 'polite' });
  const entityForm = h('form', { class: 'memory-form', novalidate: true, onsubmit: onAddEntity, 'aria-labelledby': `${uid}-add-entity` },
    h('div', { class: 'form-row' },
      h('div', { class: 'field field--grow' }, h('label', { for: entityName.id }, 'Name'), entityName),
      h('div', { class: 'field' }, h('label', { for: entityType.id }, 'Entity type'), entityType),
    ),
    h('div', { class: 'field' },
      h('label', { for: entityAliases.id }, 'Aliases ', h('span', { class: 'field__optional' }, '(optional)')),
      entityAliases,
      h('span', { class: 'field__hint', id: `${uid}-new-aliases-hint` }, 'Separate aliases with commas.'),
    ),
    h('div', { class: 'field' },
      h('label', { for: entitySummary.id }, 'Summary ', h('span', { class: 'field__optional' }, '(optional)')),
      entitySummary,
    ),
    h('div', { class: 'form-actions' }, entityButton),
    entityAlert,
    entityOutcome,
  );

  async function onAddEntity(event) {
    event.preventDefault();
    entityAlert.replaceChildren();
    entityOutcome.replaceChildren();
    const body = { name: entityName.value.trim(), type: entityType.value.trim() };
    const aliases = entityAliases.value.split(',').map((a) => a.trim()).filter(Boolean);
    if (aliases.length) body.aliases = aliases;
    if (entitySummary.value.trim()) body.summary = entitySummary.value.trim();
    entityButton.disabled = true;
    entityButton.textContent = 'Adding…';
    try {
      const e = await request('/graph/entities', { method: 'POST', body });
      if (stopped) return;
      remember(e);
      entityOutcome.replaceChildren(h('div', { class: 'banner banner--ok' },
        h('p', null, 'Saved ', h('button', { type: 'button', class: 'link-button', onclick: () => open(e.id, true) }, e.name),
          ` (${e.type}).`)));
      announce(`Entity ${e.name} saved.`);
      entityName.value = '';
      entityAliases.value = '';
      entitySummary.value = '';
      if (!state.centre) find();
    } catch (err) {
      if (stopped) return;
      entityAlert.replaceChildren(banner(err?.isNetworkError ? 'Server unreachable' : 'Could not add the entity', err?.message));
    } finally {
      if (!stopped) {
        entityButton.disabled = false;
        entityButton.textContent = 'Add entity';
      }
    }
  }

  const entityNames = h('datalist', { id: `${uid}-entity-names` });
  const relSource = h('input', {
    id: `${uid}-rel-source`, class: 'input', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false',
    list: entityNames.id, 'aria-describedby': `${uid}-rel-ends-hint`,
  });
  relSource.addEventListener('input', () => { relSource.dataset.filled = 'false'; });
  const relType = h('input', {
    id: `${uid}-rel-type`, class: 'input input--medium', type: 'text', required: true, maxlength: 64, autocomplete: 'off',
    spellcheck: 'false', list: `${uid}-relation-types`, placeholder: 'e.g. works_for',
  });
  const relationTypes = h('datalist', { id: `${uid}-relation-types` }, RELATION_TYPES.map((t) => h('option', { value: t })));
  const relTarget = h('input', {
    id: `${uid}-rel-target`, class: 'input', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false',
    list: entityNames.id, 'aria-describedby': `${uid}-rel-ends-hint`,
  });
  const relFact = h('input', { id: `${uid}-rel-fact`, class: 'input', type: 'text', maxlength: 4000, autocomplete: 'off' });
  const relValidAt = h('input', { id: `${uid}-rel-valid-at`, class: 'input input--medium', type: 'date' });
  const relInvalidAt = h('input', { id: `${uid}-rel-invalid-at`, class: 'input input--medium', type: 'date' });
  const relButton = h('button', { type: 'submit', class: 'btn btn--primary' }, 'Add relation');
  const relAlert = h('div', { class: 'alert-region', role: 'alert' });
  const relResult = h('div', { class: 'alert-region', 'aria-live': 'polite' });
  const relationForm = h('form', { class: 'memory-form', novalidate: true, onsubmit: onAddRelation, 'aria-labelledby': `${uid}-add-relation` },
    h('div', { class: 'form-row' },
      h('div', { class: 'field field--grow' }, h('label', { for: relSource.id }, 'Source'), relSource),
      h('div', { class: 'field' }, h('label', { for: relType.id }, 'Relation type'), relType, relationTypes),
      h('div', { class: 'field field--grow' }, h('label', { for: relTarget.id }, 'Target'), relTarget, entityNames),
    ),
    h('p', { class: 'field__hint', id: `${uid}-rel-ends-hint` }, 'An entity’s name (pick from the suggestions) or its id.'),
    h('div', { class: 'field' },
      h('label', { for: relFact.id }, 'Fact ', h('span', { class: 'field__optional' }, '(optional)')), relFact),
    h('div', { class: 'form-row' },
      h('div', { class: 'field' }, h('label', { for: relValidAt.id }, 'Valid from ', h('span', { class: 'field__optional' }, '(optional)')), relValidAt),
      h('div', { class: 'field' }, h('label', { for: relInvalidAt.id }, 'Valid to ', h('span', { class: 'field__optional' }, '(optional)')), relInvalidAt),
    ),
    h('div', { class: 'form-actions' }, relButton),
    relAlert,
    relResult,
  );

  function renderSuggestions() {
    const entities = [...known.values()].sort((a, b) => a.name.localeCompare(b.name));
    entityNames.replaceChildren(...entities.map((e) => h('option', { value: endText(e) })));
  }

  // "Name (type)", a bare name or an id -> the entity's id, searching when the page has not seen it.
  async function resolveEnd(text) {
    const raw = text.trim();
    if (!raw) return null;
    if (known.has(raw)) return raw;
    const match = (entities) => entities.find((e) => endText(e).toLowerCase() === raw.toLowerCase())
      ?? entities.find((e) => sameName(e.name, raw));
    const local = match([...known.values()]);
    if (local) return local.id;
    const name = raw.replace(/\s*\([^()]*\)$/, '');
    const data = await getJSON(`/graph/entities?${new URLSearchParams({ query: name, limit: '10' })}`);
    const hits = Array.isArray(data?.entities) ? data.entities : [];
    hits.forEach(remember);
    const found = match(hits);
    // Not an entity the page can name: send it as written, and the server says what is wrong.
    return found ? found.id : raw;
  }

  async function onAddRelation(event) {
    event.preventDefault();
    relAlert.replaceChildren();
    relResult.replaceChildren();
    relButton.disabled = true;
    relButton.textContent = 'Adding…';
    try {
      const [source, target] = [await resolveEnd(relSource.value), await resolveEnd(relTarget.value)];
      const body = { source: source ?? '', type: relType.value.trim(), target: target ?? '' };
      if (relFact.value.trim()) body.fact = relFact.value.trim();
      if (relValidAt.value) body.valid_at = `${relValidAt.value}T00:00:00Z`;
      if (relInvalidAt.value) body.invalid_at = `${relInvalidAt.value}T00:00:00Z`;
      const added = await request('/graph/relations', { method: 'POST', body });
      if (stopped) return;
      const closed = Array.isArray(added?.closed) ? added.closed : [];
      const what = `${nameOf(added.source)} ${added.type} ${nameOf(added.target)}`;
      relResult.replaceChildren(h('div', { class: 'banner banner--ok' },
        h('p', null, added.created ? `Added: ${what}.` : `Already known: ${what}.`),
        closed.length
          ? h('p', null, `It ends ${closed.length} earlier relation${closed.length === 1 ? '' : 's'}: `,
            closed.map((r, i) => [i ? '; ' : '', `${nameOf(r.source)} ${r.type} ${nameOf(r.target)}`]), '.')
          : null));
      announce(added.created ? `Relation added: ${what}.` : `Relation already known: ${what}.`);
      relFact.value = '';
      if (state.centre === added.source || state.centre === added.target) loadHood(false);
      else open(added.source, true);
    } catch (err) {
      if (stopped) return;
      relAlert.replaceChildren(banner(err?.isNetworkError ? 'Server unreachable' : 'Could not add the relation', err?.message));
    } finally {
      if (!stopped) {
        relButton.disabled = false;
        relButton.textContent = 'Add relation';
      }
    }
  }

  const addSection = h('section', { class: 'graph-forms' },
    h('details', { class: 'card disclosure' },
      h('summary', { class: 'disclosure__summary' }, h('h2', { class: 'disclosure__title', id: `${uid}-add-entity` }, 'Add an entity')),
      entityForm),
    h('details', { class: 'card disclosure' },
      h('summary', { class: 'disclosure__summary' }, h('h2', { class: 'disclosure__title', id: `${uid}-add-relation` }, 'Add a relation')),
      relationForm),
  );

  // =========================================================================
  function writeHash(push) {
    const hash = hashFor(state.centre, state.centre ? '' : state.query);
    if (location.hash === hash) return;
    // Neither fires "hashchange", so the router leaves the page alone; going back does.
    if (push) history.pushState(history.state, '', hash);
    else history.replaceState(history.state, '', hash);
  }

  function hashFor(id, query = '') {
    const p = new URLSearchParams();
    if (query) p.set('q', query);
    if (state.hops !== 2) p.set('hops', String(state.hops));
    if (state.asOf) p.set('as_of', state.asOf);
    if (state.knownAt) p.set('known_at', state.knownAt);
    const qs = p.toString();
    return `#/graph${id ? `/${encodeURIComponent(id)}` : ''}${qs ? `?${qs}` : ''}`;
  }

  root.append(
    h('header', { class: 'page__header' },
      h('h1', null, 'Graph'),
      h('p', { class: 'page__meta' }, 'Entities and the relations between them, as they were at any moment.'),
    ),
    findSection,
    explorer,
    addSection,
    announcer,
  );

  // The entity list when none is open; with one open, the search box only (until used).
  if (!state.centre || state.query) find();
  if (state.centre) loadHood(false);
  if (!analyticsAvailable) analyticsAvailable = hasAnalytics();
  analyticsAvailable.then((yes) => { if (!stopped) colourButton.hidden = !yes; });

  return () => {
    stopped = true;
    findController?.abort();
    hoodController?.abort();
  };
}

// ---- layout ------------------------------------------------------------------

/**
 * Positions for a radial drawing: `centre` at (0, 0), every other entity on the ring of its
 * distance from it (over the drawn relations; unreached ones on an outer ring). Within a ring,
 * entities follow the angle of the nearer neighbour that placed them, then their names, so the
 * same graph is always drawn the same way.
 */
export function radialLayout(ids, relations, centre, nameOf) {
  const adjacent = new Map(ids.map((id) => [id, []]));
  for (const r of relations) {
    if (adjacent.has(r.source) && adjacent.has(r.target)) {
      adjacent.get(r.source).push(r.target);
      adjacent.get(r.target).push(r.source);
    }
  }
  const depth = new Map([[centre, 0]]);
  const queue = adjacent.has(centre) ? [centre] : [];
  while (queue.length) {
    const id = queue.shift();
    for (const next of adjacent.get(id)) {
      if (!depth.has(next)) {
        depth.set(next, depth.get(id) + 1);
        queue.push(next);
      }
    }
  }
  const deepest = Math.max(0, ...depth.values());
  const rings = [];
  for (const id of ids) {
    const d = depth.get(id) ?? deepest + 1;
    (rings[d] ??= []).push(id);
  }

  const positions = new Map([[centre, { x: 0, y: 0, angle: 0 }]]);
  let radius = 0;
  for (let d = 1; d < rings.length; d += 1) {
    const ring = rings[d] ?? [];
    if (!ring.length) continue;
    const key = (id) => {
      const placed = adjacent.get(id).map((n) => positions.get(n)).filter(Boolean);
      return placed.length ? Math.min(...placed.map((p) => p.angle)) : Infinity;
    };
    const keyed = ring.map((id) => ({ id, key: key(id), name: nameOf(id) }));
    keyed.sort((a, b) => a.key - b.key || a.name.localeCompare(b.name) || (a.id < b.id ? -1 : 1));
    radius = Math.max(radius + RING_GAP, (ring.length * NODE_SPACING) / (2 * Math.PI));
    keyed.forEach(({ id }, i) => {
      // Angles run from the top, clockwise, in [0, 2π).
      const angle = (2 * Math.PI * i) / ring.length + (d % 2 === 0 ? Math.PI / ring.length : 0);
      positions.set(id, {
        x: Math.round(radius * Math.sin(angle) * 10) / 10,
        y: Math.round(-radius * Math.cos(angle) * 10) / 10,
        angle,
      });
    });
  }
  return positions;
}

// A straight line (or a curve when bent) from circle a to circle b, ending at their rims; the
// label sits at its middle.
function edgeGeometry(a, b, bend, ra, rb) {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const length = Math.hypot(dx, dy) || 1;
  const nx = -dy / length;
  const ny = dx / length;
  const cx = (a.x + b.x) / 2 + nx * bend;
  const cy = (a.y + b.y) / 2 + ny * bend;
  const toward = (p, q, r) => {
    const l = Math.hypot(q.x - p.x, q.y - p.y) || 1;
    return { x: p.x + ((q.x - p.x) / l) * r, y: p.y + ((q.y - p.y) / l) * r };
  };
  const c = { x: cx, y: cy };
  const start = toward(a, bend ? c : b, ra);
  const end = toward(b, bend ? c : a, rb + 2);
  const f = (n) => Math.round(n * 10) / 10;
  const d = bend
    ? `M ${f(start.x)} ${f(start.y)} Q ${f(cx)} ${f(cy)} ${f(end.x)} ${f(end.y)}`
    : `M ${f(start.x)} ${f(start.y)} L ${f(end.x)} ${f(end.y)}`;
  // The middle of a quadratic curve is halfway between the chord's middle and its control point.
  const lx = bend ? ((a.x + b.x) / 2 + cx) / 2 : (a.x + b.x) / 2;
  const ly = bend ? ((a.y + b.y) / 2 + cy) / 2 : (a.y + b.y) / 2;
  return { d, lx: f(lx), ly: f(ly) };
}

// A node's name: below the entity in the middle; beside the others, on the side away from the
// middle, where the relations that run along the rings' radii do not pass.
function nodeLabel(p, r, isCentre, label) {
  if (isCentre) return s('text', { x: p.x, y: p.y + r + 16, class: 'graph-node__label', 'text-anchor': 'middle' }, label);
  const left = Math.sin(p.angle) < -0.5;
  return s('text', {
    x: p.x + (left ? -(r + 6) : r + 6), y: p.y + 4, class: 'graph-node__label', 'text-anchor': left ? 'end' : 'start',
  }, label);
}

// ---- helpers -----------------------------------------------------------------

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function typeColour(type) {
  if (!type) return 'none';
  if (type in TYPE_COLOURS) return TYPE_COLOURS[type];
  let hash = 0;
  for (const c of type) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
  return hash % PALETTE_SIZE;
}

function legendItem(colour, label) {
  return h('li', { class: 'graph-legend__item' },
    h('span', { class: `graph-legend__swatch graph-swatch--c${colour}`, 'aria-hidden': 'true' }), label);
}

function entityResult(e, scored, onOpen) {
  return h('li', { class: 'result' },
    h('p', { class: 'result__title' },
      h('button', { type: 'button', class: 'link-button', onclick: onOpen }, e.name)),
    h('p', { class: 'result__meta' },
      h('span', { class: `chip graph-swatch graph-swatch--c${typeColour(e.type)}` }, e.type),
      scored && Number.isFinite(e.score) ? h('span', null, 'score ', formatScore(e.score)) : null,
      Array.isArray(e.aliases) && e.aliases.length ? h('span', null, `also ${e.aliases.join(', ')}`) : null),
    e.summary ? h('p', { class: 'snippet' }, e.summary) : null);
}

function endText(e) {
  return `${e.name} (${e.type})`;
}

function sameName(a, b) {
  const norm = (x) => x.split(/\s+/).filter(Boolean).join(' ').toLowerCase();
  return norm(a) === norm(b);
}

function today() {
  return new Date().toISOString().slice(0, 10);
}

// The server lists every route in its OpenAPI description: ask it whether it computes analytics,
// rather than calling the route and logging a 404 on servers that do not.
async function hasAnalytics() {
  try {
    const response = await fetch('/openapi.json', { cache: 'no-store', credentials: 'same-origin' });
    if (!response.ok) return false;
    const doc = await response.json();
    return Boolean(doc?.paths?.[ANALYTICS_PATH]?.post);
  } catch {
    return false;
  }
}

function banner(title, message) {
  return h('div', { class: 'banner banner--error' },
    h('p', { class: 'banner__title' }, title),
    h('p', null, message || 'Unknown error.'));
}

function readHashState(params) {
  const p = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const date = (v) => (/^\d{4}-\d{2}-\d{2}$/.test(v ?? '') ? v : '');
  const hops = Number(p.get('hops'));
  return {
    query: p.get('q') ?? '',
    centre: params[0] ?? '',
    hops: [1, 2, 3].includes(hops) ? hops : 2,
    asOf: date(p.get('as_of')),
    knownAt: date(p.get('known_at')),
  };
}
