/**
 * Static checks of the container images and the compose file (no Docker engine here):
 * Dockerfile stages, users, COPY sources, ports vs. the commands' flags, that every module
 * the image's command imports is copied in; compose services, references, volumes,
 * mounted files, ports, and that every gpio-fabric flag exists (`--help`), and that the
 * Prometheus scrape targets are the compose services' metrics ports.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { ROOT, cliFlags, flagValue, flagsIn } from '../helm/cli-flags.ts';

interface Instr { readonly op: string; readonly args: string; readonly line: number }
interface Stage { readonly from: string; readonly name: string | undefined; readonly instrs: Instr[] }

/** Parse a Dockerfile into stages (comments, line continuations, parser directives). */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let l = lines[i]!;
    const start = i + 1;
    if (/^\s*(#|$)/.test(l)) continue;
    while (/\\\s*$/.test(l) && i + 1 < lines.length) {
      l = l.replace(/\\\s*$/, ' ');
      i++;
      if (!/^\s*#/.test(lines[i]!)) l += lines[i]!;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(l);
    assert.ok(m !== null, `line ${start}: not an instruction: ${l}`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(f !== null, `line ${start}: bad FROM`);
      stages.push({ from: f[1]!, name: f[2], instrs: [] });
      continue;
    }
    assert.ok(stages.length > 0, `line ${start}: ${op} before FROM`);
    assert.ok(['RUN', 'COPY', 'WORKDIR', 'ENV', 'USER', 'EXPOSE', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'VOLUME', 'ARG', 'LABEL'].includes(op), `line ${start}: unexpected ${op}`);
    stages.at(-1)!.instrs.push({ op, args, line: start });
  }
  return stages;
}
const execForm = (s: string): string[] => {
  const v = JSON.parse(s) as unknown;
  assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `not an exec-form array: ${s}`);
  return v as string[];
};
const portOf = (addr: string | undefined): number | undefined => (addr === undefined ? undefined : Number(addr.slice(addr.lastIndexOf(':') + 1)));

/** .dockerignore patterns (simple prefixes and names, as used here). */
const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
const ignored = (p: string): boolean => ignore.some((i) => (i.startsWith('*') ? p.endsWith(i.slice(1)) : p === i || p.startsWith(`${i}/`)));

/** Relative modules (static and dynamic imports) reachable from `entry`. */
function importClosure(entry: string, follow: (from: string, spec: string) => boolean = () => true): Set<string> {
  const seen = new Set<string>();
  const todo = [resolve(ROOT, entry)];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) {
      const spec = m[1]!;
      if (!follow(f, spec)) continue;
      const target = resolve(dirname(f), spec);
      assert.ok(existsSync(target), `${relative(ROOT, f)} imports missing ${spec}`);
      todo.push(target);
    }
  }
  return new Set([...seen].map((f) => relative(ROOT, f)));
}

function checkImage(file: string, opts: { entry: string; mainCommand: 'serve' | 'agent'; needsAddon: boolean }): void {
  const stages = parseDockerfile(readFileSync(join(ROOT, file), 'utf8'));
  assert.ok(stages.length >= 2, 'multi-stage');
  assert.equal(stages[0]!.from, 'node:20-bookworm');
  const final = stages.at(-1)!;
  assert.equal(final.from, 'node:20-bookworm-slim');
  const names = new Set(stages.map((s) => s.name).filter(Boolean));
  // non-root user in the final stage
  const users = final.instrs.filter((i) => i.op === 'USER');
  assert.ok(users.length > 0, 'final stage sets USER');
  const user = users.at(-1)!.args.split(':')[0]!;
  assert.ok(user !== 'root' && user !== '0', `final USER is ${user}`);
  // COPY sources: exist in the repository (and are in the build context), or come from a named stage
  const copied: string[] = [];
  for (const s of stages) {
    for (const i of s.instrs.filter((x) => x.op === 'COPY')) {
      const parts = i.args.split(/\s+/);
      const from = parts.find((p) => p.startsWith('--from='))?.slice('--from='.length);
      const paths = parts.filter((p) => !p.startsWith('--'));
      const srcs = paths.slice(0, -1);
      if (from !== undefined) {
        assert.ok(names.has(from), `line ${i.line}: COPY --from=${from}: no such stage`);
        continue;
      }
      for (const src of srcs) {
        assert.ok(existsSync(join(ROOT, src)), `line ${i.line}: COPY source ${src} does not exist`);
        assert.ok(!ignored(src), `line ${i.line}: COPY source ${src} is excluded by .dockerignore`);
        if (s === final) copied.push(src.replace(/\/$/, ''));
      }
    }
  }
  // npm ci needs the lockfile next to package.json
  const build = stages[0]!;
  const ci = build.instrs.find((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
  assert.ok(ci !== undefined, 'the build stage runs npm ci');
  assert.ok(build.instrs.some((i) => i.op === 'COPY' && i.args.includes('package-lock.json') && i.line < ci.line), 'package-lock.json is copied before npm ci');
  if (opts.needsAddon) {
    assert.doesNotMatch(ci.args, /--ignore-scripts/, 'npm ci must run the install script that builds the addon');
    assert.ok(build.instrs.some((i) => i.op === 'COPY' && i.args.includes('services/agent/native') && i.line < ci.line), 'the addon sources are in the build stage before npm ci');
    assert.ok(build.instrs.some((i) => i.op === 'COPY' && i.args.includes('scripts/build-addon.mjs')), 'scripts/build-addon.mjs is in the build stage');
    assert.ok(final.instrs.some((i) => i.op === 'COPY' && i.args.includes('--from=build') && i.args.includes('gpiofabric_native.node')), 'the built addon is copied into the runtime');
  }
  // ENTRYPOINT node bin/gpio-fabric.mjs; every module the command imports is in the image
  assert.deepEqual(execForm(final.instrs.find((i) => i.op === 'ENTRYPOINT')!.args), ['node', 'bin/gpio-fabric.mjs']);
  const inImage = (p: string): boolean => copied.some((c) => p === c || p.startsWith(`${c}/`));
  const needed = importClosure('services/cli/src/main.ts', (from, spec) => !from.endsWith('main.ts') || !spec.startsWith('./commands/'));
  for (const f of [...needed, ...importClosure(opts.entry)]) assert.ok(inImage(f), `${file}: ${f} is imported by "gpio-fabric ${opts.mainCommand}" but not copied into the image`);
  for (const f of ['bin/gpio-fabric.mjs', 'package.json']) assert.ok(inImage(f), `${f} in the image`);
  // the Lua scripts the Redis store reads at run time
  if (opts.mainCommand === 'serve') assert.ok(inImage('services/linestate/src/store/lua/lib.lua'));
  // EXPOSE = the ports of the default command's flags
  const exposed = final.instrs.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
  const cmd = final.instrs.find((i) => i.op === 'CMD');
  const cmdArgs = cmd === undefined ? [] : execForm(cmd.args);
  if (opts.mainCommand === 'serve') {
    assert.equal(cmdArgs[0], 'serve');
    for (const f of flagsIn(cmdArgs)) assert.ok(cliFlags('serve').has(f), `CMD flag ${f}`);
    assert.deepEqual(exposed.sort(), [portOf(flagValue(cmdArgs, '--listen')), portOf(flagValue(cmdArgs, '--metrics'))].sort());
    const hc = final.instrs.find((i) => i.op === 'HEALTHCHECK');
    assert.ok(hc !== undefined, 'the service image has a HEALTHCHECK');
    assert.ok(hc.args.includes(`127.0.0.1:${portOf(flagValue(cmdArgs, '--metrics'))}/healthz`), 'HEALTHCHECK asks /healthz on the metrics port');
  } else {
    assert.deepEqual(exposed, [9464]);
  }
}

describe('Dockerfiles', () => {
  it('Dockerfile.linestate', () => checkImage('deploy/docker/Dockerfile.linestate', { entry: 'services/cli/src/commands/serve.ts', mainCommand: 'serve', needsAddon: false }));
  it('Dockerfile.agent', () => checkImage('deploy/docker/Dockerfile.agent', { entry: 'services/cli/src/commands/agent.ts', mainCommand: 'agent', needsAddon: true }));
});

describe('compose.yaml', () => {
  const deployDir = join(ROOT, 'deploy');
  type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const compose = parseYaml(readFileSync(join(deployDir, 'compose.yaml'), 'utf8'), { merge: true }) as Obj;
  const services = compose.services as Record<string, Obj>;
  const ours = Object.entries(services).filter(([, s]) => /^gpio-fabric\//.test(s.image ?? ''));

  it('has Redis, two line-state replicas, agents, Prometheus and Grafana', () => {
    const cmds = ours.map(([, s]) => (s.command as string[])[0]);
    assert.equal(cmds.filter((c) => c === 'serve').length, 2);
    assert.ok(cmds.filter((c) => c === 'agent').length >= 1);
    for (const n of ['redis', 'prometheus', 'grafana']) assert.ok(services[n], n);
  });
  it('builds point at existing Dockerfiles inside the context', () => {
    for (const [n, s] of ours) {
      const ctx = resolve(deployDir, s.build.context);
      assert.ok(existsSync(join(ctx, s.build.dockerfile)), `${n}: ${s.build.dockerfile}`);
      assert.equal(ctx, resolve(ROOT), `${n}: the build context is the repository root`);
    }
  });
  it('depends_on and volumes reference what exists; mounted files exist', () => {
    const named = new Set(Object.keys(compose.volumes ?? {}));
    for (const [n, s] of Object.entries(services)) {
      for (const d of (Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {})) as string[]) assert.ok(services[d], `${n} depends on missing ${d}`);
      for (const [d, c] of Object.entries(Array.isArray(s.depends_on) ? {} : (s.depends_on ?? {})) as [string, Obj][]) {
        if (c.condition === 'service_healthy') assert.ok(services[d]!.healthcheck || /gpio-fabric\/linestate/.test(services[d]!.image), `${n} waits for ${d} to be healthy, which has no healthcheck`);
      }
      for (const v of s.volumes ?? []) {
        if (typeof v === 'string') {
          const [src] = v.split(':') as [string];
          if (src.startsWith('.') || src.startsWith('/')) assert.ok(existsSync(resolve(deployDir, src)), `${n}: mounted ${src} does not exist`);
          else assert.ok(named.has(src), `${n}: volume ${src} is not declared`);
        } else if (v.type === 'bind') {
          assert.match(v.source, /^\$\{GPIOFABRIC_SOCKET_DIR:-\/[^}]+\}$/, `${n}: the socket dir is an absolute host path`);
          assert.equal(v.bind?.create_host_path, true);
        }
      }
    }
  });
  it('gpio-fabric commands use only flags the CLI accepts, agents dial a replica\'s listen port, socket paths are in the shared volume', () => {
    const listen = new Map<string, number>();
    for (const [n, s] of ours) {
      const args = s.command as string[];
      for (const f of flagsIn(args)) assert.ok(cliFlags(args[0]!).has(f), `${n}: "gpio-fabric ${args[0]}" has no flag ${f}`);
      if (args[0] === 'serve') {
        listen.set(n, portOf(flagValue(args, '--listen'))!);
        assert.equal(flagValue(args, '--redis'), 'redis://redis:6379');
        for (const p of s.ports ?? []) assert.equal(Number(String(p).split(':').at(-1)), listen.get(n), `${n}: published port is the listen port`);
      }
    }
    const sockets = new Set<string>();
    for (const [n, s] of ours) {
      const args = s.command as string[];
      if (args[0] !== 'agent') continue;
      const [host, port] = flagValue(args, '--server')!.split(':') as [string, string];
      assert.equal(listen.get(host), Number(port), `${n}: --server ${host}:${port} is not a line-state replica`);
      const sock = flagValue(args, '--socket')!;
      const target = (s.volumes as Obj[]).find((v) => typeof v === 'object' && v.type === 'bind')!.target;
      assert.equal(dirname(sock), target, `${n}: socket outside the shared directory`);
      assert.ok(!sockets.has(sock), `${n}: socket ${sock} used twice`);
      sockets.add(sock);
      assert.equal(s.user, '0:0', `${n}: runs as root to create sockets in the host directory (docs/deploy.md)`);
    }
  });
  it('Prometheus scrapes the compose services at their --metrics ports; Grafana reads its provisioning', () => {
    const prom = parseYaml(readFileSync(join(deployDir, 'prometheus', 'prometheus.yml'), 'utf8')) as Obj;
    const metricsPort = new Map<string, number>();
    const aliases = new Map<string, string[]>();
    for (const [n, s] of ours) {
      metricsPort.set(n, portOf(flagValue(s.command, '--metrics'))!);
      for (const a of s.networks?.default?.aliases ?? []) aliases.set(a, [...(aliases.get(a) ?? []), n]);
    }
    let targets = 0;
    for (const job of prom.scrape_configs as Obj[]) {
      for (const sc of job.static_configs ?? []) {
        for (const t of sc.targets as string[]) {
          const [host, port] = t.split(':') as [string, string];
          assert.equal(metricsPort.get(host), Number(port), `${job.job_name}: target ${t} is not a compose service's metrics port`);
          targets++;
        }
      }
      for (const sd of job.dns_sd_configs ?? []) {
        for (const name of sd.names as string[]) {
          const members = aliases.get(name) ?? (services[name] ? [name] : []);
          assert.ok(members.length > 0, `${job.job_name}: DNS name ${name} matches no compose service`);
          for (const m of members) assert.equal(metricsPort.get(m), sd.port, `${job.job_name}: ${m} serves metrics on ${metricsPort.get(m)}, not ${sd.port}`);
          targets += members.length;
        }
      }
    }
    assert.ok(targets >= 4, 'both replicas and the agents are scraped');
    for (const rf of prom.rule_files ?? []) {
      const mounted = (services.prometheus!.volumes as string[]).some((v) => v.split(':')[1] === `/etc/prometheus/${dirname(rf)}`);
      assert.ok(mounted, `rule file ${rf} is mounted`);
    }
    const ds = parseYaml(readFileSync(join(deployDir, 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')) as Obj;
    const url = new URL(ds.datasources[0].url);
    assert.ok(services[url.hostname], `Grafana's data source ${url.hostname} is a compose service`);
    const prov = parseYaml(readFileSync(join(deployDir, 'grafana', 'provisioning', 'dashboards', 'gpio-fabric.yml'), 'utf8')) as Obj;
    const dashPath = prov.providers[0].options.path as string;
    assert.ok((services.grafana!.volumes as string[]).some((v) => v.split(':')[1] === dashPath && statSync(resolve(deployDir, v.split(':')[0]!)).isDirectory()), `dashboards are mounted at ${dashPath}`);
  });
});
