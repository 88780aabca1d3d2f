// One run: its status and result, the plan as a DAG, every step's input, output and error,
// the event timeline, and a time-travel slider whose positions are the events: moving it
// shows the run as it was at that event (`GET /runs/{id}?at=<the event's time>`). While
// the slider is at the newest event the page follows the run live.

import { api, enc } from './api.js';
import { drawDag } from './dag.js';
import { follow } from './live.js';
import { badge, clock, duration, errorBox, FINISHED, h, jsonBlock, sleep, time } from './ui.js';

/** How long the slider must rest before the past state is fetched. */
const TRAVEL_DEBOUNCE_MS = 120;

export function runView(root, runId) {
  const ctl = new AbortController();
  let run = null; // the run now
  let events = [];
  let pos = null; // index of the event shown, or null for "now" (following)
  let shown = null; // the run state on screen: `run`, or the run as of events[pos]
  let shownSeq = ''; // the seq of the event `shown` is as of
  let selected = null;
  let live = null;
  let travelSeq = 0;
  let travelTimer = null;

  const message = h('div', { id: 'run-message' });
  const header = h('section', { class: 'card', id: 'run-header' });
  const slider = h('input', {
    id: 'slider', type: 'range', min: 0, max: 0, step: 1, value: 0,
    'aria-label': 'time travel: event shown',
    oninput: () => moveTo(Number(slider.value)),
  });
  const sliderLabel = h('span', { id: 'slider-label' });
  const latest = h('button', {
    id: 'slider-latest', type: 'button', onclick: () => moveTo(events.length - 1),
  }, 'Now');
  const shownStatus = h('span', { id: 'shown-status' });
  const travel = h('section', { class: 'card travel', id: 'time-travel' },
    h('div', { class: 'row spread' }, h('h2', {}, 'Time travel'),
      h('div', { class: 'row' }, h('span', { class: 'muted' }, 'state shown:'), shownStatus, latest)),
    h('div', { class: 'row slider-row' }, slider),
    sliderLabel);
  const dagBox = h('div', { id: 'dag', class: 'dag-box' });
  const stepsBox = h('div', { id: 'steps-box' });
  const timeline = h('ol', { id: 'timeline', class: 'timeline' });

  root.replaceChildren(
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Runs')),
    message, header, travel,
    h('div', { class: 'split' },
      h('section', { class: 'card' }, h('h2', {}, 'Plan'), dagBox),
      h('section', { class: 'card timeline-card' }, h('h2', {}, 'Timeline'), timeline)),
    h('section', { class: 'card' }, h('h2', {}, 'Steps'), stepsBox),
  );

  // ---- time travel ------------------------------------------------------------------

  function following() {
    return pos === null;
  }

  function moveTo(i) {
    if (events.length === 0) return;
    const index = Math.max(0, Math.min(events.length - 1, i));
    pos = index === events.length - 1 ? null : index;
    slider.value = String(index);
    renderTravel();
    renderTimeline();
    travel.dataset.state = 'loading';
    // A newer position makes any answer still on its way for an older one stale.
    const ticket = ++travelSeq;
    clearTimeout(travelTimer);
    travelTimer = setTimeout(() => showSelected(ticket), TRAVEL_DEBOUNCE_MS);
  }

  async function showSelected(ticket) {
    let state = run;
    if (!following()) {
      const at = events[pos].at;
      try {
        state = await api(`runs/${enc(runId)}?at=${enc(at)}`, { signal: ctl.signal });
      } catch (err) {
        if (ctl.signal.aborted || ticket !== travelSeq) return;
        message.replaceChildren(errorBox(err));
        return;
      }
    }
    if (ticket !== travelSeq) return;
    setShown(state);
    renderState();
    travel.dataset.state = 'ready';
  }

  /** Put `state` on screen as the run at the slider's event. */
  function setShown(state) {
    shown = state;
    const ev = events[shownIndex()];
    shownSeq = ev ? String(ev.seq) : '';
  }

  function shownIndex() {
    return following() ? events.length - 1 : pos;
  }

  function renderTravel() {
    const i = shownIndex();
    slider.max = String(Math.max(0, events.length - 1));
    slider.value = String(Math.max(0, i));
    slider.disabled = events.length < 2;
    latest.disabled = following();
    travel.dataset.following = String(following());
    const ev = events[i];
    travel.dataset.sliderSeq = ev ? String(ev.seq) : '';
    sliderLabel.replaceChildren(ev
      ? h('span', {}, h('strong', {}, `event ${ev.seq} of ${events[events.length - 1].seq}`),
        ` · ${ev.type} · ${time(ev.at)}`,
        following() ? h('span', { class: 'muted' }, ' (now)') : h('span', { class: 'past' }, ' (the past)'))
      : 'no events');
  }

  // ---- rendering --------------------------------------------------------------------

  function renderHeader() {
    const finished = FINISHED.has(run.status);
    const planner = run.planner || {};
    const cancel = h('button', {
      id: 'cancel', type: 'button', class: 'danger',
      disabled: run.cancel_requested || undefined,
      onclick: () => cancelRun(cancel),
    }, run.cancel_requested ? 'Cancel requested' : 'Cancel run');
    const liveState = h('span', { id: 'live-state', class: 'live' },
      finished ? 'finished' : 'live');
    liveState.classList.toggle('on', !finished);
    header.replaceChildren(...[
      h('div', { class: 'row spread' },
        h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.run_id)),
        h('div', { class: 'row' },
          h('span', { id: 'run-status', dataset: { status: run.status } }, badge(run.status)),
          liveState, finished ? null : cancel)),
      h('p', { class: 'prompt-text' }, run.prompt),
      h('dl', { class: 'meta' },
        h('dt', {}, 'planner'), h('dd', {}, [planner.name, planner.model].filter(Boolean).join(' · ') +
          (planner.fallback_reason ? ` (fallback: ${planner.fallback_reason})` : '')),
        h('dt', {}, 'created'), h('dd', {}, time(run.created_at)),
        h('dt', {}, 'finished'), h('dd', {}, run.finished_at
          ? `${time(run.finished_at)} (${duration(run.created_at, run.finished_at)})` : '—'),
        h('dt', {}, 'correlation id'), h('dd', { class: 'mono' }, run.correlation_id || '')),
      run.result !== null && run.result !== undefined
        ? h('div', { id: 'run-result' }, h('h3', {}, 'Result'), jsonBlock(run.result, 'result')) : null,
      run.error ? h('div', { id: 'run-error', class: 'error-box' }, h('strong', {}, 'Error: '), run.error) : null,
    ].filter(Boolean));
  }

  async function cancelRun(button) {
    button.disabled = true;
    try {
      run = await api(`runs/${enc(runId)}/cancel`, { method: 'POST', signal: ctl.signal });
      message.replaceChildren();
      if (following()) setShown(run);
      renderAll();
    } catch (err) {
      if (ctl.signal.aborted) return;
      message.replaceChildren(errorBox(err));
      button.disabled = false;
    }
  }

  async function decide(stepId, verdict, comment) {
    try {
      await api(`runs/${enc(runId)}/steps/${enc(stepId)}/${verdict}`, {
        method: 'POST', body: comment ? { comment } : {}, signal: ctl.signal,
      });
      message.replaceChildren();
      await refresh();
    } catch (err) {
      if (!ctl.signal.aborted) message.replaceChildren(errorBox(err));
    }
  }

  function stateMap(state) {
    return new Map(((state && state.steps) || []).map((st) => [st.id, st]));
  }

  function select(id) {
    selected = selected === id ? null : id;
    renderState();
    if (selected) stepsBox.querySelector(`tr[data-step="${CSS.escape(selected)}"]`)?.scrollIntoView({ block: 'nearest' });
  }

  function renderState() {
    const states = stateMap(shown);
    const plan = shown && shown.plan && shown.plan.steps && shown.plan.steps.length ? shown.plan : null;
    shownStatus.replaceChildren(shown ? badge(shown.status) : '');
    shownStatus.dataset.status = shown ? shown.status : '';
    travel.dataset.shownSeq = shownSeq;
    dagBox.replaceChildren(plan
      ? drawDag(plan, states, { selected, onSelect: select })
      : h('p', { class: 'muted' }, 'No plan yet at this point.'));
    dagBox.dataset.steps = plan ? String(plan.steps.length) : '0';
    stepsBox.replaceChildren(plan ? stepsTable(plan, states) : h('p', { class: 'muted' }, 'No steps yet.'));
  }

  function stepsTable(plan, states) {
    return h('table', { id: 'steps', class: 'grid steps' },
      h('thead', {}, h('tr', {}, ['Step', 'Status', 'Attempts', 'Depends on', 'Input', 'Output / error', 'Timing']
        .map((t) => h('th', {}, t)))),
      h('tbody', {}, plan.steps.map((p) => {
        const st = states.get(p.id) || { status: 'pending', attempts: 0 };
        return h('tr', { dataset: { step: p.id, status: st.status }, class: p.id === selected ? 'selected' : undefined },
          h('td', { class: 'mono nowrap' }, h('strong', {}, p.id), h('br'), p.tool),
          h('td', {}, badge(st.status), st.status === 'waiting_approval' ? approval(p.id) : null),
          h('td', {}, String(st.attempts ?? 0)),
          h('td', { class: 'mono' }, (p.depends_on || []).join(', ') || '—'),
          h('td', {}, jsonBlock(p.input)),
          h('td', {},
            st.output !== null && st.output !== undefined ? jsonBlock(st.output, 'output') : null,
            st.error ? h('div', { class: 'step-error' }, st.error) : null,
            (st.output === null || st.output === undefined) && !st.error ? h('span', { class: 'muted' }, '—') : null),
          h('td', { class: 'nowrap' },
            st.started_at ? `started ${time(st.started_at)}` : '',
            st.finished_at ? h('br') : null,
            st.finished_at ? `took ${duration(st.started_at, st.finished_at)}` : ''));
      })));
  }

  function approval(stepId) {
    const comment = h('input', { type: 'text', class: 'comment', placeholder: 'comment (optional)', 'aria-label': 'comment' });
    return h('div', { class: 'approval' }, comment,
      h('button', { type: 'button', class: 'approve', onclick: () => decide(stepId, 'approve', comment.value.trim()) }, 'Approve'),
      h('button', { type: 'button', class: 'reject danger', onclick: () => decide(stepId, 'reject', comment.value.trim()) }, 'Reject'));
  }

  function summary(ev) {
    const d = ev.data || {};
    const parts = [];
    if (d.step_id) parts.push(d.step_id);
    if (d.attempt) parts.push(`attempt ${d.attempt}`);
    if (ev.type === 'PlanGenerated') parts.push(`${(d.plan?.steps || []).length} steps by ${d.planner?.name || '?'}`);
    if (ev.type === 'RunCreated') parts.push(d.prompt);
    if (d.output !== undefined) parts.push(`→ ${short(d.output)}`);
    if (d.result !== undefined) parts.push(`→ ${short(d.result)}`);
    if (d.error) parts.push(d.error);
    if (d.reason) parts.push(d.reason);
    if (d.retry_in_ms !== undefined) parts.push(`retry in ${d.retry_in_ms} ms`);
    if (d.steps) parts.push(`undo ${d.steps.join(', ')}`);
    return parts.join(' · ');
  }

  function short(v) {
    const t = JSON.stringify(v);
    return t.length > 60 ? `${t.slice(0, 57)}...` : t;
  }

  function renderTimeline() {
    const i = shownIndex();
    const have = timeline.children.length;
    for (let k = have; k < events.length; k++) {
      const ev = events[k];
      timeline.append(h('li', {
        dataset: { seq: ev.seq, type: ev.type }, class: `ev ev-${ev.type}`,
        title: 'show the run as it was at this event', onclick: () => moveTo(k),
      }, h('span', { class: 'seq' }, `#${ev.seq}`), h('span', { class: 'when', title: ev.at }, clock(ev.at)),
      h('span', { class: 'type' }, ev.type), h('span', { class: 'what' }, summary(ev))));
    }
    [...timeline.children].forEach((li, k) => {
      li.classList.toggle('future', k > i);
      li.classList.toggle('current', k === i);
    });
  }

  function renderAll() {
    renderHeader();
    renderTravel();
    renderTimeline();
    renderState();
  }

  // ---- loading and live updates -----------------------------------------------------

  /** Fetch the run now; on AWS the read model may trail the events a little, so ask again. */
  async function refresh() {
    const newest = events.length ? events[events.length - 1].seq : 0;
    for (let tries = 0; ; tries++) {
      run = await api(`runs/${enc(runId)}`, { signal: ctl.signal });
      if ((run.last_seq ?? newest) >= newest || tries >= 4) break;
      await sleep(300, ctl.signal);
    }
    if (following()) setShown(run);
    renderAll();
    root.dataset.updates = String(Number(root.dataset.updates || 0) + 1);
  }

  async function onEvents(batch) {
    events.push(...batch);
    await refresh();
  }

  async function load() {
    try {
      const [r, ev] = await Promise.all([
        api(`runs/${enc(runId)}`, { signal: ctl.signal }),
        api(`runs/${enc(runId)}/events`, { signal: ctl.signal }),
      ]);
      run = r;
      events = (ev.events || []).slice().sort((a, b) => a.seq - b.seq);
    } catch (err) {
      if (!ctl.signal.aborted) {
        message.replaceChildren(errorBox(err));
        root.dataset.state = 'error';
      }
      return;
    }
    setShown(run);
    renderAll();
    travel.dataset.state = 'ready';
    root.dataset.state = 'ready';
    const last = events.length ? events[events.length - 1].seq : 0;
    live = follow(runId, last, onEvents, {
      gapMs: () => (run && FINISHED.has(run.status) ? 5000 : 500),
      onError: (err) => {
        const el = document.getElementById('live-state');
        if (el) el.textContent = `reconnecting (${err.message})`;
      },
    });
  }

  load();
  return () => {
    ctl.abort();
    clearTimeout(travelTimer);
    live?.stop();
  };
}
