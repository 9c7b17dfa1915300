'use strict';
// example.js against a real breakerd binary (node's built-in test runner).
//
// breakerd is started on 127.0.0.1:0; the port it bound is read from its
// JSON start-up log line ("listen_addr"). Nothing sleeps: every wait is on
// an event (a log line, a stream message) with a deadline.
//
// BREAKERD_BIN=path tests that binary instead of target/debug/breakerd.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');

const { loadApi, unary, guarded, CircuitOpenError } = require('./example.js');

const ROOT = path.resolve(__dirname, '..', '..');
const STARTUP_TIMEOUT_MS = 30_000;
const EVENT_TIMEOUT_MS = 10_000;
const RPC_TIMEOUT_MS = 5_000; // generous for a loaded CI machine

let server; // { proc, addr, output }
let api;
let breaker;
let admin;

/** The bound address from a JSON log line, if this is the announcing line. */
function listenAddr(line) {
  let event;
  try {
    event = JSON.parse(line);
  } catch {
    return null;
  }
  const value = (event && (event.listen_addr || (event.fields && event.fields.listen_addr))) || null;
  return typeof value === 'string' && /:(\d+)$/.test(value) && !value.endsWith(':0') ? value : null;
}

function startBreakerd() {
  const bin = process.env.BREAKERD_BIN
    ? path.resolve(ROOT, process.env.BREAKERD_BIN)
    : path.join(ROOT, 'target', 'debug', 'breakerd');
  fs.accessSync(bin, fs.constants.X_OK); // a clear error when it is not built
  // The developer's BREAKERD_* settings must not change what the test starts.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BREAKERD_')));
  const proc = spawn(bin, ['--listen', '127.0.0.1:0', '--store', 'none', '--http-listen', 'off'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no listen_addr line within ${STARTUP_TIMEOUT_MS} ms:\n${output.join('\n')}`));
    }, STARTUP_TIMEOUT_MS);
    const onLine = (line) => {
      output.push(line);
      const addr = listenAddr(line);
      if (addr) {
        clearTimeout(timer);
        resolve({ proc, addr, output });
      }
    };
    readline.createInterface({ input: proc.stdout }).on('line', onLine);
    readline.createInterface({ input: proc.stderr }).on('line', (l) => output.push(l));
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`breakerd exited with ${code} before announcing its address:\n${output.join('\n')}`));
    });
  });
}

function waitForReady(client) {
  return new Promise((resolve, reject) => {
    client.waitForReady(Date.now() + STARTUP_TIMEOUT_MS, (err) => (err ? reject(err) : resolve()));
  });
}

before(async () => {
  server = await startBreakerd();
  api = loadApi();
  breaker = new api.Breaker(server.addr, grpc.credentials.createInsecure());
  admin = new api.Admin(server.addr, grpc.credentials.createInsecure());
  await waitForReady(breaker);
});

after(() => {
  if (breaker) breaker.close();
  if (admin) admin.close();
  if (server && server.proc.exitCode === null) server.proc.kill('SIGKILL');
});

const getCircuit = (name) => unary(admin, 'GetCircuit', { name }, RPC_TIMEOUT_MS);

test('a guarded call is acquired and its success reported', async () => {
  const circuit = 'node.example:ok';
  const result = await guarded(breaker, { circuit, nodeId: 'node-1', timeoutMs: RPC_TIMEOUT_MS }, async () => 'charged');
  assert.equal(result, 'charged');

  const detail = await getCircuit(circuit);
  assert.equal(detail.snapshot.state, 'CIRCUIT_STATE_CLOSED');
  assert.equal(detail.counters.total_allowed, 1);
  assert.equal(detail.counters.total_successes, 1);
  assert.equal(detail.counters.total_failures, 0);
});

test('failures trip the circuit; the watcher sees it; later calls are rejected unmade', async () => {
  const circuit = 'node.example:trip';
  await unary(
    admin,
    'SetPolicy',
    { name: circuit, policy: { consecutive_failures: 2, open_base_ms: 60_000 }, actor: 'node-test', reason: 'test' },
    RPC_TIMEOUT_MS,
  );

  // Subscribe first: the initial snapshot, then every change, pushed.
  const watch = breaker.Watch({ circuits: [circuit], node_id: 'node-watcher' });
  const events = [];
  let wake = null;
  watch.on('data', (ev) => {
    events.push(ev);
    if (wake) wake();
  });
  watch.on('error', () => {}); // cancelled at the end
  const nextEvent = () =>
    new Promise((resolve, reject) => {
      if (events.length) return resolve(events.shift());
      const timer = setTimeout(() => reject(new Error('no watch event in time')), EVENT_TIMEOUT_MS);
      wake = () => {
        clearTimeout(timer);
        wake = null;
        resolve(events.shift());
      };
    });

  try {
    const initial = await nextEvent();
    assert.equal(initial.initial, true);
    assert.equal(initial.circuits[0].name, circuit);
    assert.equal(initial.circuits[0].state, 'CIRCUIT_STATE_CLOSED');

    const opts = { circuit, nodeId: 'node-2', timeoutMs: RPC_TIMEOUT_MS };
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        guarded(breaker, opts, async () => {
          throw new Error('dependency down');
        }),
        /dependency down/,
      );
    }

    let snap;
    do {
      const ev = await nextEvent();
      snap = ev.circuits.find((s) => s.name === circuit);
    } while (!snap || snap.state !== 'CIRCUIT_STATE_OPEN');
    assert.ok(snap.open_remaining_ms > 0);

    let called = false;
    await assert.rejects(
      guarded(breaker, opts, async () => {
        called = true;
      }),
      (err) => {
        assert.ok(err instanceof CircuitOpenError, err);
        assert.equal(err.state, 'CIRCUIT_STATE_OPEN');
        assert.equal(err.reason, 'REJECT_REASON_OPEN');
        assert.ok(err.retryAfterMs > 0 && err.retryAfterMs <= 66_000, `${err.retryAfterMs}`);
        return true;
      },
    );
    assert.equal(called, false, 'the dependency must not be called while OPEN');

    const detail = await getCircuit(circuit);
    assert.equal(detail.counters.total_failures, 2);
    assert.equal(detail.counters.total_rejected, 1);
    assert.equal(detail.history[0].reason, 'consecutive_failures');
  } finally {
    watch.cancel();
  }
});

test('a probe lease is carried back in the report and closes the circuit', async () => {
  const circuit = 'node.example:probe';
  const change = { name: circuit, actor: 'node-test', reason: 'test' };
  await unary(admin, 'SetOverride', { ...change, kind: 'OVERRIDE_KIND_FORCED_OPEN' }, RPC_TIMEOUT_MS);
  // Clearing a forced-open circuit leaves it HALF_OPEN: the fleet probes first.
  await unary(admin, 'ClearOverride', change, RPC_TIMEOUT_MS);
  assert.equal((await getCircuit(circuit)).snapshot.state, 'CIRCUIT_STATE_HALF_OPEN');

  await guarded(breaker, { circuit, nodeId: 'node-3', timeoutMs: RPC_TIMEOUT_MS }, async () => {
    const during = await getCircuit(circuit);
    assert.equal(during.counters.probes_in_flight, 1);
  });
  const detail = await getCircuit(circuit);
  assert.equal(detail.snapshot.state, 'CIRCUIT_STATE_CLOSED');
  assert.equal(detail.counters.probes_in_flight, 0);
});

test('a coordinator that is down fails fast with UNAVAILABLE or DEADLINE_EXCEEDED', async () => {
  const net = require('node:net');
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  const down = new api.Breaker(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    let called = false;
    await assert.rejects(
      guarded(down, { circuit: 'node.example:down', nodeId: 'node-4', timeoutMs: 200 }, async () => {
        called = true;
      }),
      (err) => [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(err.code),
    );
    assert.equal(called, false);
  } finally {
    down.close();
  }
});
