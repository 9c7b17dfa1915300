'use strict';
// Calling breakerd from Node.js with nothing but the .proto: ask the
// coordinator before calling a dependency (Acquire), then tell it how the
// call went (Report), carrying back the generation and probe lease it gave.
//
//   node example.js [HOST:PORT]      (default $BREAKERD_ADDR or 127.0.0.1:50051)
//
// The same functions are used by test.js against a real breakerd.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'breakerd/v1/breakerd.proto';

/** Every call to the coordinator gets a deadline; a dependency guard must never hang. */
const DEFAULT_TIMEOUT_MS = 50;

/** Loads breakerd.v1 from the .proto at run time (no generated code to keep in sync). */
function loadApi() {
  const definition = protoLoader.loadSync(PROTO_FILE, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names exactly as in the proto: retry_after_ms, lease_id...
    longs: Number, // uint64 counters and ids fit comfortably in a double here
    enums: String, // 'CIRCUIT_STATE_OPEN' rather than 2
    defaults: true, // zero values present, as in every other language
  });
  return grpc.loadPackageDefinition(definition).breakerd.v1;
}

/** Thrown when the coordinator turns a call away; the dependency was not called. */
class CircuitOpenError extends Error {
  constructor(circuit, decision) {
    super(`circuit ${circuit} is ${decision.state} (${decision.reject_reason}); retry after ${decision.retry_after_ms} ms`);
    this.name = 'CircuitOpenError';
    this.circuit = circuit;
    this.retryAfterMs = Number(decision.retry_after_ms);
    this.state = decision.state;
    this.reason = decision.reject_reason;
  }
}

/** Turns a callback-style unary call into a promise with a deadline. */
function unary(client, method, request, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + timeoutMs }, (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

/**
 * Runs `fn` under the circuit `circuit`: Acquire first (throws
 * CircuitOpenError when rejected, without calling fn), then Report SUCCESS
 * or FAILURE with the call's latency. fn's own result or error is what the
 * caller gets; a report that cannot be delivered is only logged.
 */
async function guarded(breaker, { circuit, nodeId, timeoutMs = DEFAULT_TIMEOUT_MS }, fn) {
  const decision = await unary(breaker, 'Acquire', { circuit, node_id: nodeId }, timeoutMs);
  if (!decision.allowed) throw new CircuitOpenError(circuit, decision);

  const started = process.hrtime.bigint();
  let outcome = 'OUTCOME_SUCCESS';
  try {
    return await fn();
  } catch (err) {
    outcome = 'OUTCOME_FAILURE';
    throw err;
  } finally {
    const latencyUs = Number((process.hrtime.bigint() - started) / 1000n);
    const report = {
      node_id: nodeId,
      outcomes: [
        {
          circuit,
          generation: decision.generation, // outcomes of an older generation are stale, by design
          lease_id: decision.lease_id, // non-zero only for a HALF_OPEN probe
          outcome,
          latency_us: latencyUs,
        },
      ],
    };
    try {
      await unary(breaker, 'Report', report, timeoutMs);
    } catch (err) {
      console.error(JSON.stringify({ level: 'WARN', message: 'breakerd report lost', circuit, error: err.message }));
    }
  }
}

async function main() {
  const target = process.argv[2] || process.env.BREAKERD_ADDR || '127.0.0.1:50051';
  const api = loadApi();
  const breaker = new api.Breaker(target, grpc.credentials.createInsecure());
  const opts = { circuit: 'example.node:payments', nodeId: 'node-example', timeoutMs: 1000 };

  // A call that works, then one that fails: both are reported.
  const ok = await guarded(breaker, opts, async () => 'charged');
  console.log(JSON.stringify({ call: 1, result: ok }));
  try {
    await guarded(breaker, opts, async () => {
      throw new Error('payments returned 503');
    });
  } catch (err) {
    const rejected = err instanceof CircuitOpenError;
    console.log(JSON.stringify({ call: 2, error: err.message, rejected }));
  }
  breaker.close();
}

module.exports = { loadApi, unary, guarded, CircuitOpenError, DEFAULT_TIMEOUT_MS };

if (require.main === module) {
  main().catch((err) => {
    console.error(`example: ${err.message}`);
    process.exitCode = 1;
  });
}
