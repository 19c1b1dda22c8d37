/**
 * Real processes over mTLS: `serve` with TLS flags, an agent process with its certificate
 * serving a frontend (test/support/frontend.ts) end to end, an agent whose certificate
 * names another chip, and the certs command's files.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Frontend, Gpio } from '../support/frontend.ts';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { BIN, clientFiles, makeCerts, opensslSan, serverFiles, startProc, tlsArgs, type FabricProc } from './support.ts';

let dir = '';
const procs: FabricProc[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'gf-sec-'));

/** Run the CLI to completion; exit code and both outputs. */
const runCli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string }> => new Promise((resolve) => {
  execFile(process.execPath, [BIN, ...args], { timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
    resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: `${stdout}${stderr}` });
  });
});

before(async () => {
  dir = await makeCerts(['--agent', 'vm-a', '--operator', 'alice', '--watcher', 'bob', '--agent', 'node1-*', '--days', '30']);
});
after(async () => {
  for (const p of procs.reverse()) await p.kill();
  rmSync(tmp, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});

describe('gpio-fabric certs', () => {
  it('writes the CA, server and client certificates with keys 0600 and the identity SANs', () => {
    for (const f of ['ca', 'server', 'agent-vm-a', 'agent-node1-all', 'operator-alice', 'watcher-bob']) {
      assert.equal(statSync(join(dir, `${f}.key`)).mode & 0o777, 0o600, f);
      assert.ok(statSync(join(dir, `${f}.crt`)).size > 0);
    }
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.match(opensslSan(join(dir, 'server.crt')), /DNS:localhost, IP Address:127\.0\.0\.1/);
    assert.match(opensslSan(join(dir, 'agent-vm-a.crt')), /URI:gpiofabric:agent:vm-a\b/);
    assert.match(opensslSan(join(dir, 'agent-node1-all.crt')), /URI:gpiofabric:agent:node1-\*/);
    assert.match(opensslSan(join(dir, 'operator-alice.crt')), /URI:gpiofabric:operator:alice/);
    assert.match(opensslSan(join(dir, 'watcher-bob.crt')), /URI:gpiofabric:watcher:bob/);
  });
  it('prints what it made and the flags; reuses the CA; rejects bad names', async () => {
    const r = await runCli(['certs', '--out', dir, '--watcher', 'carol', '--server-host', 'gf.example', '--server-host', '10.0.0.7']);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /existing CA reused/);
    assert.match(r.out, /--tls-cert \S+watcher-carol\.crt --tls-key \S+watcher-carol\.key --tls-ca \S+ca\.crt/);
    assert.match(opensslSan(join(dir, 'server.crt')), /DNS:gf\.example, IP Address:10\.0\.0\.7/);
    const bad = await runCli(['certs', '--out', dir, '--operator', 'a b']);
    assert.equal(bad.code, 2);
    // restore the default server certificate for the tests below
    assert.equal((await runCli(['certs', '--out', dir])).code, 0);
  });
});

describe('agent process over mTLS', () => {
  it('serve with TLS flags, an agent with its certificate serving a frontend, an operator reading the line', async () => {
    const serve = await startProc('serve', ['serve', '--listen', '127.0.0.1:0', '--metrics', 'off', ...tlsArgs(serverFiles(dir))], /listening on (\S+) .*mTLS/);
    procs.push(serve);
    const address = serve.match[1]!;
    const sock = join(tmp, 'vm-a.sock');
    const agent = await startProc('agent', ['agent', '--socket', sock, '--chip', 'vm-a', '--lines', '4', '--server', address], /agent vm-a: 4 lines/, {
      GPIOFABRIC_TLS_CERT: join(dir, 'agent-vm-a.crt'), GPIOFABRIC_TLS_KEY: join(dir, 'agent-vm-a.key'), GPIOFABRIC_TLS_CA: join(dir, 'ca.crt'),
    });
    procs.push(agent);
    const fe = await Frontend.connect(sock);
    const op = createLineStateClient(address, { tls: clientFiles(dir, 'operator-alice') });
    try {
      await fe.start();
      assert.equal((await fe.request(Gpio.SET_VALUE, 2, 1)).status, 0);
      assert.equal((await fe.request(Gpio.SET_DIRECTION, 2, 1)).status, 0);
      const l = await op.getLine({ line: { chip: 'vm-a', line: { $case: 'offset', value: 2 } } });
      assert.equal(l.level, 1);
      await op.drive({ target: { $case: 'line', value: { chip: 'vm-a', line: { $case: 'offset', value: 3 } } }, value: 2 });
      assert.equal((await fe.request(Gpio.SET_DIRECTION, 3, 2)).status, 0);
      assert.equal((await fe.request(Gpio.GET_VALUE, 3)).value, 1);
    } finally {
      fe.close();
      op.close();
    }
    await agent.stop();
    // an agent whose certificate names another chip is refused and stops with the reason
    const wrong = await runCli(['agent', '--socket', join(tmp, 'x.sock'), '--chip', 'vm-x', '--lines', '2', '--server', address, ...tlsArgs(clientFiles(dir, 'agent-vm-a'))]);
    assert.equal(wrong.code, 1, wrong.out);
    assert.match(wrong.out, /PERMISSION_DENIED: .*agent "vm-a" may not operate chip "vm-x"/);
    // a prefix identity covers its chips
    const pref = await startProc('agent-node1', ['agent', '--socket', join(tmp, 'n.sock'), '--chip', 'node1-vm9', '--lines', '2', '--server', address, ...tlsArgs(clientFiles(dir, 'agent-node1-all'))], /agent node1-vm9: 2 lines/);
    procs.push(pref);
    await pref.stop();
    await serve.stop();
  });
  it('up: the embedded service over mTLS with one agent certificate covering every VM', async () => {
    await makeCerts(['--agent', 'vm-*'], dir);
    const up = await startProc('up-tls', ['up', '--vms', 'vm-p,vm-q', '--dir', join(tmp, 'up'), '--listen', '127.0.0.1:0', '--metrics', 'off',
      ...tlsArgs(serverFiles(dir)), '--agent-tls-cert', join(dir, 'agent-vm-all.crt'), '--agent-tls-key', join(dir, 'agent-vm-all.key')], /line-state service on (\S+) \(embedded in-memory store, mTLS\)/);
    procs.push(up);
    const op = createLineStateClient(up.match[1]!, { tls: clientFiles(dir, 'watcher-bob') });
    try {
      assert.deepEqual((await op.listChips()).map((c) => [c.id, c.online]), [['vm-p', true], ['vm-q', true]]);
    } finally {
      op.close();
    }
    await up.stop();
    const missing = await runCli(['up', '--dir', join(tmp, 'up3'), '--listen', '127.0.0.1:0', '--metrics', 'off', ...tlsArgs(serverFiles(dir))]);
    assert.equal(missing.code, 2);
    assert.match(missing.out, /--agent-tls-cert/);
  });
  it('serve warns when it listens beyond loopback without TLS; --tls-ca alone is a usage error', async () => {
    const s = await startProc('serve-open', ['serve', '--listen', '0.0.0.0:0', '--metrics', 'off'], /listening on (\S+)/);
    procs.push(s);
    await s.stop();
    assert.match(s.output(), /WARNING: listening on 0\.0\.0\.0:\d+ without TLS/);
    const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--metrics', 'off', '--tls-ca', join(dir, 'ca.crt')]);
    assert.equal(r.code, 2, r.out);
  });
});

