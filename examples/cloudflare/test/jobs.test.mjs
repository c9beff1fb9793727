// Runs the example worker (../build, made by `worker-build --release`) in workerd through
// Miniflare, and drives every operation of the three job kinds over HTTP.
//
//   npm ci && npm test
//
// Executions are observed through the worker's execution log (GET /log), which lives in its
// own Durable Object, so polling it never touches a job instance.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Log, LogLevel, Miniflare } from "miniflare";

const here = path.dirname(fileURLToPath(import.meta.url));
const BUILD = process.env.WORKER_BUILD_DIR ?? path.resolve(here, "../build");
const PERSIST = process.env.DO_PERSIST_DIR ?? path.resolve(here, ".persist");
const COLLECTOR = "http://collector.test/events";
const ADMIN_TOKEN = "test-admin-token-0123456789";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Lifecycle events POSTed by the engine's tracker (Miniflare's outbound fetches land here). */
const collected = [];

function options(bindings = { ADMIN_TOKEN }) {
  return {
    modules: true,
    scriptPath: path.join(BUILD, "worker/shim.mjs"),
    modulesRoot: BUILD,
    // worker-build emits ESM `.js`; Miniflare's default rules would read it as CommonJS.
    modulesRules: [
      { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2025-09-01",
    durableObjects: {
      JOBS: { className: "Jobs", useSQLite: true },
      LOG: { className: "ExecutionLog", useSQLite: true },
    },
    durableObjectsPersist: PERSIST,
    bindings: {
      DURABLE_JOBS_TRACKER_ENDPOINT: COLLECTOR,
      DURABLE_JOBS_TRACKER_ENV: "test",
      DURABLE_JOBS_TRACKER_SERVICE_KEY: "svc-test",
      ...bindings,
    },
    outboundService: async (request) => {
      if (request.url === COLLECTOR) collected.push(...(await request.json()));
      return new Response("ok");
    },
    host: "127.0.0.1",
    port: 0,
    cf: false, // otherwise Miniflare fetches Request.cf data from the internet
    log: new Log(process.env.MF_LOG ? LogLevel.DEBUG : LogLevel.WARN),
  };
}

let mf;
let base;

async function start() {
  const t0 = Date.now();
  mf = new Miniflare(options());
  base = (await mf.ready).toString().replace(/\/$/, "");
  console.log(`# workerd ready at ${base} in ${Date.now() - t0} ms`);
}

async function stop() {
  await mf?.dispose();
  mf = undefined;
}

async function call(method, route, body, token = ADMIN_TOKEN) {
  const headers = body === undefined ? {} : { "content-type": "application/json" };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}${route}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, json };
}

async function ok(method, route, body) {
  const { status, json } = await call(method, route, body);
  assert.equal(status, 200, `${method} ${route} -> ${status}: ${JSON.stringify(json)}`);
  return json;
}
const get = (route) => ok("GET", route);
const post = (route, body) => ok("POST", route, body ?? {});

const log = () => get("/log");
const entries = async (filter) => (await log()).filter(filter);

/** Polls `probe` until it returns a truthy value, or fails after `timeout` ms. */
async function waitFor(what, probe, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const waitForEntries = (what, filter, count = 1, timeout) =>
  waitFor(what, async () => {
    const found = await entries(filter);
    return found.length >= count ? found : undefined;
  }, timeout);

before(async () => {
  assert.ok(existsSync(path.join(BUILD, "worker/shim.mjs")), `build the worker first (${BUILD})`);
  rmSync(PERSIST, { recursive: true, force: true });
  mkdirSync(PERSIST, { recursive: true });
  await start();
});

after(async () => {
  await stop();
});

test("continuous: runs at once from an alarm, then every 2 s; trigger, status, state, stop", async () => {
  const id = "user-1";
  assert.deepEqual(await post(`/tokens/${id}/start`, { access: "token-0" }), { created: true });
  assert.deepEqual(await post(`/tokens/${id}/start`, {}), { created: false });

  const mine = (e) => e.job === "tokenRefresher" && e.id === id;
  const [first] = await waitForEntries("the first run", mine, 1, 3_000);
  assert.equal(first.refreshes, 1);
  const runs = await waitForEntries("the second, scheduled run", mine, 2, 5_000);
  const gap = runs[1].at - runs[0].at;
  assert.ok(gap >= 1_500 && gap < 4_000, `runs 2 s apart, got ${gap} ms`);

  const before = (await entries(mine)).length;
  const triggeredAt = Date.now();
  assert.deepEqual(await post(`/tokens/${id}/trigger`), { triggered: true });
  await waitForEntries("the triggered run", mine, before + 1, 3_000);
  assert.ok(Date.now() - triggeredAt < 1_500, "a trigger runs now, not at the next period");

  const { status } = await get(`/tokens/${id}/status`);
  assert.equal(status.status.status, "active");
  assert.ok(status.runCount >= 3, JSON.stringify(status));
  assert.ok(status.nextRunAt > Date.now() - 1_000, JSON.stringify(status));
  const { state } = await get(`/tokens/${id}/state`);
  assert.equal(state.access, `token-${state.refreshes}`);
  assert.ok(state.refreshes >= 3);

  assert.deepEqual(await post(`/tokens/${id}/stop`, { reason: "user left" }), { stopped: true });
  const stopped = (await get(`/tokens/${id}/status`)).status;
  assert.equal(stopped.status.status, "stopped");
  assert.equal(stopped.status.reason, "user left");
  assert.deepEqual(await get(`/tokens/${id}/state`), { state: null });
  const afterStop = (await entries(mine)).length;
  await sleep(2_500);
  assert.equal((await entries(mine)).length, afterStop, "no run after stop");

  const missing = await call("GET", `/tokens/nobody/state`);
  assert.equal(missing.status, 200);
  assert.deepEqual(missing.json, { state: null });
});

test("debounce: flushes flush_after the first event, at max_events and on demand; dedup, clear", async () => {
  const flushed = (id) => (e) => e.job === "webhookBatcher" && e.id === id && e.phase === "flushed";

  // flush_after: 1.5 s after the batch's first event.
  const firstAt = Date.now();
  const a = await post("/webhooks/c-time/add", { field: "email", eventId: "evt-1" });
  assert.equal(a.eventCount, 1);
  assert.equal(a.duplicate, false);
  assert.deepEqual(await post("/webhooks/c-time/add", { field: "email", eventId: "evt-1" }), {
    eventCount: 1,
    duplicate: true,
    flushAt: a.flushAt,
  });
  const b = await post("/webhooks/c-time/add", { field: "phone" });
  assert.equal(b.eventCount, 2);
  assert.equal(b.flushAt, a.flushAt, "flush_after counts from the first event");
  const { status } = await get("/webhooks/c-time/status");
  assert.equal(status.eventCount, 2);
  assert.deepEqual((await get("/webhooks/c-time/state")).state, ["email", "phone"]);
  const [timed] = await waitForEntries("the timed flush", flushed("c-time"), 1, 5_000);
  assert.deepEqual(timed.fields, ["email", "phone"]);
  assert.equal(timed.eventCount, 2);
  assert.equal(timed.reason, "flushAfter");
  assert.ok(timed.at - firstAt >= 1_400, `flushed ${timed.at - firstAt} ms after the first event`);

  // max_events: the fifth event flushes at once.
  for (let i = 1; i <= 4; i++) await post("/webhooks/c-max/add", { field: `f${i}` });
  const fifthAt = Date.now();
  assert.equal((await post("/webhooks/c-max/add", { field: "f5" })).eventCount, 5);
  const [full] = await waitForEntries("the max_events flush", flushed("c-max"), 1, 3_000);
  assert.equal(full.reason, "maxEvents");
  assert.equal(full.eventCount, 5);
  assert.ok(full.at - fifthAt < 1_000, "a full batch does not wait for flush_after");

  // flush on demand.
  await post("/webhooks/c-manual/add", { field: "name" });
  assert.deepEqual(await post("/webhooks/c-manual/flush"), { eventCount: 1 });
  const [manual] = await waitForEntries("the manual flush", flushed("c-manual"), 1, 3_000);
  assert.equal(manual.reason, "manual");

  // clear drops the pending batch: nothing flushes.
  await post("/webhooks/c-clear/add", { field: "x" });
  await post("/webhooks/c-clear/add", { field: "y" });
  assert.deepEqual(await post("/webhooks/c-clear/clear"), { discarded: 2 });
  assert.deepEqual(await get("/webhooks/c-clear/failed-batches"), { batches: [] });
  await sleep(2_000);
  assert.equal((await entries(flushed("c-clear"))).length, 0, "a cleared batch never flushes");

  // A duplicate is still recognised after its batch flushed.
  assert.equal((await post("/webhooks/c-time/add", { field: "email", eventId: "evt-1" })).duplicate, true);
});

test("debounce: an add that arrives while a slow flush runs forms the next batch", async () => {
  const id = "slow-1";
  const mine = (phase) => (e) => e.job === "webhookBatcher" && e.id === id && e.phase === phase;
  await post(`/webhooks/${id}/add`, { field: "first" });
  await post(`/webhooks/${id}/flush`);
  await waitForEntries("the slow flush to start", mine("started"), 1, 3_000);

  const t0 = Date.now();
  const added = await post(`/webhooks/${id}/add`, { field: "second" });
  const took = Date.now() - t0;
  assert.equal(added.eventCount, 1, "the flushing batch is not the pending one");
  assert.ok(took < 1_000, `add answered in ${took} ms while the flush runs`);

  const batches = await waitForEntries("both batches", mine("flushed"), 2, 8_000);
  assert.deepEqual(batches.map((b) => b.fields), [["first"], ["second"]]);
});

test("debounce: add_many sends one request per instance and answers each event", async () => {
  const flushed = (id) => (e) => e.job === "webhookBatcher" && e.id === id && e.phase === "flushed";
  const adds = [
    { id: "many-a", field: "a1", eventId: "many-1" },
    { id: "many-b", field: "b1" },
    { id: "many-a", field: "a2", eventId: "many-1" },
    { id: "many-a", field: "a3" },
    ...[1, 2, 3, 4, 5, 6].map((n) => ({ id: "many-c", field: `c${n}` })),
  ];
  const { results } = await post("/webhooks/many", { adds });
  assert.equal(results.length, adds.length);
  assert.deepEqual(results.map((r) => r.duplicate), [false, false, true, ...Array(7).fill(false)]);
  // max_events (5) closes many-c's first batch among the events of one call.
  assert.deepEqual(results.map((r) => r.eventCount), [1, 1, 1, 2, 1, 2, 3, 4, 5, 1]);

  const { total, lastRequest } = await get("/stats/debounce:webhookBatcher:many-a");
  assert.equal(lastRequest.commits, 1, "the instance's share in one step");
  assert.equal(total.commits, 1, "one request for many-a's three events");
  assert.deepEqual((await get("/webhooks/many-a/state")).state, ["a1", "a3"]);

  const [full] = await waitForEntries("many-c's full batch", flushed("many-c"), 1, 3_000);
  assert.equal(full.reason, "maxEvents");
  assert.deepEqual(full.fields, ["c1", "c2", "c3", "c4", "c5"]);
  const c = await waitForEntries("many-c's second batch", flushed("many-c"), 2, 5_000);
  assert.deepEqual(c[1].fields, ["c6"]);
  const [a] = await waitForEntries("many-a's batch", flushed("many-a"), 1, 5_000);
  assert.deepEqual(a.fields, ["a1", "a3"]);
  assert.equal((await post("/webhooks/many-a/add", { field: "a4", eventId: "many-1" })).duplicate, true);
});

test("worker pool: partition routing over 3 instances, order, priority, cancel, pause/resume", async () => {
  await post("/emails/pause");
  const paused = await get("/emails/status");
  assert.equal(paused.paused, 3);
  assert.equal(paused.instances.length, 3);

  const partitions = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];
  const routed = {};
  for (let seq = 1; seq <= 3; seq++) {
    for (const partition of partitions) {
      const r = await post("/emails", { to: `${partition}-${seq}@mail.test`, partition, seq });
      routed[partition] ??= r.instanceIndex;
      assert.equal(r.instanceIndex, routed[partition], "a partition always goes to one instance");
    }
  }
  assert.ok(new Set(Object.values(routed)).size > 1, `partitions spread: ${JSON.stringify(routed)}`);

  // Priority: within an instance, higher first.
  await post("/emails", { to: "low@prio.test", partition: "prio", seq: 1 });
  await post("/emails", { to: "high@prio.test", partition: "prio", seq: 2, priority: 10 });

  // Cancel a pending event; a duplicate event id changes nothing.
  const target = await post("/emails", { to: "cancelled@mail.test", partition: "acme", eventId: "cancel-me" });
  assert.equal((await post("/emails", { to: "cancelled@mail.test", partition: "acme", eventId: "cancel-me" })).duplicate, true);
  assert.deepEqual(await post("/emails/cancel", { eventId: "cancel-me" }), { cancelled: true });
  assert.deepEqual(await post("/emails/cancel", { eventId: "cancel-me" }), { cancelled: false });
  assert.equal(typeof target.position, "number");

  const status = await get("/emails/status");
  assert.equal(status.pending, partitions.length * 3 + 2);
  assert.equal(status.paused, 3);
  await sleep(500);
  assert.equal((await entries((e) => e.job === "emailSender")).length, 0, "paused instances process nothing");

  await post("/emails/resume");
  const sent = (e) => e.job === "emailSender" && e.outcome === "sent";
  const done = await waitForEntries("every email", sent, partitions.length * 3 + 2, 10_000);
  for (const partition of partitions) {
    const mine = done.filter((e) => e.partition === partition);
    assert.deepEqual(mine.map((e) => e.seq), [1, 2, 3], `${partition} in order`);
    assert.ok(mine.every((e) => e.instanceIndex === routed[partition]), `${partition} on one instance`);
  }
  const prio = done.filter((e) => e.partition === "prio").map((e) => e.to);
  assert.deepEqual(prio, ["high@prio.test", "low@prio.test"]);
  assert.equal(done.filter((e) => e.to === "cancelled@mail.test").length, 0);

  const drained = await waitFor("processed counts", async () => {
    const s = await get("/emails/status");
    return s.pending === 0 && s.processed >= partitions.length * 3 + 2 ? s : undefined;
  });
  assert.equal(drained.paused, 0);
  assert.equal(drained.instances.length, 3);
  const one = await get(`/emails/instances/${routed.acme}/status`);
  assert.equal(one.index, routed.acme);
});

test("worker pool: enqueue_many sends one request per instance and answers each event", async () => {
  await post("/emails/pause");
  const before = await get("/emails/status");
  const emails = [
    { to: "m1@many.test", partition: "many-a", seq: 1, eventId: "many-1" },
    { to: "m2@many.test", partition: "many-b", seq: 1 },
    { to: "m3@many.test", partition: "many-a", seq: 2, eventId: "many-1" },
    { to: "m4@many.test", partition: "many-a", seq: 3 },
  ];
  const { results } = await post("/emails/many", { emails });
  assert.equal(results.length, 4);
  assert.deepEqual(results.map((r) => r.duplicate), [false, false, true, false]);
  assert.equal(results[0].instanceIndex, results[3].instanceIndex, "one partition, one instance");
  const after = await get("/emails/status");
  assert.equal(after.pending, before.pending + 3);
  await post("/emails/resume");
  await waitForEntries("the three new emails", (e) => e.job === "emailSender" && /@many\.test$/.test(e.to), 3);
});

test("worker pool: retries, then dead letters that can be listed, replayed and discarded", async () => {
  await post("/emails", { to: "flaky@mail.test", partition: "flaky" });
  const flaky = await waitForEntries("the retried email", (e) => e.to === "flaky@mail.test", 2, 5_000);
  assert.deepEqual(flaky.map((e) => [e.attempt, e.outcome]), [[1, "failed"], [2, "sent"]]);
  assert.ok(flaky[1].at - flaky[0].at >= 250, "the retry waits for its backoff");

  await post("/emails", { to: "fail@mail.test", partition: "doomed", eventId: "dl-1" });
  const dead = (e) => e.eventId === "dl-1" && e.outcome === "deadLettered";
  await waitForEntries("the dead letter", dead, 1, 6_000);
  const attempts = await entries((e) => e.eventId === "dl-1" && e.outcome === "failed");
  assert.deepEqual(attempts.map((e) => e.attempt), [1, 2, 3]);

  let { items } = await get("/emails/dead-letters");
  assert.equal(items.length, 1);
  assert.equal(items[0].deadLetter.eventId, "dl-1");
  assert.equal(items[0].deadLetter.attempts, 3);
  assert.match(items[0].deadLetter.error, /unavailable/);
  assert.equal((await get("/emails/status")).deadLetters, 1);

  // Replay puts it back with fresh attempts (it fails again: the mailbox is still gone).
  assert.deepEqual(await post("/emails/replay", { eventIds: ["dl-1"] }), { count: 1 });
  await waitForEntries("the replayed dead letter", dead, 2, 6_000);
  const retried = await entries((e) => e.eventId === "dl-1" && e.outcome === "failed");
  assert.deepEqual(retried.map((e) => e.attempt), [1, 2, 3, 1, 2, 3]);
  ({ items } = await get("/emails/dead-letters"));
  assert.equal(items.length, 1);

  assert.deepEqual(await post("/emails/discard", {}), { count: 1 });
  assert.deepEqual(await get("/emails/dead-letters"), { items: [] });
});

test("worker pool: a panicking event still uses up its attempts and is dead-lettered", async () => {
  // A panic aborts the isolate's wasm instance. The next call to an object is served by a
  // fresh instance, but calls that were in flight (the panicking alarm among them) never
  // settle: the platform replaces the isolate, which a restart of workerd stands for here.
  const panicking = (e) => e.eventId === "panic-1" && e.outcome === "panicking";
  // Calls in flight when it panics fail too, so nothing else is sent meanwhile.
  await post("/emails", { to: "panic@mail.test", partition: "boom", eventId: "panic-1" });
  for (let attempt = 1; attempt <= 3; attempt++) {
    await waitForEntries(`panicking attempt ${attempt}`, panicking, attempt, 10_000);
    await sleep(300); // the panic follows its log entry
    assert.equal(typeof (await get("/emails/status")).pending, "number", "the next request is served");
    await stop();
    await start();
  }
  // Each attempt was recorded before it ran: the fourth alarm dead-letters the event
  // without running it, and its partition moves on.
  await post("/emails", { to: "after-panic@mail.test", partition: "boom" });
  const after = (e) => e.to === "after-panic@mail.test" && e.outcome === "sent";
  await waitForEntries("the email behind the panicking one", after, 1, 10_000);
  assert.deepEqual((await entries(panicking)).map((e) => e.attempt), [1, 2, 3]);
  const { items } = await get("/emails/dead-letters");
  const dead = items.find((i) => i.deadLetter.eventId === "panic-1");
  assert.ok(dead, "the panicking email is a dead letter");
  assert.equal(dead.deadLetter.attempts, 3);
  assert.match(dead.deadLetter.error, /abandoned/);
  assert.deepEqual(await post("/emails/discard", { eventIds: ["panic-1"] }), { count: 1 });
});

test("worker pool: events without a partition or an id spread over the instances", async () => {
  // Every request builds a new client: the rotation must carry on from one to the next.
  const spread = (e) => e.job === "emailSender" && e.to.startsWith("spread-") && e.outcome === "sent";
  const indexes = [];
  for (let i = 1; i <= 6; i++) {
    indexes.push((await post("/emails", { to: `spread-${i}@mail.test` })).instanceIndex);
  }
  assert.ok(new Set(indexes).size > 1, `un-keyed events went to instances ${indexes}`);
  const sent = await waitForEntries("every un-keyed email", spread, indexes.length, 10_000);
  const byIndex = (a, b) => a - b;
  assert.deepEqual(sent.map((e) => e.instanceIndex).sort(byIndex), [...indexes].sort(byIndex),
    "each ran on the instance it was routed to");
});

test("worker pool: a delayed event runs after its delay, not before, and holds up nothing", async () => {
  const to = (address) => (e) => e.job === "emailSender" && e.to === address;
  const t0 = Date.now();
  const later = await post("/emails", {
    to: "later@delay.test", partition: "delay", eventId: "delay-1", delayMs: 2_000,
  });
  await post("/emails", { to: "now@delay.test", partition: "delay" });
  const [now] = await waitForEntries("the email behind the delayed one", to("now@delay.test"), 1, 3_000);
  assert.ok(now.at - t0 < 1_500, `the partition moved on at once, ${now.at - t0} ms`);
  const one = await get(`/emails/instances/${later.instanceIndex}/status`);
  assert.equal(one.delayed, 1, JSON.stringify(one));
  assert.ok(one.nextDelayedAt >= t0 + 1_900, `due ${one.nextDelayedAt - t0} ms after the enqueue`);
  assert.equal((await entries(to("later@delay.test"))).length, 0, "not before its delay");

  const [ran] = await waitForEntries("the delayed email", to("later@delay.test"), 1, 6_000);
  assert.ok(ran.at - t0 >= 1_900, `ran ${ran.at - t0} ms after the enqueue`);
  assert.equal(ran.instanceIndex, later.instanceIndex);

  // A delayed event can be cancelled; a delay beyond ten years, or two times, are refused.
  await post("/emails", { to: "never@delay.test", partition: "delay", eventId: "delay-2", delayMs: 1_000 });
  assert.deepEqual(await post("/emails/cancel", { eventId: "delay-2" }), { cancelled: true });
  const far = await call("POST", "/emails", { to: "far@delay.test", delayMs: 11 * 365 * 86_400_000 });
  assert.equal(far.status, 400, JSON.stringify(far.json));
  assert.match(far.json.message, /10 years/);
  const both = await call("POST", "/emails", { to: "both@delay.test", delayMs: 1, runAt: Date.now() });
  assert.equal(both.status, 400, JSON.stringify(both.json));
  await sleep(1_500);
  assert.equal((await entries(to("never@delay.test"))).length, 0, "a cancelled event never runs");
  const status = await get("/emails/status");
  assert.equal(status.delayed, 0, JSON.stringify(status));
});

test("task: reminders on its own timer until it cancels itself; an event ends it first", async () => {
  const sent = await post("/orders/o-late/send", { event: "created", eventId: "c-1" });
  assert.equal(sent.created, true);
  assert.ok(sent.nextRunAt > Date.now() - 1_000, JSON.stringify(sent));
  const again = await post("/orders/o-late/send", { event: "created", eventId: "c-1" });
  assert.deepEqual([again.duplicate, again.created], [true, false]);
  await post("/orders/o-paid/send", { event: "created" });
  assert.equal((await post("/orders/o-paid/send", { event: "paid" })).created, false);
  assert.deepEqual(await get("/orders/o-paid/status"), { status: null });

  const late = (e) => e.job === "orderReminder" && e.id === "o-late";
  const [first] = await waitForEntries("the first reminder", late, 1, 3_000);
  assert.equal(first.reminder, 1);
  const { status } = await get("/orders/o-late/status");
  assert.equal(status.phase, "scheduled");
  assert.equal(status.eventCount, 1);
  assert.ok(status.executionCount >= 1, JSON.stringify(status));
  assert.ok((await get("/orders/o-late/state")).state.reminders >= 1);
  const all = await waitForEntries("three reminders", late, 3, 6_000);
  assert.deepEqual(all.map((e) => e.cancels), [false, false, true]);
  await waitFor("the task to end itself", async () => (await get("/orders/o-late/status")).status === null);
  await sleep(1_500);
  assert.equal((await entries(late)).length, 3, "no reminder after the task ended");
  assert.equal((await entries((e) => e.job === "orderReminder" && e.id === "o-paid")).length, 0);

  const timer = (await post("/orders/o-now/send", { event: "created" })).nextRunAt;
  assert.deepEqual(await post("/orders/o-now/trigger"), { triggered: true });
  const [now] = await waitForEntries("the triggered reminder", (e) => e.job === "orderReminder" && e.id === "o-now", 1, 3_000);
  assert.ok(now.at < timer, `a trigger runs now (${now.at}), not at the timer (${timer})`);
  assert.deepEqual(await post("/orders/o-now/terminate"), { terminated: true });
  assert.deepEqual(await post("/orders/o-now/terminate"), { terminated: false });
  const missing = await call("POST", "/orders/nobody/trigger");
  assert.equal(missing.status, 404, JSON.stringify(missing.json));
});

test("access: every route needs the ADMIN_TOKEN secret as a bearer token", async () => {
  for (const route of ["/log", "/emails/status", "/tokens/x/state", "/nowhere"]) {
    const missing = await call("GET", route, undefined, null);
    assert.equal(missing.status, 401, route);
    assert.match(missing.json.error, /Authorization: Bearer/);
    const wrong = await call("GET", route, undefined, "test-admin-token-0123456780");
    assert.equal(wrong.status, 401, route);
    assert.equal(wrong.json.error, "wrong bearer token");
  }
  const stop = await call("POST", "/tokens/x/stop", {}, "short");
  assert.equal(stop.status, 401);
});

test("access: without the secret the front refuses to serve, unless in local development", async () => {
  const serveWith = async (bindings) => {
    const other = new Miniflare({
      ...options(bindings),
      durableObjectsPersist: path.join(PERSIST, "unsecured"),
    });
    try {
      const url = (await other.ready).toString().replace(/\/$/, "");
      const response = await fetch(`${url}/emails/status`);
      return { status: response.status, json: await response.json() };
    } finally {
      await other.dispose();
    }
  };
  const refused = await serveWith({});
  assert.equal(refused.status, 503);
  assert.match(refused.json.error, /no ADMIN_TOKEN secret/);
  const weak = await serveWith({ ADMIN_TOKEN: "too-short" });
  assert.equal(weak.status, 503);
  assert.match(weak.json.error, /at least 24 characters/);
  const localDev = await serveWith({ DURABLE_JOBS_LOCAL_DEV: "true" });
  assert.equal(localDev.status, 200, JSON.stringify(localDev.json));
});

test("errors: bad requests are typed", async () => {
  const bad = await call("POST", "/webhooks/c-bad/add", { nope: 1 });
  assert.equal(bad.status, 400);
  const unknown = await call("GET", "/stats/not-an-instance");
  assert.equal(unknown.status, 400);
  const route = await call("GET", "/nowhere");
  assert.equal(route.status, 404);
});

test("storage operations per client operation", async () => {
  const report = [];
  const measure = async (label, instance, operation) => {
    await operation();
    const { lastRequest } = await get(`/stats/${instance}`);
    report.push({ operation: label, instance, ...lastRequest });
    return lastRequest;
  };

  const firstAdd = await measure("debounce add (new instance)", "debounce:webhookBatcher:ops", () =>
    post("/webhooks/ops/add", { field: "a", eventId: "ops-1" }));
  const add = await measure("debounce add", "debounce:webhookBatcher:ops", () =>
    post("/webhooks/ops/add", { field: "b", eventId: "ops-2" }));
  await measure("debounce status", "debounce:webhookBatcher:ops", () => get("/webhooks/ops/status"));

  await post("/emails/pause"); // so that no execution runs between the enqueue and the reading
  const { instanceIndex } = await post("/emails", { to: "ops@mail.test", partition: "ops" });
  const pool = `workerPool:emailSender:${instanceIndex}`;
  const enqueue = await measure("pool enqueue", pool, () =>
    post("/emails", { to: "ops2@mail.test", partition: "ops" }));
  const delayed = await measure("pool enqueue (delayed)", pool, () =>
    post("/emails", { to: "ops3@mail.test", partition: "ops", eventId: "ops-later", delayMs: 60_000 }));
  await measure("pool status (per instance; 3 instances)", pool, () => get("/emails/status"));
  assert.deepEqual(await post("/emails/cancel", { eventId: "ops-later" }), { cancelled: true });
  await post("/emails/resume");

  const start = await measure("continuous start", "continuous:tokenRefresher:ops", () =>
    post("/tokens/ops/start", {}));
  await measure("continuous status", "continuous:tokenRefresher:ops", () => get("/tokens/ops/status"));
  await post("/tokens/ops/stop");

  console.log("# storage operations of the last request on its instance (SQLite-backed objects:");
  console.log("# every call is a synchronous, local SQL statement or transaction, no network round trip)");
  console.table(report);
  for (const stats of [firstAdd, add, enqueue, delayed, start]) {
    assert.equal(stats.commits, 1, "one atomic commit per change");
    assert.ok(stats.reads + stats.lists + stats.commits <= 3, JSON.stringify(stats));
  }
});

test("tracking: lifecycle events reach the collector with env and service key", async () => {
  const found = await waitFor("tracked events", () => {
    const flushedEvent = collected.find((e) => e.type === "debounce.flushed" && e.instanceId === "debounce:webhookBatcher:c-time");
    return flushedEvent && collected.some((e) => e.type === "workerPool.deadLettered") ? flushedEvent : undefined;
  }, 5_000);
  assert.equal(found.env, "test");
  assert.equal(found.serviceKey, "svc-test");
  assert.equal(found.jobName, "webhookBatcher");
  const types = new Set(collected.map((e) => e.type));
  for (const type of ["continuous.started", "continuous.executed", "continuous.stopped", "debounce.eventReceived",
    "workerPool.enqueued", "workerPool.completed", "workerPool.failed", "workerPool.cancelled"]) {
    assert.ok(types.has(type), `${type} in ${[...types].join(", ")}`);
  }
});

test("restart: state and alarms survive, and a missed alarm fires after the restart", async () => {
  const id = "user-restart";
  const mine = (e) => e.job === "tokenRefresher" && e.id === id;
  await post(`/tokens/${id}/start`, {});
  await waitForEntries("the first run", mine, 1, 3_000);
  await post("/webhooks/c-restart/add", { field: "kept" });
  const processed = (await get("/emails/status")).processed;
  const runsBefore = (await entries(mine)).length;

  await stop(); // the refresh (2 s) and the flush (1.5 s) both come due while stopped
  await sleep(3_000);
  await start();

  // Only the log is read until both alarms have fired: nothing else wakes the job objects.
  const [flush] = await waitForEntries("the missed flush",
    (e) => e.id === "c-restart" && e.phase === "flushed", 1, 5_000);
  assert.deepEqual(flush.fields, ["kept"]);
  await waitForEntries("the missed run", mine, runsBefore + 1, 5_000);

  const { status } = await get(`/tokens/${id}/status`);
  assert.equal(status.status.status, "active");
  assert.ok(status.runCount >= runsBefore + 1);
  assert.ok((await get(`/tokens/${id}/state`)).state.refreshes >= runsBefore + 1);
  assert.equal((await get("/emails/status")).processed, processed, "pool counters survive");
  assert.equal((await post("/webhooks/c-time/add", { field: "email", eventId: "evt-1" })).duplicate, true,
    "deduplication records survive");
  await post(`/tokens/${id}/stop`);
});
