// The console's live-update loop (shared/src/http/console/live.js) and DAG levels
// (dag.js), run in Node against a fake `fetch`: new events are delivered once each and in
// order even from a server that ignores `after` and `wait`, the bearer key is sent, a quick
// empty answer is followed by a pause, and stop() ends the loop. No durations are asserted:
// only that nothing happens while the loop must be pausing.
//
//   node --test tests/browser/live.test.mjs

import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

const store = new Map();
globalThis.sessionStorage = {
  getItem: (k) => (store.has(k) ? store.get(k) : null),
  setItem: (k, v) => store.set(k, String(v)),
  removeItem: (k) => store.delete(k),
};

const { follow } = await import('../../shared/src/http/console/live.js');
const { levels } = await import('../../shared/src/http/console/dag.js');
const { setToken } = await import('../../shared/src/http/console/api.js');

const ev = (seq) => ({ seq, type: 'StepStarted', at: `2026-01-01T00:00:0${seq}Z`, data: {} });
const until = async (cond, what) => {
  for (let i = 0; i < 6000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), `timed out waiting for ${what}`);
};
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

let calls;
let answers;
let handle;

/** A server that ignores `after` and `wait`: it answers with the whole log so far. */
function fakeServer() {
  calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url, init });
    const next = answers.length > 1 ? answers.shift() : answers[0];
    if (next instanceof Error) throw next;
    return { ok: true, status: 200, json: async () => ({ run_id: 'r', events: next }) };
  };
}

beforeEach(() => {
  store.clear();
  fakeServer();
});

afterEach(() => {
  handle?.stop();
  handle = null;
});

test('a server that ignores after gets each new event delivered once, in seq order', async () => {
  answers = [[ev(1), ev(2), ev(3)], [ev(3), ev(1), ev(2), ev(5), ev(4)], [ev(1), ev(2), ev(3), ev(4), ev(5)]];
  const batches = [];
  handle = follow('r', 2, (b) => batches.push(b.map((e) => e.seq)), { gapMs: () => 1 });
  await until(() => batches.length >= 2 && calls.length >= 4, 'two batches');
  assert.deepEqual(batches, [[3], [4, 5]]);
  assert.match(calls[0].url, /^runs\/r\/events\?after=2&wait=20$/);
  assert.match(calls[1].url, /after=3&wait=20$/);
  assert.match(calls[2].url, /after=5&wait=20$/);
  assert.equal(calls[0].init.headers.Authorization, undefined, 'no key, no header');
});

test('the key the user entered is sent as a bearer token', async () => {
  setToken('  key-0123456789abcdef ');
  answers = [[]];
  handle = follow('r', 0, () => {}, { gapMs: () => 1 });
  await until(() => calls.length >= 1, 'a poll');
  assert.equal(calls[0].init.headers.Authorization, 'Bearer key-0123456789abcdef');
});

test('an answer with nothing new is followed by a pause before the next poll', async () => {
  answers = [[ev(1)]];
  handle = follow('r', 1, () => assert.fail('nothing is new'), { gapMs: () => 600_000 });
  await until(() => calls.length >= 1, 'a poll');
  await pause(300);
  assert.equal(calls.length, 1, 'no second poll during the pause');
});

test('a failed poll is reported and retried after a back-off, and stop() ends the loop', async () => {
  answers = [new Error('connection refused'), [ev(1)]];
  const errors = [];
  const batches = [];
  handle = follow('r', 0, (b) => batches.push(b.map((e) => e.seq)), {
    gapMs: () => 600_000,
    onError: (e) => errors.push(e.code),
  });
  await until(() => batches.length === 1, 'the retry to deliver');
  assert.deepEqual(errors, ['network']);
  assert.deepEqual(batches, [[1]]);
  handle.stop();
  const seen = calls.length;
  await pause(200);
  assert.equal(calls.length, seen, 'no poll after stop()');
});

test('stop() aborts a poll in flight without reporting an error', async () => {
  const errors = [];
  globalThis.fetch = (url, init) => {
    calls.push({ url, init });
    return new Promise((_, reject) => {
      init.signal.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })));
    });
  };
  handle = follow('r', 0, () => {}, { onError: (e) => errors.push(e) });
  await until(() => calls.length === 1, 'a poll');
  handle.stop();
  await pause(100);
  assert.deepEqual(errors, []);
  assert.equal(calls.length, 1);
});

test('levels: 0 without dependencies, else one more than the deepest dependency', () => {
  const steps = [
    { id: 's1', depends_on: [] },
    { id: 's2', depends_on: [] },
    { id: 's3', depends_on: ['s1', 's2'] },
    { id: 's4', depends_on: ['s1', 's2', 's3'] },
    { id: 's5', depends_on: ['s1'] },
  ];
  assert.deepEqual(Object.fromEntries(levels(steps)), { s1: 0, s2: 0, s3: 1, s4: 2, s5: 1 });
  // A cycle or an unknown id (never served: plans are validated) does not hang or throw.
  const odd = levels([{ id: 'a', depends_on: ['b'] }, { id: 'b', depends_on: ['a'] }, { id: 'c', depends_on: ['x'] }]);
  assert.equal(odd.get('c'), 0);
  assert.ok(odd.has('a') && odd.has('b'));
});
