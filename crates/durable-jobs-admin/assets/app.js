// The durable-jobs admin dashboard: plain JavaScript over the admin API, no framework and
// no build step, so the crate can embed it and serve it offline.
//
// Security: the page is served with `Content-Security-Policy: default-src 'self'`, so it
// holds no inline script, and every value from the API reaches the page as text nodes
// (never as HTML): a job's data cannot run as code here. The token lives in
// sessionStorage only and travels in the Authorization header; no cookie is used, so a
// request that another site makes the browser send carries no credentials.
'use strict';

const TOKEN_KEY = 'durable-jobs-admin.token';
// How often a view asks the API again.
const POLL_MS = 2000;
// How far back the overview's trends look; older samples are dropped.
const TREND_MS = 5 * 60 * 1000;
// Pool instances whose status the overview reads on each refresh (a pool has as many
// instances as its concurrency, usually few; past this the sums are marked partial).
const POOL_SCAN = 20;
// Dead letters one page of the instance view shows.
const DEAD_LETTER_PAGE = 50;
// Queued events shown on a pool instance's page (the head of its queue).
const QUEUED_PAGE = 50;
// Instances one page of the list shows.
const LIST_PAGE = 50;

const COUNT_ROWS = [
  ['active', 'Active', 'status=active'],
  ['paused', 'Paused', 'status=paused'],
  ['stopped', 'Stopped', 'status=stopped'],
  ['error', 'Error', 'status=error'],
  ['withDeadLetters', 'With dead letters', 'deadLetters=1'],
  ['withFailedBatches', 'With failed batches', 'failedBatches=1'],
];

const $ = (id) => document.getElementById(id);

// The API lives next to the dashboard's files: `<base>/assets/app.js` and `<base>/api/`.
// Taken from this script's own URL, so it holds wherever the router is mounted.
const API_BASE = new URL('../api/', document.currentScript.src);

// Builds an element: `attrs` become attributes (`on…` become listeners), children become
// nodes; strings are always text, never parsed as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// An instance id as text: the API sends it as `{kind, name, key}`.
function idText(id) {
  return typeof id === 'string' ? id : `${id.kind}:${id.name}:${id.key}`;
}

function instanceHref(id) {
  return '#/instances/' + encodeURIComponent(idText(id));
}

function jobHref(kind, name, query) {
  const base = `#/jobs/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`;
  return query ? `${base}?${query}` : base;
}

function formatTime(ms) {
  if (typeof ms !== 'number') return '—';
  const seconds = Math.round((ms - Date.now()) / 1000);
  const span = formatSpan(Math.abs(seconds) * 1000);
  const relative = seconds >= 0 ? `in ${span}` : `${span} ago`;
  return `${new Date(ms).toLocaleString()} (${relative})`;
}

function formatSpan(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function signed(n) {
  return n > 0 ? `+${n}` : String(n);
}

// ---------------------------------------------------------------------------------------
// The token and the API.

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Calls `api/<path>` with the token; answers the parsed JSON or throws an ApiError. A 401
// forgets the token and shows the form again.
async function api(path, options = {}) {
  const current = token();
  if (!current) throw new ApiError(401, 'no token');
  const init = {
    method: options.method || 'GET',
    headers: { Authorization: `Bearer ${current}`, Accept: 'application/json' },
    credentials: 'omit',
    cache: 'no-store',
  };
  if (options.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(new URL(path, API_BASE), init);
  } catch (e) {
    throw new ApiError(0, `the server cannot be reached (${e.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error && body.error.message) || response.statusText;
    if (response.status === 401) signOut(`The server refused the token: ${message}`);
    throw new ApiError(response.status, message);
  }
  return body;
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) return;
  const box = $('error');
  box.textContent = `Error: ${e.message}`;
  box.hidden = false;
}

function clearError() {
  const box = $('error');
  box.hidden = true;
  box.textContent = '';
}

function notify(text) {
  $('notice').textContent = text;
}

// ---------------------------------------------------------------------------------------
// Views. Each returns an object with `stop()`; the router stops the one on screen before
// it shows another.

let current = null;

// Runs `load` now and then every POLL_MS while the tab is visible. Views update what
// changed in place, so keyboard focus survives a refresh.
function poller(load) {
  let timer = null;
  let stopped = false;
  let running = null;
  const tick = async () => {
    clearTimeout(timer);
    if (stopped) return;
    if (!document.hidden) {
      running = (async () => {
        try {
          await load();
          clearError();
        } catch (e) {
          if (!stopped) showError(e);
        }
      })();
      await running;
      running = null;
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    // Loads again now (after an action), once the load under way has ended.
    async refresh() {
      if (running) await running;
      await tick();
    },
  };
}

// Calls `render` only when `data` differs from the last call with the same `key`.
function changeTracker() {
  const last = new Map();
  return (key, data, render) => {
    const text = JSON.stringify(data);
    if (last.get(key) === text) return;
    last.set(key, text);
    render();
  };
}

function heading(id, ...text) {
  return h('h1', { id, tabindex: '-1' }, ...text);
}

// The overview's samples, kept for the tab's life: job key → [{t, values}].
const samples = new Map();

function recordSample(key, values) {
  const now = Date.now();
  const list = samples.get(key) || [];
  list.push({ t: now, values });
  while (list.length > 1 && now - list[0].t > TREND_MS) list.shift();
  samples.set(key, list);
  return list;
}

// "+3 in 1 min 20 s" for one value over the kept samples, and a rate per minute.
function trend(list, field, withRate) {
  if (list.length < 2) return '—';
  const first = list[0];
  const last = list[list.length - 1];
  const a = first.values[field];
  const b = last.values[field];
  if (typeof a !== 'number' || typeof b !== 'number') return '—';
  const span = last.t - first.t;
  let text = `${signed(b - a)} in ${formatSpan(span)}`;
  if (withRate && span > 0) text += ` (${(((b - a) * 60000) / span).toFixed(1)}/min)`;
  return text;
}

function overview(view) {
  const jobsBox = h('div', { id: 'jobs', class: 'jobs' });
  const updated = h('p', { id: 'overview-updated', class: 'hint' });
  view.append(
    heading('overview-title', 'Jobs'),
    h(
      'p',
      { id: 'trend-note', class: 'hint' },
      'Instance counts per status, refreshed every 2 s. "Change" compares the newest ',
      'sample with the oldest one this tab kept in the last 5 minutes. The counts API ',
      'reports instances, not events: processed and pending events are summed over each ',
      "WorkerPool's instances from their status; Continuous and Debounce jobs show ",
      'instance counts only.',
    ),
    jobsBox,
    updated,
  );
  const cards = new Map();

  const card = (job) => {
    const key = `${job.kind}-${job.name}`;
    if (cards.has(key)) return cards.get(key);
    const rows = COUNT_ROWS.filter(
      ([field]) =>
        (field !== 'withDeadLetters' || job.kind === 'workerPool') &&
        (field !== 'withFailedBatches' || job.kind === 'debounce'),
    ).map(([field, label, query]) =>
      h(
        'tr',
        {},
        h('th', { scope: 'row' }, h('a', { href: jobHref(job.kind, job.name, query) }, label)),
        h('td', { id: `count-${key}-${field}`, class: 'num' }, '…'),
        h('td', { id: `change-${key}-${field}`, class: 'change' }, '—'),
      ),
    );
    if (job.kind === 'workerPool') {
      for (const [field, label] of [
        ['pending', 'Pending events'],
        ['processed', 'Processed events'],
      ]) {
        rows.push(
          h(
            'tr',
            { class: 'events' },
            h('th', { scope: 'row' }, label),
            h('td', { id: `${field}-${key}`, class: 'num' }, '…'),
            h('td', { id: `change-${key}-${field}`, class: 'change' }, '—'),
          ),
        );
      }
    }
    const note = h('p', { id: `note-${key}`, class: 'hint' });
    const el = h(
      'article',
      { id: `job-${key}`, class: 'job' },
      h(
        'h2',
        {},
        h('a', { id: `job-link-${key}`, href: jobHref(job.kind, job.name) }, job.name),
        ' ',
        h('span', { class: 'kind' }, job.kind),
      ),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'counts' },
          h('caption', { class: 'sr-only' }, `Instances of ${job.name} per status`),
          h(
            'thead',
            {},
            h('tr', {}, h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Instances'), h('th', { scope: 'col' }, 'Change')),
          ),
          h('tbody', {}, rows),
        ),
      ),
      note,
    );
    jobsBox.append(el);
    const entry = { key, el, note };
    cards.set(key, entry);
    return entry;
  };

  const poolEvents = async (job) => {
    const page = await api(
      `jobs/workerPool/${encodeURIComponent(job.name)}/instances?limit=${POOL_SCAN}`,
    );
    const statuses = await Promise.all(
      page.instances.map((s) => api(`instances/${encodeURIComponent(idText(s.id))}`)),
    );
    let processed = 0;
    let pending = 0;
    for (const one of statuses) {
      const status = one.status && one.status.status;
      if (status) {
        processed += status.processed || 0;
        pending += status.pending || 0;
      }
    }
    return { processed, pending, partial: page.next !== null, scanned: page.instances.length };
  };

  return poller(async () => {
    const jobs = await api('jobs');
    if (jobs.length === 0) {
      jobsBox.replaceChildren(h('p', { id: 'no-jobs' }, 'The runtime has no jobs registered.'));
      return;
    }
    const results = await Promise.all(
      jobs.map(async (job) => {
        const path = `jobs/${encodeURIComponent(job.kind)}/${encodeURIComponent(job.name)}/counts`;
        const counts = await api(path);
        const events = job.kind === 'workerPool' ? await poolEvents(job) : null;
        return { job, counts, events };
      }),
    );
    for (const { job, counts, events } of results) {
      const entry = card(job);
      const values = { ...counts };
      if (events) {
        values.pending = events.pending;
        values.processed = events.processed;
      }
      const list = recordSample(entry.key, values);
      for (const [field, value] of Object.entries(values)) {
        const cell = $(`count-${entry.key}-${field}`) || $(`${field}-${entry.key}`);
        if (!cell) continue;
        cell.textContent = String(value);
        const change = $(`change-${entry.key}-${field}`);
        if (change) change.textContent = trend(list, field, field === 'processed');
      }
      entry.note.textContent =
        events && events.partial
          ? `Events summed over the first ${events.scanned} instances only.`
          : '';
    }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  });
}

function instanceList(view, kind, name, params) {
  const status = params.get('status') || '';
  const deadLetters = params.get('deadLetters') === '1';
  const failedBatches = params.get('failedBatches') === '1';
  const prefix = params.get('prefix') || '';
  const after = params.get('after');

  const statusSelect = h(
    'select',
    { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'Any'),
    ['active', 'paused', 'stopped', 'error'].map((s) =>
      h('option', { value: s, selected: s === status }, s),
    ),
  );
  const deadBox = h('input', { id: 'filter-dead-letters', type: 'checkbox', checked: deadLetters });
  const failedBox = h('input', { id: 'filter-failed-batches', type: 'checkbox', checked: failedBatches });
  const prefixInput = h('input', {
    id: 'filter-prefix',
    type: 'search',
    value: prefix,
    spellcheck: 'false',
    autocapitalize: 'off',
    placeholder: kind === 'workerPool' ? 'e.g. 0' : 'e.g. tenant-',
  });

  const query = (extra) => {
    const q = new URLSearchParams();
    if (statusSelect.value) q.set('status', statusSelect.value);
    if (deadBox.checked && kind === 'workerPool') q.set('deadLetters', '1');
    if (failedBox.checked && kind === 'debounce') q.set('failedBatches', '1');
    if (prefixInput.value) q.set('prefix', prefixInput.value);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  };

  const form = h(
    'form',
    {
      id: 'filters',
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = jobHref(kind, name, query());
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'filter-status' }, 'Status'), statusSelect),
    kind === 'workerPool'
      ? h('div', { class: 'field check' }, deadBox, h('label', { for: 'filter-dead-letters' }, 'With dead letters'))
      : null,
    kind === 'debounce'
      ? h('div', { class: 'field check' }, failedBox, h('label', { for: 'filter-failed-batches' }, 'With failed batches'))
      : null,
    h('div', { class: 'field' }, h('label', { for: 'filter-prefix' }, 'Key starts with'), prefixInput),
    h('button', { id: 'filter-apply', type: 'submit' }, 'Apply'),
  );

  const body = h('tbody', { id: 'instances-body' });
  const empty = h('p', { id: 'no-instances', hidden: true }, 'No instance matches.');
  const first = h('button', {
    id: 'first-page',
    type: 'button',
    disabled: !after,
    onclick: () => {
      location.hash = jobHref(kind, name, query());
    },
  }, 'First page');
  const next = h('button', { id: 'next-page', type: 'button', disabled: true }, 'Next page');
  let nextCursor = null;
  next.addEventListener('click', () => {
    if (nextCursor !== null) location.hash = jobHref(kind, name, query({ after: nextCursor }));
  });

  const extraHeader = kind === 'workerPool' ? 'Dead letters' : kind === 'debounce' ? 'Failed batches' : null;
  view.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Jobs'), ' / ', `${kind}`),
    heading('list-title', `Instances of ${name} `, h('span', { class: 'kind' }, kind)),
    form,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { id: 'instances', class: 'list' },
        h('caption', { class: 'sr-only' }, `Instances of ${name}`),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', { scope: 'col' }, 'Instance'),
            h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, 'Pending'),
            extraHeader ? h('th', { scope: 'col' }, extraHeader) : null,
            h('th', { scope: 'col' }, 'Updated'),
          ),
        ),
        body,
      ),
    ),
    empty,
    h('div', { class: 'pager' }, first, next),
  );

  const changed = changeTracker();
  const apiQuery = new URLSearchParams();
  if (status) apiQuery.set('status', status);
  if (deadLetters) apiQuery.set('deadLetters', 'true');
  if (failedBatches) apiQuery.set('failedBatches', 'true');
  if (prefix) apiQuery.set('prefix', prefix);
  if (after) apiQuery.set('after', after);
  apiQuery.set('limit', String(LIST_PAGE));
  const path = `jobs/${encodeURIComponent(kind)}/${encodeURIComponent(name)}/instances?${apiQuery}`;

  return poller(async () => {
    const page = await api(path);
    nextCursor = page.next;
    next.disabled = page.next === null;
    changed('rows', page.instances, () => {
      empty.hidden = page.instances.length > 0;
      body.replaceChildren(
        ...page.instances.map((s) =>
          h(
            'tr',
            {},
            h('td', {}, h('a', { href: instanceHref(s.id), class: 'mono' }, idText(s.id))),
            h('td', {}, h('span', { class: `badge ${s.status.status}` }, s.status.status)),
            h('td', { class: 'num' }, s.pending),
            kind === 'workerPool' ? h('td', { class: 'num' }, s.deadLetters) : null,
            kind === 'debounce' ? h('td', { class: 'num' }, s.failedBatches) : null,
            h('td', {}, formatTime(s.updatedAt)),
          ),
        ),
      );
    });
  });
}

// The earliest time an instance's status says something will happen, with its name.
function nextAlarm(payload) {
  let best = null;
  for (const [field, label] of [
    ['nextRunAt', 'next run'],
    ['flushAt', 'flush'],
    ['retryAt', 'retry'],
    ['nextDelayedAt', 'delayed event'],
    ['purgeAt', 'purge'],
  ]) {
    const at = payload && payload[field];
    if (typeof at === 'number' && (best === null || at < best.at)) best = { at, label };
  }
  return best;
}

function instancePage(view, id) {
  const [kind, name] = id.split(':');
  const enc = encodeURIComponent(id);
  const changed = changeTracker();
  let poll = null;

  const act = async (button, op, question, describe) => {
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      const answer = await api(`instances/${enc}/actions`, { method: 'POST', body: op });
      notify(describe(answer));
      clearError();
    } catch (e) {
      showError(e);
    } finally {
      button.disabled = false;
    }
    if (poll) await poll.refresh();
  };
  const actionButton = (idAttr, label, op, question, describe) => {
    const button = h('button', { id: idAttr, type: 'button' }, label);
    if (question) button.classList.add('danger');
    button.addEventListener('click', () => act(button, op, question, describe));
    return button;
  };

  const done = (what) => () => `${what} ${id}.`;
  const actions = {
    continuous: [
      actionButton('action-trigger', 'Run now', { op: 'continuousTrigger' }, null, done('Triggered')),
      actionButton(
        'action-stop',
        'Stop',
        { op: 'continuousStop', reason: 'stopped from the admin dashboard' },
        `Stop ${id}? It will not run again.`,
        (a) => (a.stopped ? `Stopped ${id}.` : 'There was nothing to stop.'),
      ),
    ],
    debounce: [
      actionButton(
        'action-flush',
        'Flush now',
        { op: 'debounceFlush' },
        null,
        (a) => `Flush requested: ${a.eventCount} events, ${a.retriedBatches} failed batches retried.`,
      ),
      actionButton(
        'action-clear',
        'Clear',
        { op: 'debounceClear' },
        `Clear ${id}? Its pending batch and failed batches are discarded.`,
        (a) => `Discarded ${a.discarded} events.`,
      ),
    ],
    workerPool: [
      actionButton('action-pause', 'Pause', { op: 'workerPoolPause' }, null, done('Paused')),
      actionButton('action-resume', 'Resume', { op: 'workerPoolResume' }, null, done('Resumed')),
    ],
    task: [
      actionButton('action-trigger', 'Run now', { op: 'taskTrigger' }, null, done('Triggered')),
      actionButton(
        'action-terminate',
        'Terminate',
        { op: 'taskTerminate' },
        `Terminate ${id}? Its timer is cancelled and its state deleted.`,
        (a) => (a.terminated ? `Terminated ${id}.` : 'There was nothing to terminate.'),
      ),
    ],
  }[kind] || [];

  const field = (idAttr, label) => [h('dt', {}, label), h('dd', { id: idAttr }, '…')];
  const summary = h(
    'dl',
    { id: 'instance-summary', class: 'summary' },
    field('instance-status-name', 'Status'),
    kind === 'workerPool' ? field('pending-count', 'Pending events') : null,
    kind === 'workerPool' ? field('processed-count', 'Processed events') : null,
    kind === 'workerPool' ? field('dead-letter-count', 'Dead letters') : null,
    kind === 'workerPool' ? field('delayed-count', 'Delayed events') : null,
    kind === 'task' ? field('task-phase', 'Timer') : null,
    kind === 'task' ? field('task-event-count', 'Events received') : null,
    kind === 'task' ? field('execution-count', 'Successful executions') : null,
    kind === 'continuous' ? field('run-count', 'Successful runs') : null,
    kind === 'debounce' ? field('batch-count', 'Events in the open batch') : null,
    kind === 'debounce' ? field('failed-batch-count', 'Failed batches') : null,
    field('next-alarm', 'Next alarm'),
    field('last-error', 'Last error'),
  );

  const statusPre = h('pre', { id: 'instance-status', tabindex: '0' }, '…');
  const statePre = h('pre', { id: 'instance-state', tabindex: '0' }, '…');

  // Dead letters (WorkerPool).
  const deadBody = h('tbody', { id: 'dead-letters-body' });
  const noDead = h('p', { id: 'no-dead-letters', hidden: true }, 'No dead letters.');
  const deadTable = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id: 'dead-letters', class: 'list' },
      h('caption', { class: 'sr-only' }, `Dead letters of ${id}`),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Event id', 'Error', 'Attempts', 'Dead since', 'Event', 'Actions'].map((t) =>
            h('th', { scope: 'col' }, t),
          ),
        ),
      ),
      deadBody,
    ),
  );
  const deadCursors = [null];
  let deadNextCursor = null;
  const deadPager = h('div', { class: 'pager', hidden: true });
  const deadFirst = h('button', { id: 'dead-letters-first', type: 'button', disabled: true }, 'First dead letters');
  const deadNext = h('button', { id: 'dead-letters-next', type: 'button', disabled: true }, 'Next dead letters');
  deadPager.append(deadFirst, deadNext);
  deadFirst.addEventListener('click', () => {
    deadCursors.length = 1;
    poll.refresh();
  });
  deadNext.addEventListener('click', () => {
    if (deadNextCursor !== null) deadCursors.push(deadNextCursor);
    poll.refresh();
  });
  const replayAll = actionButton(
    'replay-all',
    'Replay all',
    { op: 'workerPoolReplay' },
    null,
    (a) => `Replayed ${a.count} dead letters.`,
  );
  const discardAll = actionButton(
    'discard-all',
    'Discard all',
    { op: 'workerPoolDiscard' },
    `Discard every dead letter of ${id}? They cannot be replayed afterwards.`,
    (a) => `Discarded ${a.count} dead letters.`,
  );
  const deadSection =
    kind === 'workerPool'
      ? h(
          'section',
          { id: 'dead-letters-section', 'aria-labelledby': 'dead-letters-title' },
          h('h2', { id: 'dead-letters-title' }, 'Dead letters'),
          h('div', { class: 'actions' }, replayAll, discardAll),
          noDead,
          deadTable,
          deadPager,
        )
      : null;

  // Failed batches (Debounce).
  const failedBody = h('tbody', { id: 'failed-batches-body' });
  const noFailed = h('p', { id: 'no-failed-batches', hidden: true }, 'No failed batches.');
  const failedSection =
    kind === 'debounce'
      ? h(
          'section',
          { id: 'failed-batches-section', 'aria-labelledby': 'failed-batches-title' },
          h('h2', { id: 'failed-batches-title' }, 'Failed batches'),
          h('p', { class: 'hint' }, '"Flush now" retries them; "Discard failed batches" drops them and keeps the open batch.'),
          h(
            'div',
            { class: 'actions' },
            actionButton(
              'discard-failed',
              'Discard failed batches',
              { op: 'debounceDiscardFailed' },
              `Discard the failed batches of ${id}? They cannot be retried afterwards.`,
              (a) => `Discarded ${a.discarded} events of failed batches.`,
            ),
          ),
          noFailed,
          h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { id: 'failed-batches', class: 'list' },
              h('caption', { class: 'sr-only' }, `Failed batches of ${id}`),
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  ['#', 'Events', 'Error', 'Attempts', 'Failed', 'State'].map((t) =>
                    h('th', { scope: 'col' }, t),
                  ),
                ),
              ),
              failedBody,
            ),
          ),
        )
      : null;

  // Queued events (WorkerPool): the head of the queue, each cancellable.
  const queuedBody = h('tbody', { id: 'queued-events-body' });
  const noQueued = h('p', { id: 'no-queued-events', hidden: true }, 'Nothing queued.');
  const moreQueued = h('p', { id: 'more-queued-events', class: 'hint', hidden: true });
  const queuedTable = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id: 'queued-events', class: 'list' },
      h('caption', { class: 'sr-only' }, `Queued events of ${id}`),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Event id', 'Priority', 'Enqueued', 'Failed attempts', 'Event', 'Actions'].map((t) =>
            h('th', { scope: 'col' }, t),
          ),
        ),
      ),
      queuedBody,
    ),
  );
  const queuedSection =
    kind === 'workerPool'
      ? h(
          'section',
          { id: 'queued-events-section', 'aria-labelledby': 'queued-events-title' },
          h('h2', { id: 'queued-events-title' }, 'Queued events'),
          noQueued,
          queuedTable,
          moreQueued,
        )
      : null;

  // Recent lifecycle events, where the server keeps them.
  const eventsList = h('ol', { id: 'recent-events', class: 'events' });
  const eventsSection = h(
    'section',
    { id: 'recent-events-section', 'aria-labelledby': 'recent-events-title', hidden: true },
    h('h2', { id: 'recent-events-title' }, 'Recent events'),
    h('p', { class: 'hint' }, 'The latest lifecycle events of this instance seen by this server, newest first.'),
    eventsList,
  );
  let eventsKept = true;

  // Sections a kind does not have are null; `append` would show them as text.
  const sections = [
    h(
      'p',
      { class: 'crumbs' },
      h('a', { href: '#/' }, 'Jobs'),
      ' / ',
      h('a', { href: jobHref(kind, name) }, name),
    ),
    heading('instance-title', h('span', { class: 'mono' }, id)),
    h('section', { id: 'summary-section', 'aria-label': 'Summary' }, summary),
    actions.length ? h('div', { id: 'instance-actions', class: 'actions' }, actions) : null,
    queuedSection,
    deadSection,
    failedSection,
    eventsSection,
    h(
      'section',
      { id: 'raw-section', 'aria-labelledby': 'raw-title' },
      h('h2', { id: 'raw-title' }, 'Status and state'),
      h('h3', {}, 'Status'),
      statusPre,
      h('h3', {}, 'State'),
      statePre,
    ),
  ];
  view.append(...sections.filter((section) => section !== null));

  const setText = (idAttr, text) => {
    const el = $(idAttr);
    if (el) el.textContent = text;
  };

  const renderDead = (items) => {
    noDead.hidden = items.length > 0;
    deadTable.hidden = items.length === 0;
    replayAll.disabled = items.length === 0;
    discardAll.disabled = items.length === 0;
    deadBody.replaceChildren(
      ...items.map((d) => {
        const replay = actionButton(
          null,
          'Replay',
          { op: 'workerPoolReplay', eventIds: [d.eventId] },
          null,
          (a) => `Replayed ${a.count} dead letter (${d.eventId}).`,
        );
        replay.classList.add('replay');
        replay.dataset.eventId = d.eventId;
        replay.setAttribute('aria-label', `Replay event ${d.eventId}`);
        const discard = actionButton(
          null,
          'Discard',
          { op: 'workerPoolDiscard', eventIds: [d.eventId] },
          `Discard dead letter ${d.eventId}? It cannot be replayed afterwards.`,
          (a) => `Discarded ${a.count} dead letter (${d.eventId}).`,
        );
        discard.classList.add('discard');
        discard.dataset.eventId = d.eventId;
        discard.setAttribute('aria-label', `Discard event ${d.eventId}`);
        return h(
          'tr',
          { class: 'dead-letter', 'data-event-id': d.eventId },
          h('td', { class: 'mono' }, d.eventId),
          h('td', {}, d.error),
          h('td', { class: 'num' }, d.attempts),
          h('td', {}, formatTime(d.deadAt)),
          h('td', {}, h('pre', { class: 'inline' }, JSON.stringify(d.event, null, 2))),
          h('td', { class: 'row-actions' }, replay, discard),
        );
      }),
    );
  };

  const renderQueued = (items, more) => {
    noQueued.hidden = items.length > 0;
    queuedTable.hidden = items.length === 0;
    moreQueued.hidden = !more;
    moreQueued.textContent = more ? `The first ${items.length} queued events are shown.` : '';
    queuedBody.replaceChildren(
      ...items.map((q) => {
        const cancel = actionButton(
          null,
          'Cancel',
          { op: 'workerPoolCancel', eventId: q.eventId },
          `Cancel queued event ${q.eventId}? It will not run.`,
          (a) => (a.cancelled ? `Cancelled ${q.eventId}.` : `${q.eventId} is running or gone; not cancelled.`),
        );
        cancel.classList.add('cancel');
        cancel.dataset.eventId = q.eventId;
        cancel.setAttribute('aria-label', `Cancel event ${q.eventId}`);
        return h(
          'tr',
          { class: 'queued-event', 'data-event-id': q.eventId },
          h('td', { class: 'mono' }, q.eventId),
          h('td', { class: 'num' }, q.priority),
          h('td', {}, formatTime(q.enqueuedAt)),
          h('td', { class: 'num' }, q.failedAttempts),
          h('td', {}, h('pre', { class: 'inline' }, JSON.stringify(q.event, null, 2))),
          h('td', { class: 'row-actions' }, cancel),
        );
      }),
    );
  };

  const renderEvents = (events) => {
    eventsList.replaceChildren(
      ...events
        .slice()
        .reverse()
        .map((e) => {
          const { timestamp, jobName, instanceId, type, ...details } = e;
          const rest = Object.keys(details).length ? ` ${JSON.stringify(details)}` : '';
          return h('li', { class: 'event' }, h('span', { class: 'mono' }, type), ` at ${formatTime(timestamp)}${rest}`);
        }),
    );
  };

  const renderFailed = (batches) => {
    noFailed.hidden = batches.length > 0;
    failedBody.replaceChildren(
      ...batches.map((b) =>
        h(
          'tr',
          {},
          h('td', { class: 'num' }, b.seq),
          h('td', { class: 'num' }, b.eventCount),
          h('td', {}, b.error),
          h('td', { class: 'num' }, b.attempts),
          h('td', {}, formatTime(b.failedAt)),
          h('td', {}, h('pre', { class: 'inline' }, JSON.stringify(b.state, null, 2))),
        ),
      ),
    );
  };

  poll = poller(async () => {
    const instance = await api(`instances/${enc}`);
    // Every status answer carries its payload under `status`; it is null for an
    // instance that does not exist (yet, or any more).
    const payload = instance.status && instance.status.status;
    const statusName = payload ? payload.status.status : 'not found';
    setText('instance-status-name', statusName);
    if (payload) {
      setText('pending-count', String(payload.pending));
      setText('processed-count', String(payload.processed));
      setText('dead-letter-count', String(payload.deadLetters));
      setText('run-count', String(payload.runCount));
      setText('batch-count', String(payload.eventCount));
      setText('failed-batch-count', String(payload.failedBatches));
      setText('delayed-count', String(payload.delayed ?? 0));
      setText('task-phase', payload.phase === 'idle' ? 'none (idle)' : 'set');
      setText('task-event-count', String(payload.eventCount));
      setText('execution-count', String(payload.executionCount));
      const alarm = nextAlarm(payload);
      setText('next-alarm', alarm ? `${alarm.label} at ${formatTime(alarm.at)}` : 'none scheduled');
      // Offer what applies now: Pause on a running pool instance, Resume on a paused one.
      const pause = $('action-pause');
      const resume = $('action-resume');
      if (pause && resume) {
        pause.hidden = statusName === 'paused';
        resume.hidden = statusName !== 'paused';
        // Keyboard focus must not vanish with the button that was just used.
        if (document.activeElement === pause && pause.hidden) resume.focus();
        if (document.activeElement === resume && resume.hidden) pause.focus();
      }
      // A stopped Continuous instance neither runs nor stops again.
      for (const idAttr of ['action-trigger', 'action-stop', 'action-terminate']) {
        const button = $(idAttr);
        if (!button) continue;
        button.hidden = statusName === 'stopped';
        if (button.hidden && document.activeElement === button) $('instance-title').focus();
      }
      const error = payload.lastError || (payload.status.status === 'error' ? payload.status : null);
      setText('last-error', error ? error.message || error.error || JSON.stringify(error) : 'none');
    } else {
      // An ended task (or one never created) has nothing to run or end.
      for (const idAttr of ['action-trigger', 'action-terminate']) {
        const button = $(idAttr);
        if (!button) continue;
        button.hidden = true;
        if (document.activeElement === button) $('instance-title').focus();
      }
    }
    changed('status', instance.status, () => {
      statusPre.textContent = JSON.stringify(instance.status, null, 2);
    });
    changed('state', instance.state, () => {
      statePre.textContent =
        instance.state === null
          ? kind === 'workerPool'
            ? '(WorkerPool instances keep no state)'
            : '(no state)'
          : JSON.stringify(instance.state, null, 2);
    });

    if (kind === 'workerPool') {
      const after = deadCursors[deadCursors.length - 1];
      const q = new URLSearchParams({ limit: String(DEAD_LETTER_PAGE) });
      if (after !== null) q.set('after', String(after));
      const answer = await api(`instances/${enc}/dead-letters?${q}`);
      const items = answer.items || [];
      deadNextCursor = items.length === DEAD_LETTER_PAGE ? items[items.length - 1].seq : null;
      deadNext.disabled = deadNextCursor === null;
      deadFirst.disabled = deadCursors.length === 1;
      // Paging is shown only when there is more than one page.
      deadPager.hidden = deadNext.disabled && deadFirst.disabled;
      changed('dead', items, () => renderDead(items));
    }
    if (kind === 'workerPool') {
      const answer = await api(`instances/${enc}/pending?limit=${QUEUED_PAGE}`);
      const items = answer.items || [];
      changed('queued', answer, () => renderQueued(items, answer.next != null));
    }
    if (eventsKept) {
      try {
        const answer = await api(`instances/${enc}/events`);
        eventsSection.hidden = false;
        changed('events', answer.events, () => renderEvents(answer.events || []));
      } catch (e) {
        // A server that keeps no recent events says so with a 404: show nothing.
        if (!(e instanceof ApiError && e.status === 404)) throw e;
        eventsKept = false;
      }
    }
    if (kind === 'debounce') {
      const answer = await api(`instances/${enc}/failed-batches`);
      const batches = answer.batches || [];
      changed('failed', batches, () => renderFailed(batches));
    }
  });
  return poll;
}

// ---------------------------------------------------------------------------------------
// Routing and the token form.

function stopCurrent() {
  if (current) current.stop();
  current = null;
}

function showLogin(message) {
  stopCurrent();
  $('view').replaceChildren();
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token-input').focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(message);
}

function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

function route() {
  stopCurrent();
  clearError();
  notify('');
  const view = $('view');
  view.replaceChildren();
  if (!token()) {
    showLogin();
    return;
  }
  $('login').hidden = true;
  $('sign-out').hidden = false;
  const hash = location.hash.replace(/^#/, '') || '/';
  const at = hash.indexOf('?');
  const path = at < 0 ? hash : hash.slice(0, at);
  const params = new URLSearchParams(at < 0 ? '' : hash.slice(at + 1));
  const parts = path.split('/').filter(Boolean).map(decode);
  if (parts.includes(null)) {
    current = null;
  } else if (parts.length === 0) {
    current = overview(view);
  } else if (parts[0] === 'jobs' && parts.length === 3) {
    current = instanceList(view, parts[1], parts[2], params);
  } else if (parts[0] === 'instances' && parts.length === 2) {
    current = instancePage(view, parts[1]);
  }
  if (!current) {
    view.append(heading('not-found', 'No such page'), h('p', {}, h('a', { href: '#/' }, 'Back to the jobs')));
  }
  const title = view.querySelector('h1');
  if (title) title.focus({ preventScroll: true });
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('token-input');
  const value = input.value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  input.value = '';
  $('login-error').textContent = '';
  route();
});

$('sign-out').addEventListener('click', () => signOut('The token was forgotten.'));
window.addEventListener('hashchange', route);
route();
