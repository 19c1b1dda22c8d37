/**
 * gRPC API abuse: a real line-state server (memory store and a real Redis via
 * startRedis()) fed what the typed client would never send, through raw grpc-js calls
 * with hand-made bytes. Every bad request gets a clear status (INVALID_ARGUMENT, or
 * RESOURCE_EXHAUSTED above the receive limit), the state an operator can list is exactly
 * unchanged, and the server keeps serving.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client, credentials, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import {
  ApplyTopologyRequest, DriveRequest, GetLineRequest, GetNamesRequest, LineOpRequest, LineOpType, RegisterChipRequest, SetBiasRequest, WireRequest,
} from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { MAX_REQUEST_BYTES } from '../../services/linestate/src/server.ts';
import { MAX_NESTING_DEPTH } from '../../services/linestate/src/topology.ts';
import { fabricOf, snapshot, startRedis, type Fabric, type StoreKind } from '../linestate/harness.ts';
import type { RedisHandle } from '../support/redis.ts';

const SERVICE = '/gpiofabric.v1.LineStateService';

interface RawResult { readonly code: number; readonly details: string; readonly bytes: Buffer | null }

/** One unary call with raw request bytes; resolves with the status (never rejects). */
function rawCall(client: Client, method: string, bytes: Uint8Array): Promise<RawResult> {
  return new Promise((resolve) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      `${SERVICE}/${method}`,
      (b) => b,
      (b) => b,
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      { deadline: Date.now() + 60_000 },
      (err: ServiceError | null, res?: Buffer) => {
        if (err !== null) resolve({ code: err.code, details: err.details, bytes: null });
        else resolve({ code: GrpcStatus.OK, details: '', bytes: res ?? Buffer.alloc(0) });
      },
    );
  });
}

/** Protobuf bytes of one length-delimited field (raw: any bytes, e.g. invalid UTF-8). */
function lenField(field: number, payload: Uint8Array): Uint8Array {
  const head: number[] = [(field << 3) | 2];
  let n = payload.length;
  while (n >= 0x80) {
    head.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  head.push(n);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

const off = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });

function hugeTopology(nets: number, contradiction: boolean): string {
  const chips = Math.ceil((2 * nets) / 1024);
  const lines = ['apiVersion: gpiofabric/v1', 'chips:'];
  for (let c = 0; c < chips; c++) lines.push(`  - {id: big-${c}, lines: 1024}`);
  lines.push('nets:');
  for (let n = 0; n < nets; n++) {
    const a = 2 * n;
    const b = contradiction && n === nets - 1 ? 0 : 2 * n + 1;
    lines.push(`  - {name: n${n}, members: [big-${Math.floor(a / 1024)}:${a % 1024}, big-${Math.floor(b / 1024)}:${b % 1024}]}`);
  }
  return `${lines.join('\n')}\n`;
}

function aliasBomb(levels: number, width: number): string {
  const out = ['apiVersion: gpiofabric/v1', 'x0: &x0 [vm-a:0, vm-b:0]'];
  for (let i = 1; i <= levels; i++) out.push(`x${i}: &x${i} [${Array.from({ length: width }, () => `*x${i - 1}`).join(', ')}]`);
  out.push(`nets:\n  - {name: bomb, members: *x${levels}}`);
  return `${out.join('\n')}\n`;
}

for (const kind of ['memory', 'redis'] as StoreKind[]) {
  describe(`gRPC API abuse on the ${kind} store`, () => {
    let redis: RedisHandle | undefined;
    let f: Fabric;
    let raw: Client;
    let tokA = '';

    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      f = await fabricOf(kind, redis);
      raw = new Client(f.server.address, credentials.createInsecure(), { 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
      tokA = (await f.client.registerChip({ chip: 'vm-a', ngpio: 4, names: ['led0', 'btn0', '', ''], owner: 'agent-a', leaseTtlMs: 60_000 })).leaseToken;
      await f.client.registerChip({ chip: 'vm-b', ngpio: 4, names: [], owner: 'agent-b', leaseTtlMs: 60_000 });
      await f.client.wire({ name: 'w1', members: [off('vm-a', 0), off('vm-b', 0)], pull: 1, driveMode: 0 });
    });
    after(async () => {
      raw?.close();
      await f?.stop();
      await redis?.stop();
    });

    /** Send raw bytes; assert the status and that the listed state is exactly unchanged. */
    async function refused(method: string, bytes: Uint8Array, code: number, details: RegExp): Promise<RawResult> {
      const before = await snapshot(f.client);
      const r = await rawCall(raw, method, bytes);
      assert.equal(r.code, code, `status of ${method}: ${GrpcStatus[r.code]} "${r.details.slice(0, 200)}"`);
      assert.match(r.details, details);
      assert.doesNotMatch(r.details, /\n\s+at /, 'no stack trace in the details');
      assert.equal(await snapshot(f.client), before, 'state unchanged');
      return r;
    }

    it(`a request over the receive limit (${MAX_REQUEST_BYTES} bytes) is RESOURCE_EXHAUSTED`, async () => {
      const doc = `apiVersion: gpiofabric/v1\n#${'x'.repeat(MAX_REQUEST_BYTES)}\n`;
      await refused('ApplyTopology', ApplyTopologyRequest.encode({ document: doc, dryRun: false }).finish(), GrpcStatus.RESOURCE_EXHAUSTED, /larger than max/i);
      const names = Array.from({ length: 4 }, () => 'n'.repeat(2 * 1024 * 1024));
      await refused('RegisterChip', RegisterChipRequest.encode({ chip: 'vm-z', ngpio: 4, names, owner: 'x', leaseTtlMs: 0 }).finish(), GrpcStatus.RESOURCE_EXHAUSTED, /larger than max/i);
    });

    it('invalid enum numbers are INVALID_ARGUMENT', async () => {
      for (const op of [1, 7, 99, -1, 0x7fffffff]) {
        await refused('LineOp', LineOpRequest.encode({ chip: 'vm-a', leaseToken: tokA, op: op as LineOpType, offset: 1, value: 1 }).finish(), GrpcStatus.INVALID_ARGUMENT, /op/);
      }
      await refused('LineOp', LineOpRequest.encode({ chip: 'vm-a', leaseToken: tokA, op: LineOpType.LINE_OP_TYPE_SET_DIRECTION, offset: 1, value: 0xffffffff }).finish(), GrpcStatus.INVALID_ARGUMENT, /direction/);
      for (const bias of [3, -1, 0x7fffffff]) {
        await refused('SetBias', SetBiasRequest.encode({ line: off('vm-a', 1), bias: bias as 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /bias/);
      }
      await refused('Wire', WireRequest.encode({ name: 'e1', members: [off('vm-a', 2), off('vm-b', 2)], pull: -5 as 0, driveMode: 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /pull/);
      await refused('Wire', WireRequest.encode({ name: 'e2', members: [off('vm-a', 2), off('vm-b', 2)], pull: 0, driveMode: 1 << 30 as 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /drive_mode/);
      await refused('Drive', DriveRequest.encode({ target: { $case: 'net', value: 'w1' }, value: 99 as 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /value/);
    });

    it('ids with NUL, very long or non-ASCII characters, and invalid UTF-8, are INVALID_ARGUMENT', async () => {
      for (const chip of ['vm-a\0', '\0', 'vm-a\0vm-b', 'v'.repeat(100_000), 'vm-ä', 'vm-\u{1d524}', 'vm-\u202ea', 'vm a', '../vm-a']) {
        await refused('GetNames', GetNamesRequest.encode({ chip }).finish(), GrpcStatus.INVALID_ARGUMENT, /chip id/);
        await refused('RegisterChip', RegisterChipRequest.encode({ chip, ngpio: 2, names: [], owner: 'x', leaseTtlMs: 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /chip id/);
      }
      await refused('GetNames', lenField(1, Uint8Array.of(0x76, 0x6d, 0xff, 0xfe, 0xc0, 0x80)), GrpcStatus.INVALID_ARGUMENT, /chip id/);
      for (const name of ['led0\0', 'l'.repeat(100_000), 'lëd', '\u{1f4a9}']) {
        const r = await rawCall(raw, 'GetLine', GetLineRequest.encode({ line: { chip: 'vm-a', line: { $case: 'name', value: name } } }).finish());
        assert.ok(r.code === GrpcStatus.INVALID_ARGUMENT || r.code === GrpcStatus.NOT_FOUND, `GetLine by name ${JSON.stringify(name.slice(0, 10))}: ${GrpcStatus[r.code]}`);
        await refused('Wire', WireRequest.encode({ name: 'w2', members: [{ chip: 'vm-a', line: { $case: 'name', value: name } }, off('vm-b', 1)], pull: 0, driveMode: 0 }).finish(), r.code, /./);
      }
      for (const net of ['n\0', 'n'.repeat(100_000), 'nét', '']) {
        await refused('Unwire', lenField(1, new TextEncoder().encode(net)), GrpcStatus.INVALID_ARGUMENT, /net name/);
      }
      await refused('RegisterChip', RegisterChipRequest.encode({ chip: 'vm-n', ngpio: 2, names: ['a\0b', ''], owner: 'x', leaseTtlMs: 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /name/);
      await refused('RegisterChip', RegisterChipRequest.encode({ chip: 'vm-n', ngpio: 2, names: ['ä', ''], owner: 'x', leaseTtlMs: 0 }).finish(), GrpcStatus.INVALID_ARGUMENT, /name/);
    });

    it('garbage request bytes are refused and the server keeps serving', async () => {
      for (const bytes of [Uint8Array.of(0xff), Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f), Uint8Array.of(0x0a, 0x05, 0x61)]) {
        const before = await snapshot(f.client);
        const r = await rawCall(raw, 'Wire', bytes);
        assert.notEqual(r.code, GrpcStatus.OK);
        assert.ok(r.code === GrpcStatus.INTERNAL || r.code === GrpcStatus.INVALID_ARGUMENT, `garbage Wire: ${GrpcStatus[r.code]} ${r.details}`);
        assert.equal(await snapshot(f.client), before);
      }
      assert.equal((await f.client.listChips()).length, 2);
    });

    it('a 10,000-net topology with one contradiction is INVALID_ARGUMENT naming it; its valid twin dry-runs', async () => {
      await refused('ApplyTopology', ApplyTopologyRequest.encode({ document: hugeTopology(10_000, true), dryRun: false }).finish(), GrpcStatus.INVALID_ARGUMENT, /nets\[9999\]\.members\[1\]/);
      const before = await snapshot(f.client);
      const r = await rawCall(raw, 'ApplyTopology', ApplyTopologyRequest.encode({ document: hugeTopology(10_000, false), dryRun: true }).finish());
      assert.equal(r.code, GrpcStatus.OK, r.details);
      assert.equal(await snapshot(f.client), before, 'a dry run changes nothing');
    });

    it('a 4.5 MiB document (under the receive limit, over the document limit) is INVALID_ARGUMENT', async () => {
      const doc = `apiVersion: gpiofabric/v1\n#${'x'.repeat(4 * 1024 * 1024 + 512 * 1024 - 40)}\n`;
      assert.ok(Buffer.byteLength(doc) < MAX_REQUEST_BYTES + 512 * 1024);
      const r = await rawCall(raw, 'ApplyTopology', ApplyTopologyRequest.encode({ document: doc, dryRun: false }).finish());
      assert.ok(r.code === GrpcStatus.INVALID_ARGUMENT || r.code === GrpcStatus.RESOURCE_EXHAUSTED, GrpcStatus[r.code]);
    });

    it('alias bombs and deep nesting are INVALID_ARGUMENT without blowing memory', async () => {
      const heap0 = process.memoryUsage().heapUsed;
      await refused('ApplyTopology', ApplyTopologyRequest.encode({ document: aliasBomb(9, 10), dryRun: false }).finish(), GrpcStatus.INVALID_ARGUMENT, /alias/i);
      await refused('ApplyTopology', ApplyTopologyRequest.encode({ document: aliasBomb(30, 2), dryRun: true }).finish(), GrpcStatus.INVALID_ARGUMENT, /alias/i);
      const deep = `apiVersion: gpiofabric/v1\nchips: ${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}\n`;
      await refused('ApplyTopology', ApplyTopologyRequest.encode({ document: deep, dryRun: false }).finish(), GrpcStatus.INVALID_ARGUMENT, new RegExp(`nested deeper than ${MAX_NESTING_DEPTH}`));
      await refused('ApplyTopology', ApplyTopologyRequest.encode({ document: `apiVersion: gpiofabric/v1\nchips:\n  ${'- '.repeat(500_000)}x\n`, dryRun: false }).finish(), GrpcStatus.INVALID_ARGUMENT, /block entries/);
      // A 10^9-element expansion would need gigabytes; the server (same process) stays far below.
      assert.ok(process.memoryUsage().heapUsed - heap0 < 512 * 1024 * 1024, 'heap grew by more than 512 MiB');
      assert.equal((await f.client.listNets()).length, 1);
    });
  });
}
