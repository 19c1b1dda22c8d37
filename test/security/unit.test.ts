/**
 * Pure parts of the security layer: identities from certificate SANs, the role policy,
 * TLS option parsing, URL/password redaction and the certs command's plan.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentMayServe, isLoopbackListen, principalOf, redactUrl, sanUris, targetHost, TlsConfigError, tlsFilesFrom } from '../../services/common/src/tls.ts';
import { AGENT_RPCS, denial, OPERATOR_RPCS, READ_RPCS } from '../../services/linestate/src/authz.ts';
import { RPC_METHODS } from '../../services/linestate/src/metrics.ts';
import { redactPassword, redisConnectError, redisTlsOptions } from '../../services/cli/src/redis-options.ts';
import { certPlan } from '../../services/cli/src/commands/certs.ts';

const cert = (san: string, cn = 'x') => ({ subjectaltname: san, subject: { CN: cn } as never });

describe('identities', () => {
  it('URI SANs are parsed, other SAN types and foreign schemes ignored', () => {
    assert.deepEqual(sanUris('DNS:a, URI:gpiofabric:agent:vm-a, IP Address:1.2.3.4, URI:spiffe://x/y'), ['gpiofabric:agent:vm-a', 'spiffe://x/y']);
    assert.deepEqual(sanUris('URI:"gpiofabric:agent:a,b"'), ['gpiofabric:agent:a,b']);
    const p = principalOf(cert('URI:gpiofabric:agent:vm-a, URI:gpiofabric:agent:vm-b, URI:spiffe://x, URI:gpiofabric:operator:bad name'));
    assert.deepEqual([p.agentChips, p.operators, p.watchers], [['vm-a', 'vm-b'], [], []]);
    assert.equal(p.display, 'agent "vm-a,vm-b"');
    const none = principalOf(cert('DNS:localhost', 'somebody'));
    assert.match(none.display, /certificate "somebody" \(no gpiofabric identity\)/);
    assert.equal(principalOf(undefined).agentChips.length, 0);
  });
  it('agent chip patterns: exact, prefix*, *', () => {
    const p = principalOf(cert('URI:gpiofabric:agent:node1-*, URI:gpiofabric:agent:vm-a'));
    assert.ok(agentMayServe(p, 'node1-vm-x'));
    assert.ok(agentMayServe(p, 'vm-a'));
    assert.ok(!agentMayServe(p, 'vm-ab'));
    assert.ok(!agentMayServe(p, 'node2-vm-x'));
    assert.ok(agentMayServe(principalOf(cert('URI:gpiofabric:agent:*')), 'anything'));
  });
});

describe('role policy', () => {
  const agent = principalOf(cert('URI:gpiofabric:agent:vm-a'));
  const operator = principalOf(cert('URI:gpiofabric:operator:alice'));
  const watcher = principalOf(cert('URI:gpiofabric:watcher:bob'));
  const nobody = principalOf(cert('DNS:x'));
  const req = (chip: string): unknown => ({ chip, chips: [chip], line: { chip } });
  it('the three RPC classes cover every RPC exactly once', () => {
    const all = [...AGENT_RPCS, ...READ_RPCS, ...OPERATOR_RPCS].sort();
    assert.deepEqual(all, [...RPC_METHODS].sort());
  });
  it('operator: everything; watcher: reads only; nobody: nothing', () => {
    for (const rpc of RPC_METHODS) {
      assert.equal(denial(operator, rpc, req('vm-z')), undefined, rpc);
      assert.equal(denial(watcher, rpc, req('vm-z')) === undefined, READ_RPCS.has(rpc), rpc);
      assert.notEqual(denial(nobody, rpc, req('vm-a')), undefined, rpc);
    }
  });
  it('agent: its own chip only, never operator RPCs, never "every chip"', () => {
    for (const rpc of RPC_METHODS) {
      const own = denial(agent, rpc, req('vm-a'));
      const other = denial(agent, rpc, req('vm-b'));
      if (OPERATOR_RPCS.has(rpc)) {
        assert.match(own ?? '', /needs the operator role/, rpc);
      } else if (rpc === 'ListChips' || rpc === 'ListNets') {
        assert.match(own ?? '', /on every chip/, rpc);
      } else {
        assert.equal(own, undefined, rpc);
        assert.match(other ?? '', /agent "vm-a" may not (operate|read) chip "vm-b"/, rpc);
      }
    }
    assert.match(denial(agent, 'ListLines', { chip: '' }) ?? '', /every chip/);
    assert.match(denial(agent, 'WatchEvents', { chips: [] }) ?? '', /every chip/);
    assert.match(denial(agent, 'WatchEvents', { chips: ['vm-a', 'vm-b'] }) ?? '', /chip "vm-b"/);
    assert.equal(denial(agent, 'RegisterChip', { chip: 'vm-b' }), 'agent "vm-a" may not operate chip "vm-b" (RegisterChip needs the identity gpiofabric:agent:vm-b)');
  });
});

describe('TLS options', () => {
  it('flags win over env, per file; cert and key go together', () => {
    const env = { GPIOFABRIC_TLS_CERT: '/e/c', GPIOFABRIC_TLS_KEY: '/e/k', GPIOFABRIC_TLS_CA: '/e/ca' };
    assert.equal(tlsFilesFrom({}, {}), undefined);
    assert.deepEqual(tlsFilesFrom({ 'tls-ca': '/f/ca' }, env), { cert: '/e/c', key: '/e/k', ca: '/f/ca' });
    assert.deepEqual(tlsFilesFrom({ 'tls-ca': '/f/ca' }, {}), { ca: '/f/ca' });
    assert.throws(() => tlsFilesFrom({ 'tls-cert': '/c' }, {}), TlsConfigError);
  });
  it('loopback detection and gRPC target hosts', () => {
    assert.ok(isLoopbackListen('127.0.0.1:7070'));
    assert.ok(isLoopbackListen('[::1]:7070'));
    assert.ok(isLoopbackListen('localhost:1'));
    assert.ok(!isLoopbackListen('0.0.0.0:7070'));
    assert.ok(!isLoopbackListen('10.1.2.3:7070'));
    assert.equal(targetHost('[::1]:7070'), '::1');
    assert.equal(targetHost('dns:///svc.ns:7070'), 'svc.ns');
    assert.equal(targetHost('127.0.0.1:1'), '127.0.0.1');
  });
});

describe('Redis secrets', () => {
  it('URLs and messages never keep the password', () => {
    assert.equal(redactUrl('redis://:s3cret@h:6379/0'), 'redis://:***@h:6379/0');
    assert.equal(redactUrl('rediss://user:s3cret@h:6379'), 'rediss://user:***@h:6379');
    assert.equal(redactUrl('redis://h:6379'), 'redis://h:6379');
    assert.equal(redactPassword('failed for redis://:p%40ss@h (p@ss)', 'redis://:p%40ss@h'), 'failed for redis://:***@h (***)');
    const e = redisConnectError(Object.assign(new Error('WRONGPASS invalid username-password pair (sent p@ss)'), { name: 'ReplyError' }), 'redis://:p%40ss@h:1');
    assert.equal(e.code, 'PERMISSION_DENIED');
    assert.ok(!e.message.includes('p@ss') && !e.message.includes('p%40ss'), e.message);
    assert.match(e.message, /redis:\/\/:\*\*\*@h:1/);
    assert.match(e.message, /wrong user name or password/);
    assert.equal(e.cause, undefined);
  });
  it('Redis TLS flags need rediss://', () => {
    assert.deepEqual(redisTlsOptions({}, 'redis://h', {}), {});
    assert.throws(() => redisTlsOptions({ 'redis-tls-ca': '/x' }, 'redis://:pw@h', {}), (e: Error) => /rediss:\/\//.test(e.message) && !e.message.includes('pw'));
    assert.throws(() => redisTlsOptions({ 'redis-tls-cert': '/x' }, 'rediss://h', {}), /go together/);
  });
});

describe('certs plan', () => {
  it('server SANs default to localhost and 127.0.0.1; one file per identity', () => {
    const p = certPlan({ hosts: [], agents: ['vm-a', 'node1-*'], operators: ['alice'], watchers: ['bob'] });
    assert.deepEqual(p.map((x) => [x.file, x.san.join(',')]), [
      ['server', 'DNS:localhost,IP:127.0.0.1'],
      ['agent-vm-a', 'URI:gpiofabric:agent:vm-a'],
      ['agent-node1-all', 'URI:gpiofabric:agent:node1-*'],
      ['operator-alice', 'URI:gpiofabric:operator:alice'],
      ['watcher-bob', 'URI:gpiofabric:watcher:bob'],
    ]);
    assert.deepEqual(certPlan({ hosts: ['svc.ns', '::1'], agents: [], operators: [], watchers: [] })[0]?.san, ['DNS:svc.ns', 'IP:::1']);
    assert.throws(() => certPlan({ hosts: [], agents: [], operators: ['a', 'a'], watchers: [] }), /twice/);
  });
});
