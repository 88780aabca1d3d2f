// Live updates of one run: long-polls `GET /runs/{id}/events?after=SEQ&wait=SECONDS`, which
// works through API Gateway (under its 30 s limit) and with a bearer header (EventSource
// cannot send one). It also works against a server that ignores `after` and `wait`: events
// are filtered by seq here, and an answer with nothing new that came back quickly is
// followed by a pause before the next poll.

import { api, enc } from './api.js';
import { sleep } from './ui.js';

/**
 * Follow the events of `runId` after seq `after`. `onEvents(batch)` gets each batch of new
 * events in seq order. `gapMs()` is the pause after a quick empty answer (longer once the
 * run is finished). Returns `{stop()}`.
 */
export function follow(runId, after, onEvents, { waitSecs = 20, gapMs = () => 500, onError } = {}) {
  const ctl = new AbortController();
  let last = after;
  let failures = 0;
  (async () => {
    while (!ctl.signal.aborted) {
      const started = performance.now();
      let fresh;
      try {
        const data = await api(`runs/${enc(runId)}/events?after=${last}&wait=${waitSecs}`,
          { signal: ctl.signal });
        fresh = (data.events || []).filter((e) => e.seq > last).sort((a, b) => a.seq - b.seq);
        failures = 0;
      } catch (e) {
        if (ctl.signal.aborted) return;
        failures += 1;
        onError?.(e);
        await sleep(Math.min(500 * 2 ** failures, 15000), ctl.signal);
        continue;
      }
      if (fresh.length > 0) {
        last = fresh[fresh.length - 1].seq;
        try {
          await onEvents(fresh);
        } catch (e) {
          if (ctl.signal.aborted) return;
          onError?.(e);
        }
        continue;
      }
      const took = performance.now() - started;
      const gap = gapMs();
      if (took < gap) await sleep(gap - took, ctl.signal);
    }
  })();
  return {
    stop() {
      ctl.abort();
    },
  };
}
