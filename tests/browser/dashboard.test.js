'use strict';
// The dashboard (GET / on breakerd's HTTP side port) in a real Chromium,
// against the real breakerd binary.
//
// breakerd starts with --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 and an
// admin token in BREAKERD_HTTP_ADMIN_TOKEN; the bound addresses come from its
// JSON start-up line (listen_addr, http_addr). A circuit is tripped through
// the real gRPC Report path; the page must show it OPEN live (Server-Sent
// Events, no reload), then "Force closed" is clicked and the change must
// show on the page, in the JSON API and on the gRPC data plane.
// Nothing sleeps: every wait polls the DOM or waits on an event with a
// deadline. A screenshot is left in target/dashboard.png.
//
// BREAKERD_BIN=path  test that binary; CHROMIUM=path  that browser.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const STARTUP_TIMEOUT_MS = 30_000;
const UI_TIMEOUT_MS = 15_000;
const RPC_TIMEOUT_MS = 5_000;
const TOKEN = crypto.randomBytes(16).toString('hex');
const CIRCUIT = 'checkout:v2';

let server; // { proc, grpcAddr, httpAddr, output }
let breaker;
let context;
let page;
let userDataDir;
const pageErrors = [];

function startBreakerd() {
  const bin = process.env.BREAKERD_BIN
    ? path.resolve(ROOT, process.env.BREAKERD_BIN)
    : path.join(ROOT, 'target', 'debug', 'breakerd');
  fs.accessSync(bin, fs.constants.X_OK);
  // The developer's BREAKERD_* settings must not change what is tested.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BREAKERD_')));
  env.BREAKERD_HTTP_ADMIN_TOKEN = TOKEN;
  const proc = spawn(bin, ['--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--store', 'none'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no start-up line within ${STARTUP_TIMEOUT_MS} ms:\n${output.join('\n')}`));
    }, STARTUP_TIMEOUT_MS);
    const onLine = (line) => {
      output.push(line);
      let ev;
      try {
        ev = JSON.parse(line);
      } catch {
        return;
      }
      const f = ev.fields || ev;
      if (typeof f.listen_addr === 'string' && typeof f.http_addr === 'string' && f.http_addr !== 'off') {
        clearTimeout(timer);
        resolve({ proc, grpcAddr: f.listen_addr, httpAddr: f.http_addr, output });
      }
    };
    readline.createInterface({ input: proc.stdout }).on('line', onLine);
    readline.createInterface({ input: proc.stderr }).on('line', onLine);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`breakerd exited (${code ?? signal}) during start-up:\n${output.join('\n')}`));
    });
  });
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + RPC_TIMEOUT_MS }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

async function api(pathname) {
  const res = await fetch(`http://${server.httpAddr}${pathname}`, { signal: AbortSignal.timeout(RPC_TIMEOUT_MS) });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/** The text of the state badge of `name`'s row ('' while the row is absent). */
function rowState(name) {
  return page.evaluate((n) => {
    const row = [...document.querySelectorAll('tr[data-circuit]')].find((r) => r.dataset.circuit === n);
    return row ? row.querySelector('.state').textContent : '';
  }, name);
}

/** Polls the page until `name`'s row shows `state`, or fails after the deadline. */
async function waitForState(name, state) {
  try {
    await page.waitForFunction(
      ([n, s]) => {
        const row = [...document.querySelectorAll('tr[data-circuit]')].find((r) => r.dataset.circuit === n);
        return row && row.querySelector('.state').textContent === s;
      },
      [name, state],
      { timeout: UI_TIMEOUT_MS, polling: 50 },
    );
  } catch (e) {
    throw new Error(`the page did not show ${name} ${state} within ${UI_TIMEOUT_MS} ms (it shows ${await rowState(name) || 'no row'}): ${e.message}`);
  }
}

before(async () => {
  server = await startBreakerd();
  const definition = protoLoader.loadSync('breakerd/v1/breakerd.proto', {
    includeDirs: [path.join(ROOT, 'proto')],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
  });
  const v1 = grpc.loadPackageDefinition(definition).breakerd.v1;
  breaker = new v1.Breaker(server.grpcAddr, grpc.credentials.createInsecure());

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'breakerd-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1400, height: 800 },
    timeout: STARTUP_TIMEOUT_MS,
  });
  page = context.pages()[0] || (await context.newPage());
  // Only the side port may be reached: the page must need nothing else.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.host === server.httpAddr) return route.continue();
    return route.abort();
  });
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') pageErrors.push(msg.text());
  });
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  if (breaker) breaker.close();
  if (server) {
    server.proc.kill('SIGTERM');
    await new Promise((resolve) => {
      if (server.proc.exitCode !== null || server.proc.signalCode !== null) resolve();
      else server.proc.on('exit', resolve);
    });
  }
});

test('the dashboard shows a trip live and forces the circuit closed', async () => {
  // Two circuits before the page loads: one to trip, one that stays closed.
  for (const circuit of [CIRCUIT, 'search']) {
    const a = await unary(breaker, 'Acquire', { circuit, node_id: 'web-1' });
    assert.equal(a.allowed, true);
  }

  await page.goto(`http://${server.httpAddr}/`, { timeout: UI_TIMEOUT_MS });
  await waitForState(CIRCUIT, 'CLOSED');
  await waitForState('search', 'CLOSED');
  await page.waitForFunction(() => document.getElementById('conn').textContent === 'live', null, {
    timeout: UI_TIMEOUT_MS,
    polling: 50,
  });

  // The filter narrows the list by name.
  await page.fill('#filter', 'check');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-circuit]').length === 1, null, {
    timeout: UI_TIMEOUT_MS,
    polling: 50,
  });
  await page.fill('#filter', '');

  // Trip it through the real gRPC path: 5 consecutive failures (the default policy).
  for (let i = 0; i < 5; i++) {
    const a = await unary(breaker, 'Acquire', { circuit: CIRCUIT, node_id: 'web-1' });
    assert.equal(a.allowed, true);
    await unary(breaker, 'Report', {
      node_id: 'web-1',
      outcomes: [{ circuit: CIRCUIT, generation: a.generation, lease_id: 0, outcome: 'OUTCOME_FAILURE', latency_us: 1000 }],
    });
  }
  const rejected = await unary(breaker, 'Acquire', { circuit: CIRCUIT, node_id: 'web-1' });
  assert.equal(rejected.allowed, false);

  // Live, without a reload: only /events moves a row's state.
  await waitForState(CIRCUIT, 'OPEN');
  assert.equal(await rowState('search'), 'CLOSED');
  const activity = await page.textContent('#activity');
  assert.match(activity, /checkout:v2: CLOSED → OPEN/);
  // The failure-rate sparkline picks the failures up from the polled counters.
  await page.waitForSelector(`tr[data-circuit="${CIRCUIT}"] svg.spark rect.spark-bar`, { timeout: UI_TIMEOUT_MS });
  assert.match(
    await page.textContent(`tr[data-circuit="${CIRCUIT}"] svg.spark title`),
    /100% failures/,
  );

  // An action without a reason is refused by the page itself.
  await page.fill('#token', TOKEN);
  await page.fill('#operator', 'browser-test');
  await page.click(`tr[data-circuit="${CIRCUIT}"] button[data-action="forced_closed"]`);
  await page.waitForFunction(() => /reason is required/.test(document.getElementById('message').textContent), null, {
    timeout: UI_TIMEOUT_MS,
    polling: 50,
  });

  // A wrong token is refused by the server, and the page says so.
  await page.fill('#reason', 'payments provider confirmed healthy');
  await page.fill('#token', 'not-the-token-at-all');
  await page.click(`tr[data-circuit="${CIRCUIT}"] button[data-action="forced_closed"]`);
  await page.waitForFunction(() => /wrong admin token/.test(document.getElementById('message').textContent), null, {
    timeout: UI_TIMEOUT_MS,
    polling: 50,
  });
  assert.equal((await api(`/api/circuits/${encodeURIComponent(CIRCUIT)}`)).override, null);

  // Force closed, with the right token.
  await page.fill('#token', TOKEN);
  await page.click(`tr[data-circuit="${CIRCUIT}"] button[data-action="forced_closed"]`);
  await waitForState(CIRCUIT, 'CLOSED');
  await page.waitForSelector(`tr[data-circuit="${CIRCUIT}"] .override-forced_closed`, { timeout: UI_TIMEOUT_MS });

  const detail = await api(`/api/circuits/${encodeURIComponent(CIRCUIT)}`);
  assert.equal(detail.state, 'closed');
  assert.equal(detail.override.kind, 'forced_closed');
  assert.equal(detail.override.actor, 'dashboard:browser-test');
  assert.equal(detail.override.reason, 'payments provider confirmed healthy');
  assert.equal(detail.history[0].cause, 'override_set');
  const allowed = await unary(breaker, 'Acquire', { circuit: CIRCUIT, node_id: 'web-1' });
  assert.equal(allowed.allowed, true, 'the data plane follows the override');

  // The token was kept for the session, not in the URL.
  assert.equal(await page.evaluate(() => sessionStorage.getItem('breakerd.admin_token')), TOKEN);
  assert.ok(!page.url().includes(TOKEN));

  // The metrics endpoint saw it all.
  const metrics = await (await fetch(`http://${server.httpAddr}/metrics`)).text();
  assert.match(metrics, /breakerd_transitions_total\{from="closed",to="open",cause="consecutive_failures"\} 1\n/);
  assert.match(metrics, /breakerd_connected_clients\{kind="sse"\} 1\n/);

  // Open the detail panel for the screenshot, then take it.
  await page.click(`tr[data-circuit="${CIRCUIT}"] button[data-action="detail"]`);
  await page.waitForFunction((n) => document.getElementById('detail-name').textContent === n, CIRCUIT, {
    timeout: UI_TIMEOUT_MS,
    polling: 50,
  });
  fs.mkdirSync(path.join(ROOT, 'target'), { recursive: true });
  await page.screenshot({ path: path.join(ROOT, 'target', 'dashboard.png'), fullPage: true });

  // The refused write above logs a failed request in the console; nothing else may.
  const unexpected = pageErrors.filter((e) => !/status of 403/.test(e));
  assert.deepEqual(unexpected, [], 'errors in the page');
});

test('a snapshot sent in many pages fills the table from /events alone', async () => {
  // 400 long names: about 100 KB of snapshot, several 32 KiB pages.
  const pad = 'p'.repeat(60);
  for (let i = 0; i < 400; i++) {
    const circuit = `bulk-${String(i).padStart(4, '0')}/${pad}`;
    await unary(breaker, 'Acquire', { circuit, node_id: 'bulk' });
  }
  const second = await context.newPage();
  // No list polls: only a snapshot put together from all its pages can
  // show every row (one that kept only its last page would show fewer).
  await second.route((url) => url.pathname === '/api/circuits', (route) => route.abort());
  try {
    await second.goto(`http://${server.httpAddr}/`, { timeout: UI_TIMEOUT_MS });
    await second.waitForFunction(() => document.querySelectorAll('tr[data-circuit^="bulk-"]').length === 400, null, {
      timeout: UI_TIMEOUT_MS,
      polling: 50,
    });
    // The earlier circuits are there too, with their live state.
    const rows = await second.evaluate(() => document.querySelectorAll('tr[data-circuit]').length);
    assert.equal(rows, 402);
  } finally {
    await second.close();
  }
});
