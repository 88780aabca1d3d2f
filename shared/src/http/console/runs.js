// The runs list: newest first, a status filter, pages of PAGE_SIZE with the API's
// cursors (a stack of them, so "Newer" goes back), and a form to start a run. While a
// run on the page is unfinished, the page is read again every REFRESH_MS.

import { api, enc } from './api.js';
import { badge, errorBox, FINISHED, h, RUN_STATUSES, time } from './ui.js';

const PAGE_SIZE = 20;
const REFRESH_MS = 2000;

export function runsView(root, query) {
  const status = RUN_STATUSES.includes(query.get('status')) ? query.get('status') : '';
  const cursors = ['']; // cursors[i] is the cursor of page i
  let page = 0;
  let timer = null;
  let loads = 0; // only the newest load may draw
  const ctl = new AbortController();

  const filter = h('select', {
    id: 'status-filter', 'aria-label': 'status filter',
    onchange: () => {
      location.hash = filter.value ? `#/?status=${enc(filter.value)}` : '#/';
    },
  }, h('option', { value: '' }, 'all statuses'),
  RUN_STATUSES.map((st) => h('option', { value: st }, st.replace(/_/g, ' '))));
  filter.value = status;

  const prompt = h('input', {
    id: 'new-prompt', type: 'text', required: true, maxlength: 4000,
    placeholder: 'calculate 2+3 and list todos then add a todo with the result',
    'aria-label': 'prompt',
  });
  const form = h('form', {
    id: 'new-run', class: 'new-run',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const run = await api('runs', { method: 'POST', body: { prompt: prompt.value } });
        location.hash = `#/runs/${enc(run.run_id)}`;
      } catch (err) {
        message.replaceChildren(errorBox(err));
      }
    },
  }, prompt, h('button', { type: 'submit' }, 'Start run'));

  const message = h('div', { id: 'runs-message' });
  const tbody = h('tbody');
  const table = h('table', { id: 'runs', class: 'grid', dataset: { filter: status || 'all' } },
    h('thead', {}, h('tr', {}, ['Created', 'Status', 'Prompt', 'Steps', 'Run'].map((t) => h('th', {}, t)))),
    tbody);
  const prev = h('button', { id: 'prev-page', type: 'button', onclick: () => load(page - 1) }, '← Newer');
  const next = h('button', { id: 'next-page', type: 'button', onclick: () => load(page + 1) }, 'Older →');
  const pageLabel = h('span', { id: 'page-label', class: 'muted' });
  const refresh = h('button', { id: 'refresh', type: 'button', onclick: () => load(page) }, 'Refresh');

  root.replaceChildren(
    h('section', { class: 'card' },
      h('div', { class: 'row spread' }, h('h1', {}, 'Runs'),
        h('div', { class: 'row' }, h('label', { for: 'status-filter' }, 'Status'), filter, refresh)),
      form, message, table,
      h('div', { class: 'row pager' }, prev, pageLabel, next)),
  );

  async function load(p, { quiet = false } = {}) {
    if (p < 0 || p >= cursors.length) return;
    clearTimeout(timer);
    const ticket = ++loads;
    if (!quiet) table.dataset.state = 'loading';
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (status) params.set('status', status);
    if (cursors[p]) params.set('cursor', cursors[p]);
    let data;
    try {
      data = await api(`runs?${params}`, { signal: ctl.signal });
    } catch (err) {
      if (ctl.signal.aborted || ticket !== loads) return;
      message.replaceChildren(errorBox(err));
      table.dataset.state = 'error';
      return;
    }
    if (ticket !== loads) return;
    message.replaceChildren();
    page = p;
    cursors.length = p + 1;
    if (data.next_cursor) cursors.push(data.next_cursor);
    tbody.replaceChildren(...data.runs.map(row));
    if (data.runs.length === 0) {
      tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: 5, class: 'muted' },
        status ? `No ${status.replace(/_/g, ' ')} runs.` : 'No runs yet: start one above.')));
    }
    prev.disabled = page === 0;
    next.disabled = !data.next_cursor;
    pageLabel.textContent = `page ${page + 1}`;
    table.dataset.state = 'ready';
    table.dataset.page = String(page + 1);
    if (data.runs.some((r) => !FINISHED.has(r.status))) {
      timer = setTimeout(() => load(page, { quiet: true }), REFRESH_MS);
    }
  }

  function row(run) {
    const steps = run.steps || [];
    const done = steps.filter((st) => st.status === 'completed').length;
    const link = `#/runs/${enc(run.run_id)}`;
    return h('tr', { dataset: { runId: run.run_id, status: run.status } },
      h('td', { class: 'nowrap' }, time(run.created_at)),
      h('td', {}, badge(run.status)),
      h('td', { class: 'prompt' }, h('a', { href: link }, run.prompt)),
      h('td', { class: 'nowrap' }, `${done}/${steps.length}`),
      h('td', { class: 'mono' }, h('a', { href: link }, run.run_id.slice(0, 8))));
  }

  load(0);
  return () => {
    ctl.abort();
    clearTimeout(timer);
  };
}
