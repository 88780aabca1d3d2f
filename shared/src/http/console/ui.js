// Small DOM helpers shared by the views. Everything is built with createElement and
// text nodes, never by parsing HTML, so no API value is ever read as markup.

export const RUN_STATUSES = ['pending', 'running', 'completed', 'failed', 'compensating',
  'compensated', 'compensation_failed', 'cancelled'];

/** Statuses after which a run changes only if an operator asks (saga retry). */
export const FINISHED = new Set(['completed', 'failed', 'compensated', 'compensation_failed',
  'cancelled']);

/** Create an element: h('a', {href: '#/', class: 'x', dataset: {id: 1}, onclick}, 'text', node). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Create an SVG element with attributes. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function badge(status, extra = '') {
  return h('span', { class: `badge status-${status} ${extra}`.trim(), dataset: { status } },
    String(status).replace(/_/g, ' '));
}

/** A time as the user's local clock shows it, with milliseconds. */
export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const date = d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  const t = d.toLocaleTimeString(undefined, { hour12: false });
  return `${date} ${t}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** The time of day only (HH:MM:SS.mmm), for the timeline. */
export function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '';
  return `${d.toLocaleTimeString(undefined, { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** Milliseconds between two times, as "1.2 s" or "35 ms". */
export function duration(from, to) {
  if (!from || !to) return '';
  const ms = new Date(to) - new Date(from);
  if (!Number.isFinite(ms)) return '';
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
}

export function jsonBlock(value, cls = '') {
  return h('pre', { class: `json ${cls}`.trim() }, JSON.stringify(value, null, 2));
}

/** A message box for a failed call; a 401 points at the key form. */
export function errorBox(err) {
  const box = h('div', { class: 'error-box', role: 'alert' });
  if (err && err.status === 401) {
    box.dataset.code = 'unauthorized';
    box.append(h('strong', {}, 'This API needs a key. '),
      'Enter your API key (bearer token) at the top right, then press Use.');
    document.getElementById('token-input')?.focus();
  } else {
    box.dataset.code = (err && err.code) || 'error';
    box.append(h('strong', {}, 'Error: '), (err && err.message) || String(err));
  }
  return box;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
