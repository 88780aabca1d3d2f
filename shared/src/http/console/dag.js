// The plan drawn as a DAG: one column per level (a step's level is one more than the
// highest level of the steps it depends on), edges from `depends_on`, nodes coloured by
// the step's status. Inline SVG; colours come from the stylesheet (classes), not inline
// styles, so the page's CSP needs no 'unsafe-inline'.

import { s } from './ui.js';

const NODE_W = 168;
const NODE_H = 56;
const COL_GAP = 84;
const ROW_GAP = 22;
const PAD = 16;
const LANE = 26;

/** The level of every step: 0 without dependencies, else 1 + the deepest dependency. */
export function levels(steps) {
  const byId = new Map(steps.map((st) => [st.id, st]));
  const level = new Map();
  const visiting = new Set();
  const visit = (id) => {
    if (level.has(id)) return level.get(id);
    if (visiting.has(id) || !byId.has(id)) return -1; // a cycle or unknown id: no edge
    visiting.add(id);
    const deps = byId.get(id).depends_on || [];
    const l = deps.length === 0 ? 0 : 1 + Math.max(-1, ...deps.map(visit));
    visiting.delete(id);
    level.set(id, l);
    return l;
  };
  steps.forEach((st) => visit(st.id));
  return level;
}

/**
 * Draw `plan.steps`; `states` maps step id -> per-step state (status, attempts). Clicking a
 * node calls `onSelect(id)`.
 */
export function drawDag(plan, states, { selected, onSelect } = {}) {
  const steps = (plan && plan.steps) || [];
  const level = levels(steps);
  const columns = [];
  for (const st of steps) {
    const l = level.get(st.id);
    (columns[l] ||= []).push(st);
  }
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  // Edges that skip a level run along a lane above the nodes instead of under them.
  const skips = steps.some((st) => (st.depends_on || []).some((d) => level.get(st.id) - level.get(d) > 1));
  const lane = PAD + 24;
  const nodesTop = PAD + 18 + (skips ? LANE : 0);
  const width = PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * COL_GAP;
  const height = nodesTop + PAD + rows * NODE_H + (rows - 1) * ROW_GAP;
  const pos = new Map();
  columns.forEach((col, l) => {
    const colH = col.length * NODE_H + (col.length - 1) * ROW_GAP;
    const top = nodesTop + (rows * NODE_H + (rows - 1) * ROW_GAP - colH) / 2;
    col.forEach((st, i) => {
      pos.set(st.id, { x: PAD + l * (NODE_W + COL_GAP), y: top + i * (NODE_H + ROW_GAP) });
    });
  });

  const svg = s('svg', {
    class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `plan of ${steps.length} steps in ${columns.length} levels`,
  });
  svg.append(s('defs', {}, s('marker', {
    id: 'dag-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: 'auto-start-reverse',
  }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'dag-arrow' }))));
  columns.forEach((_, l) => {
    svg.append(s('text', {
      class: 'dag-level', x: PAD + l * (NODE_W + COL_GAP) + NODE_W / 2, y: PAD + 6,
      'text-anchor': 'middle',
    }, `level ${l}`));
  });
  const edges = s('g', { class: 'edges' });
  for (const st of steps) {
    const to = pos.get(st.id);
    for (const dep of st.depends_on || []) {
      const from = pos.get(dep);
      if (!from || !to) continue;
      const x1 = from.x + NODE_W;
      const y1 = from.y + NODE_H / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      const d = level.get(st.id) - level.get(dep) > 1
        ? `M${x1},${y1} C${x1 + 30},${y1} ${x1 + 30},${lane} ${x1 + 60},${lane} `
          + `L${x2 - 60},${lane} C${x2 - 30},${lane} ${x2 - 30},${y2} ${x2},${y2}`
        : `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
      const depStatus = states.get(dep)?.status || 'pending';
      edges.append(s('path', {
        class: `edge from-${depStatus}`, d,
        'marker-end': 'url(#dag-arrow)', dataset: { from: dep, to: st.id },
      }));
    }
  }
  svg.append(edges);
  for (const st of steps) {
    const p = pos.get(st.id);
    const state = states.get(st.id) || {};
    const status = state.status || 'pending';
    const g = s('g', {
      class: `node status-${status}${st.id === selected ? ' selected' : ''}`,
      transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button',
      dataset: { step: st.id, level: level.get(st.id), status },
      onclick: () => onSelect?.(st.id),
      onkeydown: (e) => {
        if (e.key === 'Enter' || e.key === ' ') onSelect?.(st.id);
      },
    });
    g.append(
      s('title', {}, `${st.id}: ${st.tool} (${status})`),
      s('rect', { width: NODE_W, height: NODE_H, rx: 8, ry: 8 }),
      s('rect', { class: 'stripe', width: 6, height: NODE_H, rx: 3, ry: 3 }),
      s('text', { x: 16, y: 22, class: 'node-title' }, `${st.id} · ${st.tool}`),
      s('text', { x: 16, y: 42, class: 'node-status' },
        status.replace(/_/g, ' ') + (state.attempts > 1 ? ` · ${state.attempts} attempts` : '')),
    );
    svg.append(g);
  }
  return svg;
}
