/**
 * A real Prometheus scrapes a real fabric, and every panel of every dashboard shows data.
 *
 * The fabric: a spawned redis-server, two `gpio-fabric serve --redis` replicas and two
 * `gpio-fabric agent` processes (vm-a on replica 1, vm-b on replica 2), each with
 * `--metrics` on its own port. Prometheus (Debian's /usr/bin/prometheus, temporary
 * storage, scrape and rule evaluation every second, the repository's rule file) scrapes
 * them as the jobs gpiofabric-linestate and gpiofabric-agent, like the compose setup.
 *
 * Once every target is up, a scripted workload runs through the frontend test driver
 * (plays QEMU + the guest driver) and the line-state client: vm-a:0 wired to vm-b:0 and
 * toggled so vm-b gets cross-VM interrupts (delivered), an edge while masked (latched),
 * an armed buffer returned by SET_IRQ_TYPE NONE (invalid), bad guest requests (err),
 * failing operator calls (NOT_FOUND, INVALID_ARGUMENT), a contended net and an expired
 * lease taken over. The agents send the guests' line operations on their OpStreams, so the
 * line operation panels (stream_ops_total, store op lineOps) see them. Then every panel query is run through Prometheus' HTTP API with the
 * template variables substituted, and each must return a non-empty result.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DriveMode, DriveValue, IrqType, Pull } from '../../services/common/src/line-model.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { Cleanup, startProc, until, type FabricProc } from '../faults/support.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { freePort, startRedis } from '../support/redis.ts';
import { ROOT, findTool, panelQueries, type PanelQuery } from './support.ts';

const OK = 0;
const ERR = 1;
const VALID = 1;
const INVALID = 0;
const OUT = 1;
const IN = 2;
/**
 * What `$__rate_interval` becomes: longer than this Prometheus lives, so every rate and
 * quantile covers the whole workload however slow the machine is.
 */
const RATE_INTERVAL = '5m';
/** Cross-VM toggles of vm-a:0 seen by vm-b as interrupts. */
const TOGGLES = 10;
/** Bad guest requests sent by vm-a (out-of-range line, unknown type). */
const BAD_REQUESTS = 8;

interface PromVector {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

interface PromResponse<T> {
  readonly status: string;
  readonly data: T;
  readonly error?: string;
}

/** A real Prometheus on a free loopback port. */
class Prometheus {
  constructor(readonly base: string, readonly proc: ChildProcess, readonly log: () => string) {}

  async get<T>(path: string, params: Record<string, string> = {}): Promise<T> {
    const url = new URL(path, this.base);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as PromResponse<T>;
    if (res.status !== 200 || body.status !== 'success') throw new Error(`${url.pathname}: HTTP ${res.status} ${body.error ?? ''}`);
    return body.data;
  }

  /** Instant query; the result vector. */
  async query(expr: string): Promise<PromVector[]> {
    const data = await this.get<{ resultType: string; result: PromVector[] | [number, string] }>('/api/v1/query', { query: expr });
    if (data.resultType === 'scalar') return [{ metric: {}, value: data.result as [number, string] }];
    return data.result as PromVector[];
  }

  /** The single value of `expr` (NaN when the result is empty). */
  async value(expr: string): Promise<number> {
    const r = await this.query(expr);
    return r.length === 0 ? Number.NaN : Number(r[0]?.value[1]);
  }
}

async function startPrometheus(cleanup: Cleanup, dir: string, targets: { linestate: string[]; agent: string[] }): Promise<Prometheus> {
  const binary = findTool('prometheus');
  const port = await freePort();
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'rule_files:',
    `  - ${JSON.stringify(join(ROOT, 'deploy/prometheus/rules/gpio-fabric.rules.yml'))}`,
    'scrape_configs:',
    '  - job_name: gpiofabric-linestate',
    '    static_configs:',
    `      - targets: ${JSON.stringify(targets.linestate)}`,
    '  - job_name: gpiofabric-agent',
    '    static_configs:',
    `      - targets: ${JSON.stringify(targets.agent)}`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  mkdirSync(join(dir, 'data'));
  let log = '';
  const proc = spawn(binary, [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--storage.tsdb.retention.time=1h',
    '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout?.on('data', (d: Buffer) => { log += d.toString(); });
  proc.stderr?.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  cleanup.defer('stop prometheus', async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    proc.kill('SIGTERM');
    await exited;
    clearTimeout(t);
  });
  const prom = new Prometheus(`http://127.0.0.1:${port}`, proc, () => log);
  await until('prometheus ready', async () => {
    if (proc.exitCode !== null) throw new Error(`prometheus exited with ${proc.exitCode}:\n${log}`);
    const r = await fetch(`${prom.base}/-/ready`, { signal: AbortSignal.timeout(2000) });
    return r.status === 200;
  }, 20_000, 100);
  return prom;
}

/** `name{labels} value` samples of a /metrics text. */
async function scrape(address: string): Promise<string> {
  const r = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200);
  return r.text();
}

function sampleValue(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return Number.NaN;
}

/** A panel query with Grafana's variables replaced by what the test knows. */
function substitute(expr: string, chip: string): string {
  return expr.replaceAll('$__rate_interval', RATE_INTERVAL).replaceAll('${chip}', chip).replaceAll('$chip', chip).replaceAll('${datasource}', '').replaceAll('$datasource', '');
}

describe('a real Prometheus scraping a real fabric: every dashboard panel has data, the rules load', () => {
  const cleanup = new Cleanup();
  let prom: Prometheus;
  let client: LineStateClient;
  const metricsAt = { linestate: [] as string[], agent: [] as string[] };

  before(async () => {
    const dir = cleanup.tempDir('gf-obs-');
    const redis = await startRedis();
    cleanup.defer('stop redis', () => redis.stop());
    const fabric = `obs-${process.pid}`;

    // Two line-state replicas on one Redis, each with a metrics endpoint.
    const [l1, l2, m1, m2, ma, mb] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
    const serve = (name: string, listen: number, metrics: number): Promise<FabricProc> =>
      startProc(name, ['serve', '--redis', redis.url, '--fabric', fabric, '--listen', `127.0.0.1:${listen}`, '--metrics', `127.0.0.1:${metrics}`, '--lease-ttl', '1000'], /listening on (\S+)/);
    metricsAt.linestate.push(`127.0.0.1:${m1}`, `127.0.0.1:${m2}`);
    metricsAt.agent.push(`127.0.0.1:${ma}`, `127.0.0.1:${mb}`);
    // Prometheus starts beside the fabric: it scrapes targets as they come up.
    const promStarted = startPrometheus(cleanup, dir, metricsAt);
    promStarted.catch(() => {}); // awaited below; a failure there fails before()
    // Each process is stopped at the end as soon as it has started, even if a sibling fails to.
    const tracked = async (p: Promise<FabricProc>): Promise<FabricProc> => {
      const proc = await p;
      cleanup.defer(`stop ${proc.name}`, () => proc.stop());
      return proc;
    };
    await Promise.all([tracked(serve('linestate-1', l1, m1)), tracked(serve('linestate-2', l2, m2))]);

    // vm-a on replica 1, vm-b on replica 2: interrupts cross replicas through Redis.
    const agent = (chip: string, server: number, metrics: number): Promise<FabricProc> =>
      startProc(chip, ['agent', '--socket', join(dir, `${chip}.sock`), '--chip', chip, '--lines', '4', '--server', `127.0.0.1:${server}`, '--metrics', `127.0.0.1:${metrics}`, '--deadline', '2000'], new RegExp(`agent ${chip}: \\d+ lines on`));
    await Promise.all([tracked(agent('vm-a', l1, ma)), tracked(agent('vm-b', l2, mb))]);
    for (const a of [...metricsAt.linestate, ...metricsAt.agent]) {
      await until(`${a}/healthz`, async () => (await fetch(`http://${a}/healthz`, { signal: AbortSignal.timeout(2000) })).status === 200, 20_000, 100);
    }

    client = createLineStateClient(`127.0.0.1:${l1}`);
    cleanup.defer('close client', () => client.close());

    prom = await promStarted;
    // Every target scraped and up before the workload, so counters' increases fall between samples.
    await until('all 4 targets up', async () => (await prom.value('count(up == 1)')) === 4, 20_000, 200);

    // --- the workload ---------------------------------------------------------------
    const connect = async (chip: string): Promise<Frontend> => {
      const fe = await Frontend.connect(join(dir, `${chip}.sock`));
      cleanup.defer(`close ${chip} front-end`, () => fe.close());
      await fe.start();
      return fe;
    };
    const [a, b] = await Promise.all([connect('vm-a'), connect('vm-b')]);
    const ok = async (fe: Frontend, type: number, gpio: number, value = 0): Promise<number> => {
      const r = await fe.request(type, gpio, value);
      assert.deepEqual([r.status, r.usedLen], [OK, 2], `request type ${type} line ${gpio} value ${value}`);
      return r.value;
    };
    const ref = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });
    await client.wire({ name: 'obs-irq', members: [ref('vm-a', 0), ref('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });

    // delivered: N edges of vm-a:0 interrupt vm-b:0.
    await ok(b, Gpio.SET_DIRECTION, 0, IN);
    await ok(b, Gpio.SET_IRQ_TYPE, 0, IrqType.EDGE_BOTH);
    await ok(a, Gpio.SET_DIRECTION, 0, OUT);
    for (let i = 0; i < TOGGLES; i++) {
      const armed = b.armIrq(0);
      await ok(a, Gpio.SET_VALUE, 0, (i + 1) % 2);
      assert.deepEqual(await armed, { status: VALID, usedLen: 1 }, `toggle ${i} interrupts vm-b`);
      assert.equal(await ok(b, Gpio.GET_VALUE, 0), (i + 1) % 2);
    }
    // latched: an edge while vm-b has no buffer queued; delivered once it queues one.
    await ok(a, Gpio.SET_VALUE, 0, (TOGGLES + 1) % 2);
    await until('vm-b latched the edge', async () => sampleValue(await scrape(metricsAt.agent[1] as string), 'gpiofabric_agent_interrupts_total', { chip: 'vm-b', outcome: 'latched' }) >= 1, 10_000, 20);
    assert.deepEqual(await b.armIrq(0), { status: VALID, usedLen: 1 }, 'the latched edge is delivered on unmask');
    // invalid: an armed buffer returned by SET_IRQ_TYPE NONE.
    await ok(b, Gpio.SET_IRQ_TYPE, 1, IrqType.EDGE_RISING);
    const pending = b.armIrq(1);
    await ok(b, Gpio.SET_IRQ_TYPE, 1, IrqType.NONE);
    assert.deepEqual(await pending, { status: INVALID, usedLen: 1 });
    // err: bad guest requests.
    for (let i = 0; i < BAD_REQUESTS / 2; i++) {
      assert.equal((await a.request(Gpio.GET_VALUE, 99)).status, ERR, 'line out of range');
      assert.equal((await a.request(0x7f, 0)).status, ERR, 'unknown request type');
    }
    // contention: two outputs disagreeing on a push-pull net.
    await client.wire({ name: 'obs-contend', members: [ref('vm-a', 2), ref('vm-b', 2)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
    await ok(a, Gpio.SET_VALUE, 2, 1);
    await ok(a, Gpio.SET_DIRECTION, 2, OUT);
    await ok(b, Gpio.SET_VALUE, 2, 0);
    await ok(b, Gpio.SET_DIRECTION, 2, OUT);
    // service errors: operators' mistakes.
    await assert.rejects(client.drive({ target: { $case: 'line', value: ref('no-such-chip', 0) }, value: DriveValue.HIGH }));
    await assert.rejects(client.getLine({ line: ref('vm-a', 999) }));
    // lease takeover: a chip registered with a short lease, never renewed, registered again by another owner.
    await client.registerChip({ chip: 'vm-lease', ngpio: 2, names: [], owner: 'obs-test-1', leaseTtlMs: 500 });
    await until('expired lease taken over', async () => {
      try {
        return (await client.registerChip({ chip: 'vm-lease', ngpio: 2, names: [], owner: 'obs-test-2', leaseTtlMs: 500 })).tookOver;
      } catch {
        return false; // still leased
      }
    }, 10_000, 100);

    // Every target scraped after the workload ended (+ the service's 1 s sample cache of store gauges).
    const ended = Date.now() / 1000 + 1.5;
    await until('every target scraped after the workload', async () => (await prom.value('min(timestamp(up))')) > ended, 20_000, 200);
  });

  after(async () => {
    await cleanup.run();
  });

  it('every panel query of every dashboard returns data, and not only NaN', async (t) => {
    const queries: PanelQuery[] = [];
    for (const name of ['overview.json', 'chip.json']) {
      const dash = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/dashboards', name), 'utf8')) as { title: string; panels: unknown[] };
      queries.push(...panelQueries(dash));
    }
    assert.ok(queries.length >= 30, 'the dashboards have their queries');
    const empty: string[] = [];
    const nanOnly: string[] = [];
    for (const q of queries) {
      const expr = substitute(q.expr, 'vm-b');
      const r = await prom.query(expr);
      const where = `${q.dashboard} / ${q.panel} / ${q.refId}: ${expr}`;
      if (r.length === 0) empty.push(where);
      // A quantile of a histogram with no observations in the window is NaN: data, but not what the workload made.
      else if (r.every((x) => Number.isNaN(Number(x.value[1])))) nanOnly.push(where);
    }
    t.diagnostic(`${queries.length} panel queries: ${empty.length} empty, ${nanOnly.length} NaN only`);
    assert.deepEqual(empty, [], `panel queries with no data (${empty.length} of ${queries.length})`);
    assert.deepEqual(nanOnly, [], 'panel queries whose every value is NaN (no observation since the workload started)');
  });

  it('the chip variable lists both chips', async () => {
    const values = await prom.get<string[]>('/api/v1/label/chip/values', { 'match[]': 'gpiofabric_agent_requests_total' });
    assert.ok(values.includes('vm-a') && values.includes('vm-b'), `chips: ${values.join(', ')}`);
  });

  it('the workload is what Prometheus saw', async () => {
    assert.equal(await prom.value('sum(up{job="gpiofabric-agent"})'), 2);
    assert.equal(await prom.value('sum(up{job="gpiofabric-linestate"})'), 2);
    assert.equal(await prom.value('sum(gpiofabric_agent_frontend_connected)'), 2);
    assert.ok((await prom.value('sum(gpiofabric_agent_interrupts_total{chip="vm-b", outcome="delivered"})')) >= TOGGLES + 1);
    assert.ok((await prom.value('sum(gpiofabric_agent_interrupts_total{chip="vm-b", outcome="latched"})')) >= 1);
    assert.ok((await prom.value('sum(gpiofabric_agent_interrupts_total{chip="vm-b", outcome="invalid"})')) >= 1);
    assert.ok((await prom.value('sum(gpiofabric_agent_requests_total{chip="vm-a", outcome="err"})')) >= BAD_REQUESTS);
    assert.ok((await prom.value('sum(gpiofabric_agent_requests_total{chip="vm-a", type="UNKNOWN"})')) >= BAD_REQUESTS / 2);
    const p50 = await prom.value('histogram_quantile(0.5, sum by (le) (gpiofabric_agent_irq_propagation_seconds_bucket{chip="vm-b"}))');
    assert.ok(Number.isFinite(p50) && p50 > 0, `propagation p50 ${p50}`);
    assert.ok((await prom.value('max(gpiofabric_linestate_chips{state="online"})')) >= 2);
    assert.ok((await prom.value('max(gpiofabric_linestate_chips{state="offline"})')) >= 0);
    assert.ok((await prom.value('max(gpiofabric_linestate_nets)')) >= 2);
    assert.ok((await prom.value('max(gpiofabric_linestate_contention_total)')) >= 1);
    assert.ok((await prom.value('sum(gpiofabric_linestate_lease_takeovers_total)')) >= 1);
    assert.ok((await prom.value('sum(gpiofabric_linestate_errors_total{cause="NOT_FOUND"})')) >= 1);
    assert.ok((await prom.value('sum(gpiofabric_linestate_event_streams{kind="agent"})')) >= 2);
    // The agents' line operations went over their OpStreams (one store call per batch), none as unary LineOp.
    assert.ok((await prom.value('sum(gpiofabric_linestate_stream_ops_total{code="OK"})')) >= 2 * TOGGLES, 'line operations answered on OpStream');
    const batches = await prom.value('sum(gpiofabric_linestate_store_duration_seconds_count{op="lineOps"})');
    assert.ok(batches >= 1 && batches <= (await prom.value('sum(gpiofabric_linestate_stream_ops_total)')), `lineOps store calls ${batches}`);
    assert.equal(await prom.value('sum(gpiofabric_linestate_rpcs_total{method="LineOp"})'), 0, 'no unary LineOp');
    assert.equal(await prom.value('sum(gpiofabric_linestate_store_duration_seconds_count{op="lineOp"})'), 0);
  });

  it('the rule groups are loaded and every rule evaluates cleanly', async () => {
    const expected = ['gpio-fabric.alerts', 'gpio-fabric.recording'];
    type Group = { name: string; rules: { name: string; health: string; lastError?: string; lastEvaluation: string }[] };
    const groups = await until('rules evaluated', async () => {
      const g = (await prom.get<{ groups: Group[] }>('/api/v1/rules')).groups;
      return g.length === expected.length && g.every((x) => x.rules.every((r) => !r.lastEvaluation.startsWith('0001-'))) ? g : undefined;
    }, 20_000, 200);
    assert.deepEqual(groups.map((g) => g.name).sort(), expected);
    for (const g of groups) {
      for (const r of g.rules) assert.equal(r.health, 'ok', `${g.name} / ${r.name}: ${r.lastError ?? ''}`);
    }
    // The recording rules produce series from the real fabric.
    assert.ok((await prom.query('gpiofabric:agent_request_errors:ratio_rate5m{chip="vm-a"}')).length === 1);
    const p99 = await prom.value('gpiofabric:agent_irq_propagation_seconds:p99_rate5m');
    assert.ok(Number.isFinite(p99) && p99 > 0, `recorded propagation p99 ${p99}`);
  });

  it('an alert goes pending on real data: vm-a\'s bad requests exceed the 5% error ratio', async () => {
    type Alert = { labels: Record<string, string>; state: string };
    const alert = await until('GpioFabricGuestRequestErrors pending for vm-a', async () => {
      const alerts = (await prom.get<{ alerts: Alert[] }>('/api/v1/alerts')).alerts;
      return alerts.find((x) => x.labels['alertname'] === 'GpioFabricGuestRequestErrors' && x.labels['chip'] === 'vm-a');
    }, 20_000, 200);
    assert.equal(alert.state, 'pending', 'for: 10m has not passed');
    const alerts = (await prom.get<{ alerts: Alert[] }>('/api/v1/alerts')).alerts;
    assert.deepEqual(alerts.filter((x) => x.labels['chip'] === 'vm-b' && x.labels['alertname'] === 'GpioFabricGuestRequestErrors'), [], 'vm-b had no bad requests');
    assert.deepEqual(alerts.filter((x) => /Down$/.test(x.labels['alertname'] ?? '')), [], 'nothing is down');
  });
});
