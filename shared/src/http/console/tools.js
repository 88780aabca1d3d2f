// The tool catalog: each tool's circuit breaker (closed, open until a time, half-open with
// its trial count) and its input schema.

import { api } from './api.js';
import { badge, errorBox, h, jsonBlock, time } from './ui.js';

export function toolsView(root) {
  const ctl = new AbortController();
  const tbody = h('tbody');
  const table = h('table', { id: 'tools', class: 'grid', dataset: { state: 'loading' } },
    h('thead', {}, h('tr', {}, ['Tool', 'Breaker', 'Details', 'Description', 'Input schema'].map((t) => h('th', {}, t)))),
    tbody);
  const message = h('div');
  const refresh = h('button', { id: 'refresh', type: 'button', onclick: () => load() }, 'Refresh');
  root.replaceChildren(h('section', { class: 'card' },
    h('div', { class: 'row spread' }, h('h1', {}, 'Tools'), refresh), message, table));

  function details(b) {
    switch (b.state) {
      case 'closed':
        return `${b.consecutive_failures} consecutive failure${b.consecutive_failures === 1 ? '' : 's'}`;
      case 'open':
        return `open since ${time(b.opened_at)}, fails fast until ${time(b.until)}`;
      case 'half_open':
        return `${b.successes} trial success${b.successes === 1 ? '' : 'es'}` +
          (b.trials !== undefined ? `, ${b.trials} trial${b.trials === 1 ? '' : 's'} in flight` : '');
      default:
        return '';
    }
  }

  async function load() {
    table.dataset.state = 'loading';
    try {
      const data = await api('tools', { signal: ctl.signal });
      message.replaceChildren();
      tbody.replaceChildren(...data.tools.map((t) => {
        const b = t.breaker || { state: 'closed', consecutive_failures: 0 };
        return h('tr', { dataset: { tool: t.name, breaker: b.state } },
          h('td', { class: 'mono' }, t.name),
          h('td', {}, badge(b.state, 'breaker')),
          h('td', {}, details(b)),
          h('td', {}, t.description || ''),
          h('td', {}, h('details', {}, h('summary', {}, 'schema'), jsonBlock(t.input_schema))));
      }));
      table.dataset.state = 'ready';
    } catch (err) {
      if (ctl.signal.aborted) return;
      message.replaceChildren(errorBox(err));
      table.dataset.state = 'error';
    }
  }

  load();
  return () => ctl.abort();
}
