/**
 * docs/metrics.md and the code cannot drift: every series of the catalogue tables is
 * exported with its documented type and label names, and nothing undocumented is. Also
 * the shared endpoint (GET /metrics, /healthz, 404/405) and the --metrics address rules.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import {
  AGENT_ERROR_CAUSES, BACKEND_OPS, INTERRUPT_OUTCOMES, RECONNECT_WHAT, REQUEST_OUTCOMES, REQUEST_TYPES, agentMetrics,
} from '../../services/agent/src/metrics.ts';
import {
  DURATION_BUCKETS, MetricsAddressError, createMetricsRegistry, metricsFlag, parseMetricsAddress, startCommandMetrics, startMetricsServer,
} from '../../services/common/src/metrics.ts';
import { RPC_METHODS, STORE_OPS, lineStateMetrics } from '../../services/linestate/src/metrics.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { httpGet, parseExposition, promtoolCheck, readCatalogue, withoutFlaggedDefaults } from './exposition.ts';

test('every series of docs/metrics.md is exported with its type and labels, and only those', async () => {
  const rows = readCatalogue();
  assert.ok(rows.length >= 20, `catalogue has ${rows.length} rows`);
  const store = createMemoryStore();
  try {
    const registry = createMetricsRegistry();
    agentMetrics(registry).forChip('vm-x');
    lineStateMetrics({ registry, store, storeKind: 'memory', sampleCacheMs: 0 });
    const text = await registry.metrics();
    const exp = parseExposition(text);
    for (const row of rows) {
      assert.equal(exp.types.get(row.name), row.type, `${row.name}: TYPE`);
      const sampleName = row.type === 'histogram' ? `${row.name}_bucket` : row.name;
      const samples = exp.samples.filter((s) => s.name === sampleName);
      assert.ok(samples.length > 0, `${row.name}: no sample (series are precreated)`);
      for (const s of samples) {
        const keys = Object.keys(s.labels).filter((k) => k !== 'le').sort();
        assert.deepEqual(keys, [...row.labels].sort(), `${row.name}: label names`);
      }
      if (row.type === 'histogram') {
        const les = samples.filter((s) => Object.entries(s.labels).every(([k, v]) => k === 'le' || v === samples[0]!.labels[k])).map((s) => s.labels['le']);
        assert.deepEqual(les, [...DURATION_BUCKETS.map(String), '+Inf'], `${row.name}: buckets`);
      }
    }
    const documented = new Set(rows.map((r) => r.name));
    const own = [...exp.types.keys()].filter((n) => /^gpiofabric_(agent|linestate)_/.test(n));
    assert.deepEqual(own.filter((n) => !documented.has(n)), [], 'exported but not in docs/metrics.md');
    // prom-client's defaults are there, prefixed
    assert.equal(exp.types.get('gpiofabric_process_cpu_seconds_total'), 'counter');
    const lint = promtoolCheck(withoutFlaggedDefaults(text));
    assert.equal(lint.error, undefined, `promtool could not run (Debian package prometheus): ${String(lint.error)}`);
    assert.equal(lint.output, '', 'promtool check metrics reports problems');
    assert.equal(lint.status, 0);
  } finally {
    await store.close();
  }
});

/**
 * The text of docs/metrics.md from the line that starts with `start` up to the next table
 * row, list item or blank line (a table row or a list item with its continuation lines).
 */
function docPart(doc: string, start: string): string {
  const lines = doc.split('\n');
  const i = lines.findIndex((l) => l.startsWith(start));
  assert.notEqual(i, -1, `docs/metrics.md has no line starting with ${start}`);
  const out = [lines[i]!];
  for (let j = i + 1; j < lines.length; j++) {
    const l = lines[j]!;
    if (l.trim() === '' || l.startsWith('|') || l.startsWith('- ')) break;
    out.push(l);
  }
  return out.join(' ');
}

/** The backticked words of `text`. */
const ticked = (text: string): Set<string> => new Set([...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!));

test('every label value the code uses is named in docs/metrics.md', () => {
  const doc = readFileSync('docs/metrics.md', 'utf8');
  const expectNamed = (where: string, values: readonly string[]): void => {
    const words = ticked(docPart(doc, where));
    assert.deepEqual(values.filter((v) => !words.has(v)), [], `values missing from "${where}…"`);
  };
  expectNamed('| `gpiofabric_agent_requests_total`', [...REQUEST_TYPES, ...REQUEST_OUTCOMES]);
  expectNamed('| `gpiofabric_agent_interrupts_total`', INTERRUPT_OUTCOMES);
  expectNamed('| `gpiofabric_agent_reconnects_total`', RECONNECT_WHAT);
  expectNamed('| `gpiofabric_agent_errors_total`', AGENT_ERROR_CAUSES);
  expectNamed('- `backend_duration_seconds`', BACKEND_OPS);
  // The service's method and store-op lists are exactly the code's (the text names no other value in them).
  const methods = /`method` is the RPC name \(([^)]*)\)/.exec(docPart(doc, '- `rpcs_total`'));
  assert.ok(methods !== null, 'the rpcs_total item lists the methods');
  assert.deepEqual([...ticked(methods[1]!)].sort(), [...RPC_METHODS].sort(), 'rpcs_total method values');
  const ops = /`op` is the store method \(([^)]*)\)/.exec(docPart(doc, '- `store_duration_seconds`'));
  assert.ok(ops !== null, 'the store_duration_seconds item lists the ops');
  assert.deepEqual([...ticked(ops[1]!)].sort(), [...STORE_OPS].sort(), 'store_duration_seconds op values');
});

test('GET /metrics, GET /healthz in both states, 404 and 405', async () => {
  const registry = createMetricsRegistry({ defaultMetrics: false });
  let healthy: boolean | string = true;
  const s = await startMetricsServer({ listen: '127.0.0.1:0', registry, health: () => Promise.resolve(healthy), healthTimeoutMs: 200 });
  try {
    assert.match(s.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(s.port, 0);
    agentMetrics(registry).forChip('vm-h');
    const m = await httpGet(s.address, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(parseExposition(m.body).value('gpiofabric_agent_frontend_connected', { chip: 'vm-h' }), 0);
    assert.deepEqual(await httpGet(s.address, '/healthz').then((r) => [r.status, r.body]), [200, 'ok\n']);
    healthy = 'store: connection refused';
    assert.deepEqual(await httpGet(s.address, '/healthz').then((r) => [r.status, r.body]), [503, 'unhealthy: store: connection refused\n']);
    healthy = false;
    assert.equal((await httpGet(s.address, '/healthz')).status, 503);
    assert.equal((await httpGet(s.address, '/nope')).status, 404);
    assert.equal((await httpGet(s.address, '/metrics', 'POST')).status, 405);
  } finally {
    await s.close();
  }
  // a health probe that never answers is a 503 after the timeout
  const hang = await startMetricsServer({ listen: '127.0.0.1:0', registry, health: () => new Promise(() => {}), healthTimeoutMs: 100 });
  try {
    const r = await httpGet(hang.address, '/healthz');
    assert.equal(r.status, 503);
    assert.match(r.body, /no answer within 100 ms/);
  } finally {
    await hang.close();
  }
});

test('--metrics values: HOST:PORT or off; bad ones are errors; a taken default is skipped, a taken explicit address is not', async () => {
  assert.deepEqual(parseMetricsAddress('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseMetricsAddress('[::1]:0'), { host: '::1', port: 0 });
  for (const bad of ['9464', ':9464', 'localhost', 'host:65536', 'host:-1', 'host:port', 'a b:1', '[]:1']) {
    assert.throws(() => parseMetricsAddress(bad), MetricsAddressError, bad);
  }
  assert.equal(metricsFlag('off', '127.0.0.1:9464'), undefined);
  assert.equal(metricsFlag(undefined, undefined), undefined);
  assert.deepEqual(metricsFlag(undefined, '127.0.0.1:9464'), { listen: '127.0.0.1:9464', explicit: false });
  assert.deepEqual(metricsFlag('0.0.0.0:0', undefined), { listen: '0.0.0.0:0', explicit: true });
  assert.throws(() => metricsFlag('nonsense', undefined), MetricsAddressError);

  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const taken = `127.0.0.1:${(blocker.address() as { port: number }).port}`;
  try {
    const registry = createMetricsRegistry({ defaultMetrics: false });
    const logged: string[] = [];
    assert.equal(await startCommandMetrics({ listen: taken, explicit: false }, { registry, log: (m) => logged.push(m) }), undefined);
    assert.match(logged.join('\n'), /in use; running without a metrics endpoint/);
    await assert.rejects(startCommandMetrics({ listen: taken, explicit: true }, { registry }), /cannot serve metrics on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
  } finally {
    await new Promise<void>((r) => blocker.close(() => r()));
  }
});
