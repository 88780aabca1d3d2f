// The peer benchmark's workload as a Restate service: the same four-step DAG as Crane's
// prompt "calculate 2+3 and calculate 10*5 and calculate 7*7 then calculate 1+1". Each step
// is a `ctx.run` (its result journaled before the handler goes on); the three independent
// ones run together under `RestatePromise.all`, the fourth after them.
//
// Run with Node 22 (type stripping, no compile step): node service.ts <port>
import * as restate from "@restatedev/restate-sdk";

const calculate = (expr: string, f: () => number) => (ctx: restate.Context) =>
  ctx.run(`calculate ${expr}`, () => ({ expr, value: f() }));

const dag = restate.service({
  name: "Dag",
  handlers: {
    run: async (ctx: restate.Context) => {
      const level0 = await restate.RestatePromise.all([
        calculate("2+3", () => 2 + 3)(ctx),
        calculate("10*5", () => 10 * 5)(ctx),
        calculate("7*7", () => 7 * 7)(ctx),
      ]);
      const last = await calculate("1+1", () => 1 + 1)(ctx);
      return { steps: [...level0, last], result: last.value };
    },
  },
});

const port = Number(process.argv[2] ?? process.env.PORT ?? 9080);
restate.serve({ services: [dag], port }).then((bound) => {
  console.log(`restate service listening on ${bound}`);
});
