/**
 * The Helm chart (helm/gpio-fabric), rendered offline by scripts/helm-render.ts for every
 * ci/*-values.yaml: each manifest is validated against the Kubernetes schemas
 * (kubernetes-models), cross-references are checked (selectors, volumes, ports, CLI
 * flags, secrets), and bad values must fail the render with a clear message.
 * `helm lint` / `helm template` run only when a helm binary is on PATH (see the end).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import { renderChart, SchemaError, TemplateError } from '../../scripts/helm-render.ts';
import type { RenderOptions } from '../../scripts/helm-render.ts';
import { ROOT, cliFlags, flagValue, flagsIn } from './cli-flags.ts';

const CHART = join(ROOT, 'helm', 'gpio-fabric');
const CI = join(CHART, 'ci');
const ciFiles = readdirSync(CI).filter((f) => f.endsWith('-values.yaml')).sort();

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function manifests(opts: Partial<RenderOptions> = {}): Obj[] {
  const r = renderChart({ chartDir: CHART, releaseName: 'gf', namespace: 'fabric', ...opts });
  return r.docs.map((d) => {
    const o = parseYaml(d.text) as Obj;
    assert.ok(o !== null && typeof o === 'object', `${d.source} is not a YAML mapping`);
    return o;
  });
}
const byKind = (ms: Obj[], kind: string): Obj[] => ms.filter((m) => m.kind === kind);
const podSpecOf = (m: Obj): Obj | undefined => m.spec?.template?.spec;
const matches = (selector: Obj, labels: Obj | undefined): boolean =>
  labels !== undefined && Object.entries(selector).every(([k, v]) => labels[k] === v);

const VALIDATORS: Record<string, (o: Obj) => void> = {
  Deployment: (o) => new Deployment(o as never).validate(),
  DaemonSet: (o) => new DaemonSet(o as never).validate(),
  StatefulSet: (o) => new StatefulSet(o as never).validate(),
  Service: (o) => new Service(o as never).validate(),
  ConfigMap: (o) => new ConfigMap(o as never).validate(),
  PodDisruptionBudget: (o) => new PodDisruptionBudget(o as never).validate(),
  ServiceMonitor: (o) => checkMonitor(o, 'endpoints'),
  PodMonitor: (o) => checkMonitor(o, 'podMetricsEndpoints'),
};
/** monitoring.coreos.com/v1 has no model in kubernetes-models: the fields the operator needs, checked by hand. */
function checkMonitor(o: Obj, listKey: string): void {
  assert.equal(o.apiVersion, 'monitoring.coreos.com/v1');
  assert.match(o.metadata?.name ?? '', /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  assert.ok(o.spec?.selector?.matchLabels && Object.keys(o.spec.selector.matchLabels).length > 0, `${o.kind} needs spec.selector.matchLabels`);
  assert.ok(Array.isArray(o.spec[listKey]) && o.spec[listKey].length > 0, `${o.kind} needs spec.${listKey}`);
  for (const ep of o.spec[listKey]) {
    assert.equal(typeof ep.port, 'string', `${o.kind} endpoint port must be a port name`);
    assert.match(ep.interval, /^[0-9]+(ms|s|m|h)$/);
    assert.equal(ep.path, '/metrics');
  }
  const extra = Object.keys(o.spec).filter((k) => !['selector', 'namespaceSelector', listKey, 'jobLabel'].includes(k));
  assert.deepEqual(extra, [], `${o.kind} has unknown spec fields`);
}

/** Every check that must hold for any values. */
function checkAll(ms: Obj[], name: string): void {
  const seen = new Set<string>();
  for (const m of ms) {
    const id = `${m.kind}/${m.metadata?.name}`;
    assert.ok(!seen.has(id), `${name}: ${id} rendered twice`);
    seen.add(id);
    const v = VALIDATORS[m.kind];
    assert.ok(v !== undefined, `${name}: unexpected kind ${m.kind}`);
    try {
      v(m);
    } catch (e) {
      assert.fail(`${name}: ${id} is not a valid ${m.apiVersion} ${m.kind}: ${e instanceof Error ? e.message : String(e)}`);
    }
    assert.equal(m.metadata.namespace, 'fabric', `${id} namespace`);
    assert.equal(m.metadata.labels?.['app.kubernetes.io/instance'], 'gf', `${id} instance label`);
  }
  const workloads = ms.filter((m) => ['Deployment', 'DaemonSet', 'StatefulSet'].includes(m.kind));
  for (const w of workloads) {
    const pod = podSpecOf(w)!;
    assert.ok(matches(w.spec.selector.matchLabels, w.spec.template.metadata.labels), `${w.kind} ${w.metadata.name}: selector does not select its pods`);
    const volumes = new Set<string>([...(pod.volumes ?? []).map((v: Obj) => v.name), ...(w.spec.volumeClaimTemplates ?? []).map((c: Obj) => c.metadata.name)]);
    for (const c of pod.containers as Obj[]) {
      for (const vm of c.volumeMounts ?? []) assert.ok(volumes.has(vm.name), `${w.metadata.name}/${c.name}: mount of missing volume ${vm.name}`);
      const portNames = new Set((c.ports ?? []).map((p: Obj) => p.name));
      const portNums = new Set((c.ports ?? []).map((p: Obj) => p.containerPort));
      for (const probe of [c.readinessProbe, c.livenessProbe].filter(Boolean)) {
        const port = probe.grpc?.port ?? probe.httpGet?.port ?? probe.tcpSocket?.port;
        if (port === undefined) continue;
        assert.ok(typeof port === 'string' ? portNames.has(port) : portNums.has(port), `${c.name}: probe port ${port} is not a container port`);
      }
      for (const env of c.env ?? []) {
        if (env.value === undefined) continue;
        assert.doesNotMatch(String(env.value), /:[^$/@]+@/, `${c.name}: env ${env.name} carries credentials in plain text`);
      }
      for (const a of [...(c.args ?? []), ...(c.command ?? [])]) assert.doesNotMatch(String(a), /requirepass [^"$]|PASSWORD\)@|:\/\/[^/]*:[^/]*@/, `${c.name}: a password in the command line`);
    }
    // every volume is used by some container
    const used = new Set((pod.containers as Obj[]).flatMap((c) => (c.volumeMounts ?? []).map((v: Obj) => v.name)));
    for (const v of volumes) assert.ok(used.has(v), `${w.metadata.name}: volume ${v} is never mounted`);
  }
  const pods = workloads.map((w) => ({ w, labels: w.spec.template.metadata.labels as Obj, containers: podSpecOf(w)!.containers as Obj[] }));
  for (const s of byKind(ms, 'Service')) {
    const target = pods.filter((p) => matches(s.spec.selector, p.labels));
    assert.equal(target.length, 1, `Service ${s.metadata.name} must select exactly one workload's pods`);
    const names = new Set(target[0]!.containers.flatMap((c) => (c.ports ?? []).map((p: Obj) => p.name)));
    for (const p of s.spec.ports) assert.ok(names.has(p.targetPort), `Service ${s.metadata.name}: targetPort ${p.targetPort} is not a container port`);
  }
  for (const pdb of byKind(ms, 'PodDisruptionBudget')) {
    assert.equal(pods.filter((p) => matches(pdb.spec.selector.matchLabels, p.labels)).length, 1, 'PDB selects the line-state pods');
  }
  for (const sm of byKind(ms, 'ServiceMonitor')) {
    const svc = byKind(ms, 'Service').filter((s) => matches(sm.spec.selector.matchLabels, s.metadata.labels));
    assert.equal(svc.length, 1, 'ServiceMonitor selects the line-state Service by its labels');
    for (const ep of sm.spec.endpoints) assert.ok(svc[0]!.spec.ports.some((p: Obj) => p.name === ep.port), `ServiceMonitor port ${ep.port} not on the Service`);
  }
  for (const pm of byKind(ms, 'PodMonitor')) {
    const target = pods.filter((p) => matches(pm.spec.selector.matchLabels, p.labels));
    assert.equal(target.length, 1, 'PodMonitor selects the agent pods');
    const names = new Set(target[0]!.containers.flatMap((c) => (c.ports ?? []).map((p: Obj) => p.name)));
    for (const ep of pm.spec.podMetricsEndpoints) assert.ok(names.has(ep.port), `PodMonitor port ${ep.port} is not an agent container port`);
  }
  // CLI arguments of our images are flags the CLI accepts
  for (const p of pods) {
    for (const c of p.containers) {
      if (!/gpio-fabric\/(linestate|agent)/.test(c.image)) continue;
      const args = c.args as string[];
      const cmd = args[0]!;
      assert.ok(cmd === 'serve' || cmd === 'agent', `${c.name}: runs ${cmd}`);
      const known = cliFlags(cmd);
      for (const f of flagsIn(args)) assert.ok(known.has(f), `${c.name}: "gpio-fabric ${cmd}" has no flag ${f} (gpio-fabric ${cmd} --help)`);
    }
  }
}

describe('chart renders valid, consistent manifests for every ci values file', () => {
  for (const f of ciFiles) {
    it(f, () => {
      const ms = manifests({ valuesFiles: [join(CI, f)] });
      assert.ok(ms.length > 0);
      checkAll(ms, f);
    });
    it(`${f} on Kubernetes 1.23 (HTTP probes)`, () => checkAll(manifests({ valuesFiles: [join(CI, f)], kubeVersion: 'v1.23.0' }), f));
  }
});

describe('chart behaviour', () => {
  const linestate = (ms: Obj[]): Obj => byKind(ms, 'Deployment')[0]!.spec.template.spec.containers[0];
  const envOf = (c: Obj): Record<string, Obj> => Object.fromEntries((c.env ?? []).map((e: Obj) => [e.name, e]));

  it('defaults: two replicas on the bundled Redis with a PVC, gRPC probes, PDB, dashboards, no agents', () => {
    const ms = manifests();
    assert.deepEqual(ms.map((m) => m.kind).sort(), ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service', 'Service', 'StatefulSet'].filter((k) => k !== 'ConfigMap' || dashboardFiles().length > 0));
    const d = byKind(ms, 'Deployment')[0]!;
    assert.equal(d.spec.replicas, 2);
    const c = linestate(ms);
    assert.deepEqual(c.args, ['serve', '--listen', '0.0.0.0:7070', '--metrics', '0.0.0.0:9464', '--fabric', 'default']);
    assert.deepEqual(c.readinessProbe.grpc, { port: 7070 });
    assert.equal(envOf(c).GPIOFABRIC_REDIS?.value, 'redis://gf-gpio-fabric-redis:6379');
    const sts = byKind(ms, 'StatefulSet')[0]!;
    assert.equal(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage, '1Gi');
    assert.equal(byKind(ms, 'Service').find((s) => s.metadata.name === 'gf-gpio-fabric-redis')?.spec.clusterIP, 'None');
  });
  it('Kubernetes < 1.24 gets httpGet /healthz on the metrics port; probes.type forces either', () => {
    assert.deepEqual(linestate(manifests({ kubeVersion: 'v1.23.9' })).readinessProbe.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(linestate(manifests({ set: ['linestate.probes.type=http'] })).livenessProbe.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(linestate(manifests({ kubeVersion: 'v1.23.0', set: ['linestate.probes.type=grpc'] })).readinessProbe.grpc, { port: 7070 });
  });
  it('external Redis with Sentinel: the password comes from the Secret through env, never in args', () => {
    const ms = manifests({ valuesFiles: [join(CI, 'external-sentinel-values.yaml')] });
    assert.equal(byKind(ms, 'StatefulSet').length, 0, 'no bundled Redis');
    const c = linestate(ms);
    const env = envOf(c);
    assert.deepEqual(env.REDIS_PASSWORD?.valueFrom, { secretKeyRef: { name: 'redis-credentials', key: 'password' } });
    assert.equal(env.GPIOFABRIC_REDIS?.value, 'redis://gpio:$(REDIS_PASSWORD)@mymaster:6379/0');
    const names = (c.env as Obj[]).map((e) => e.name);
    assert.ok(names.indexOf('REDIS_PASSWORD') < names.indexOf('GPIOFABRIC_REDIS'), '$(REDIS_PASSWORD) must be defined before it is referenced');
    assert.equal(env.GPIOFABRIC_REDIS_SENTINELS?.value, 'sentinel-0.sentinel:26379,sentinel-1.sentinel:26379,sentinel-2.sentinel:26379');
    assert.equal(env.GPIOFABRIC_REDIS_SENTINEL_NAME?.value, 'mymaster');
    assert.deepEqual(flagValue(c.args, '--fabric'), 'plant-a');
    assert.equal(flagValue(c.args, '--lease-ttl'), '15000');
    assert.equal(byKind(ms, 'Deployment')[0]!.spec.replicas, 3);
  });
  it('bundled Redis without persistence and with a password: emptyDir, password via env and a config file', () => {
    const ms = manifests({ valuesFiles: [join(CI, 'bundled-no-persistence-values.yaml')] });
    const sts = byKind(ms, 'StatefulSet')[0]!;
    assert.equal(sts.spec.volumeClaimTemplates, undefined);
    assert.deepEqual(sts.spec.template.spec.volumes.find((v: Obj) => v.name === 'data'), { name: 'data', emptyDir: {} });
    const redis = sts.spec.template.spec.containers[0];
    assert.deepEqual(envOf(redis).REDIS_PASSWORD?.valueFrom, { secretKeyRef: { name: 'gpio-redis-auth', key: 'password' } });
    assert.deepEqual(envOf(redis).REDISCLI_AUTH?.valueFrom, { secretKeyRef: { name: 'gpio-redis-auth', key: 'password' } });
    assert.match(redis.command.join(' '), /"\$REDIS_PASSWORD" > \/tmp\/auth.conf && exec redis-server \/tmp\/auth.conf/);
    assert.equal(envOf(linestate(ms)).GPIOFABRIC_REDIS?.value, 'redis://:$(REDIS_PASSWORD)@gf-gpio-fabric-redis:6379');
    assert.equal(byKind(ms, 'PodDisruptionBudget').length, 0);
    assert.deepEqual(linestate(ms).readinessProbe.httpGet, { path: '/healthz', port: 'metrics' });
  });
  it('monitoring: ServiceMonitor and PodMonitor with their labels only when enabled', () => {
    const on = manifests({ valuesFiles: [join(CI, 'monitoring-values.yaml')] });
    assert.equal(byKind(on, 'ServiceMonitor')[0]?.metadata.labels.release, 'kube-prometheus-stack');
    // The dashboards and alerts match targets by job name: job="linestate" / job="agent".
    assert.equal(byKind(on, 'ServiceMonitor')[0]?.spec.jobLabel, 'app.kubernetes.io/component');
    assert.deepEqual(byKind(on, 'PodMonitor')[0]?.spec.podMetricsEndpoints.map((e: Obj) => e.port), ['metrics-0']);
    const off = manifests();
    assert.equal(byKind(off, 'ServiceMonitor').length + byKind(off, 'PodMonitor').length, 0);
  });
  it('several agents: one container per VM, the host socket dir shared, node-prefixed chip ids, scheduling', () => {
    const ms = manifests({ valuesFiles: [join(CI, 'agents-values.yaml')] });
    const ds = byKind(ms, 'DaemonSet')[0]!;
    const pod = ds.spec.template.spec;
    assert.deepEqual(pod.volumes.find((v: Obj) => v.name === 'sockets'), { name: 'sockets', hostPath: { path: '/var/lib/gpio-fabric/sockets', type: 'DirectoryOrCreate' } });
    const cs = pod.containers as Obj[];
    assert.deepEqual(cs.map((c) => flagValue(c.args, '--chip')), ['$(NODE_NAME)-vm-a', '$(NODE_NAME)-vm_b.test', '$(NODE_NAME)-vm-c']);
    assert.deepEqual(cs.map((c) => flagValue(c.args, '--socket')), ['/var/lib/gpio-fabric/sockets/vm-a.sock', '/var/lib/gpio-fabric/sockets/vm_b.test.sock', '/var/lib/gpio-fabric/sockets/c.sock']);
    assert.deepEqual(cs.map((c) => flagValue(c.args, '--lines')), ['8', '32', '1024']);
    assert.equal(flagValue(cs[0]!.args, '--names'), 'led0,btn0,,reset');
    assert.equal(flagValue(cs[1]!.args, '--names'), undefined);
    assert.deepEqual(cs.map((c) => flagValue(c.args, '--metrics')), ['0.0.0.0:9470', '0.0.0.0:9471', '0.0.0.0:9472']);
    for (const c of cs) {
      assert.equal(flagValue(c.args, '--server'), 'gf-gpio-fabric.fabric.svc:7070');
      assert.deepEqual(c.volumeMounts.find((m: Obj) => m.name === 'sockets'), { name: 'sockets', mountPath: '/var/lib/gpio-fabric/sockets' });
      assert.deepEqual(envOf(c).NODE_NAME?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
      assert.equal(c.image, 'registry.example:5000/gpio-fabric/agent:0.1.0');
    }
    assert.deepEqual(pod.nodeSelector, { 'gpio-fabric/vm-host': 'true' });
    assert.equal(pod.tolerations[0].key, 'dedicated');
    assert.ok(pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution);
    assert.deepEqual([pod.securityContext.runAsUser, pod.securityContext.runAsGroup], [64055, 64055]);
    assert.deepEqual(pod.imagePullSecrets, [{ name: 'regcred' }]);
    // the Service the agents dial exists and serves the gRPC port
    const svc = byKind(ms, 'Service').find((s) => s.metadata.name === 'gf-gpio-fabric');
    assert.ok(svc?.spec.ports.some((p: Obj) => p.port === 7070 && p.name === 'grpc'));
  });
  it('TLS: the existing Secret is mounted read-only into the service and every agent', () => {
    const ms = manifests({ valuesFiles: [join(CI, 'tls-values.yaml')] });
    for (const w of [...byKind(ms, 'Deployment'), ...byKind(ms, 'DaemonSet')]) {
      const pod = w.spec.template.spec;
      assert.deepEqual(pod.volumes.find((v: Obj) => v.name === 'tls'), { name: 'tls', secret: { secretName: 'gpio-fabric-tls' } });
      for (const c of pod.containers) assert.deepEqual(c.volumeMounts.find((m: Obj) => m.name === 'tls'), { name: 'tls', mountPath: '/etc/gpio-fabric/tls', readOnly: true });
    }
    // every container points GPIOFABRIC_TLS_* at the mounted files (serve: server cert +
    // client CA = mTLS; agents: client cert + CA), and the probes use HTTP (no TLS in the kubelet's gRPC probe)
    for (const w of [...byKind(ms, 'Deployment'), ...byKind(ms, 'DaemonSet')]) {
      for (const c of w.spec.template.spec.containers) {
        const env = envOf(c);
        assert.deepEqual([env.GPIOFABRIC_TLS_CERT?.value, env.GPIOFABRIC_TLS_KEY?.value, env.GPIOFABRIC_TLS_CA?.value], ['/etc/gpio-fabric/tls/tls.crt', '/etc/gpio-fabric/tls/tls.key', '/etc/gpio-fabric/tls/ca.crt']);
      }
    }
    assert.deepEqual(linestate(ms).readinessProbe.httpGet, { path: '/healthz', port: 'metrics' });
    assert.equal(linestate(ms).livenessProbe.grpc, undefined);
    // a separate Secret for the agents' client certificate
    const split = manifests({ valuesFiles: [join(CI, 'tls-values.yaml')], set: ['tls.agentSecret=agents-tls'] });
    assert.equal(byKind(split, 'DaemonSet')[0]?.spec.template.spec.volumes.find((v: Obj) => v.name === 'tls')?.secret.secretName, 'agents-tls');
    assert.equal(byKind(split, 'Deployment')[0]?.spec.template.spec.volumes.find((v: Obj) => v.name === 'tls')?.secret.secretName, 'gpio-fabric-tls');
    // without TLS: no TLS env
    assert.equal(envOf(linestate(manifests())).GPIOFABRIC_TLS_CERT, undefined);
    // memory store: no Redis, no --fabric (serve rejects --fabric without Redis)
    assert.equal(byKind(ms, 'StatefulSet').length, 0);
    assert.equal(flagValue(linestate(ms).args, '--fabric'), undefined);
    assert.equal(envOf(linestate(ms)).GPIOFABRIC_REDIS, undefined);
  });
  it('dashboards ConfigMap: grafana_dashboard label and every dashboards/*.json verbatim', () => {
    const files = dashboardFiles();
    const cms = byKind(manifests(), 'ConfigMap');
    if (files.length === 0) {
      assert.equal(cms.length, 0, 'no dashboards, no ConfigMap');
      return;
    }
    assert.equal(cms.length, 1);
    assert.equal(cms[0]!.metadata.labels.grafana_dashboard, '1');
    assert.deepEqual(Object.keys(cms[0]!.data).sort(), files.map((f) => basename(f)).sort());
    for (const f of files) assert.equal(cms[0]!.data[basename(f)], readFileSync(f, 'utf8'), `${f} differs in the ConfigMap`);
    assert.equal(byKind(manifests({ set: ['dashboards.enabled=false'] }), 'ConfigMap').length, 0);
  });
  it('every GPIOFABRIC_* variable the chart sets is read by the code (services/)', () => {
    const ms = [...ciFiles.flatMap((f) => manifests({ valuesFiles: [join(CI, f)] }))];
    const names = new Set(ms.flatMap((m) => (podSpecOf(m)?.containers ?? []).flatMap((c: Obj) => (c.env ?? []).map((e: Obj) => e.name as string))).filter((n) => n.startsWith('GPIOFABRIC_')));
    const src = execFileSync('grep', ['-rhoE', 'GPIOFABRIC_[A-Z_]+', join(ROOT, 'services')], { encoding: 'utf8' });
    const read = new Set(src.split('\n'));
    const unread = [...names].filter((n) => !read.has(n));
    assert.deepEqual(unread, [], `the chart sets ${unread.join(', ')} but nothing in services/ reads it (Sentinel support in "serve" is still missing: docs/deploy.md)`);
  });
});

function dashboardFiles(): string[] {
  const dir = join(CHART, 'dashboards');
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => join(dir, f));
  } catch {
    return [];
  }
}

describe('bad values fail the render with a clear message', () => {
  const fails = (opts: Partial<RenderOptions>, kind: typeof SchemaError | typeof TemplateError, re: RegExp): void => {
    assert.throws(() => manifests(opts), (e: unknown) => {
      assert.ok(e instanceof kind, `expected a ${kind.name}, got ${String(e)}`);
      assert.match((e as Error).message, re);
      return true;
    });
  };
  it('external Redis without a URL', () => fails({ set: ['redis.mode=external'] }, TemplateError, /redis\.external\.url is required when redis\.mode is external/));
  it('a password inside the Redis URL', () => fails({ set: ['redis.mode=external,redis.external.url=redis://:secret@r:6379'] }, SchemaError, /redis\.external\.url: Does not match pattern/));
  it('a relative socket directory', () => fails({ set: ['agent.socketDir=run/gpio'] }, SchemaError, /agent\.socketDir: Does not match pattern/));
  it('a socket directory with ..', () => fails({ set: ['agent.socketDir=/run/../etc'] }, SchemaError, /agent\.socketDir: Does not match pattern/));
  it('replicas < 1', () => fails({ set: ['linestate.replicas=0'] }, SchemaError, /linestate\.replicas: Must be greater than or equal to 1/));
  it('an unknown store', () => fails({ set: ['linestate.store=etcd'] }, SchemaError, /linestate\.store: must be one of the following: "redis", "memory"/));
  it('the memory store with more than one replica', () => fails({ set: ['linestate.store=memory,linestate.replicas=2'] }, TemplateError, /linestate\.store memory keeps the state inside one process: it needs linestate\.replicas 1, not 2/));
  it('Sentinel without addresses', () => fails({ set: ['redis.mode=external,redis.external.url=redis://m:6379,redis.external.sentinel.enabled=true'] }, SchemaError, /redis\.external\.sentinel\.addresses: Array must have at least 1 items/));
  it('a VM with too many lines, a bad chip id, a socket path instead of a name', () => {
    fails({ values: [{ agent: { vms: [{ chip: 'vm-a', lines: 2000 }] } }] }, SchemaError, /agent\.vms\[0\]\.lines: Must be less than or equal to 1024/);
    fails({ values: [{ agent: { vms: [{ chip: 'vm a', lines: 2 }] } }] }, SchemaError, /agent\.vms\[0\]\.chip: Does not match pattern/);
    fails({ values: [{ agent: { vms: [{ chip: 'vm-a', lines: 2, socket: '/x/y.sock' }] } }] }, SchemaError, /agent\.vms\[0\]\.socket: Does not match pattern/);
  });
  it('two VMs with one chip id or one socket, more names than lines', () => {
    fails({ values: [{ agent: { vms: [{ chip: 'vm-a', lines: 2 }, { chip: 'vm-a', lines: 2 }] } }] }, TemplateError, /chip vm-a is listed twice/);
    fails({ values: [{ agent: { vms: [{ chip: 'a', lines: 2, socket: 's' }, { chip: 'b', lines: 2, socket: 's' }] } }] }, TemplateError, /socket s is used by two VMs/);
    fails({ values: [{ agent: { vms: [{ chip: 'a', lines: 1, names: ['x', 'y'] }] } }] }, TemplateError, /chip a\): 2 names for 1 lines/);
  });
  it('TLS enabled without a Secret; unknown keys', () => {
    fails({ set: ['tls.enabled=true'] }, SchemaError, /tls\.existingSecret: String length must be greater than or equal to 1/);
    fails({ set: ['linestate.replica=2'] }, SchemaError, /linestate: Additional property replica is not allowed/);
  });
});

// `helm lint` and `helm template` need a helm binary. Where there is none (this project's
// development machines), these checks are NOT run: no test is registered for them and the
// reason is printed, so they are never counted as passed.
const helm = spawnSync('sh', ['-c', 'command -v helm'], { encoding: 'utf8' }).stdout.trim();
if (helm !== '') {
  describe('helm binary', () => {
    it('helm lint --strict passes for every ci values file', () => {
      for (const f of ciFiles) execFileSync(helm, ['lint', '--strict', CHART, '-f', join(CI, f)], { stdio: 'pipe' });
    });
    it('helm template renders the same objects as the offline renderer', () => {
      for (const f of ciFiles) {
        const out = execFileSync(helm, ['template', 'gf', CHART, '-n', 'fabric', '-f', join(CI, f)], { encoding: 'utf8' });
        const theirs = out.split(/^---$/m).map((d) => parseYaml(d)).filter((d) => d !== null);
        assert.deepEqual(theirs, manifests({ valuesFiles: [join(CI, f)] }), f);
      }
    });
  });
} else {
  process.stderr.write('[test/helm] NOT RUN: helm lint / helm template (no helm binary on PATH); the chart was checked with scripts/helm-render.ts only\n');
}
