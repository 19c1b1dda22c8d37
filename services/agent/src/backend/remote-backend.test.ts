/**
 * RemoteBackend's event-stream cursor logic against a scripted client (the real service
 * is covered by test/agent and test/faults): a seq jump is re-read from the cursor once,
 * also when it comes in the middle of a WatchEventBatches message.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LineEvent as ProtoLineEvent, WatchEventsRequest } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';
import type { LineStateClient } from '../../../linestate/src/client.ts';
import { RemoteBackend } from './remote-backend.ts';
import type { LineEvent } from './line-backend.ts';

interface Stream {
  req: WatchEventsRequest;
  /** One message of one event. */
  emit(seq: number, level?: number): void;
  /** One message of several events. */
  emitBatch(seqs: readonly number[]): void;
  cancelled: boolean;
}

function scriptedClient(): { client: LineStateClient; streams: Stream[] } {
  const streams: Stream[] = [];
  const client = {
    address: 'scripted',
    registerChip: async () => ({ leaseToken: '1', chip: { id: 'c', ngpio: 2, names: [], owner: 'o', online: true, leaseExpiresAtMs: '0', lastSeq: '3' }, lines: [], restored: true, tookOver: false, leaseTtlMs: 60_000 }),
    renewLease: async () => ({ leaseExpiresAtMs: '0' }),
    releaseChip: async () => {},
    watchEventBatches: (req: WatchEventsRequest, onEvents: (es: ProtoLineEvent[]) => void) => {
      const event = (seq: number, level = seq % 2): ProtoLineEvent => ({ chip: 'c', offset: 0, level, edge: level === 1 ? 1 : 2, seq: String(seq), timestampNs: '1' });
      const s: Stream = {
        req,
        cancelled: false,
        emit: (seq, level) => {
          if (!s.cancelled) onEvents([event(seq, level)]);
        },
        emitBatch: (seqs) => {
          if (!s.cancelled) onEvents(seqs.map((q) => event(q)));
        },
      };
      streams.push(s);
      return { cancel: () => { s.cancelled = true; } };
    },
  } as unknown as LineStateClient;
  return { client, streams };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('a seq jump on the live stream is re-read from the cursor, once per gap', async () => {
  const { client, streams } = scriptedClient();
  const b = new RemoteBackend({ client, chip: 'c', ngpio: 2, owner: 'o' });
  const seen: bigint[] = [];
  b.onEvent((e: LineEvent) => seen.push(e.seq));
  try {
    await b.start();
    await tick();
    assert.equal(streams.length, 1);
    assert.equal(streams[0]?.req.fromSeq, '3', 'resumes from the chip\'s last seq');
    streams[0]?.emit(4);
    streams[0]?.emit(7); // 5 and 6 skipped by the live path
    assert.equal(streams.length, 2, 'the stream is reopened');
    assert.equal(streams[0]?.cancelled, true);
    assert.equal(streams[1]?.req.fromSeq, '4', 'from the cursor, not past the gap');
    streams[1]?.emit(5);
    streams[1]?.emit(6);
    streams[1]?.emit(7);
    assert.deepEqual(seen, [4n, 5n, 6n, 7n]);
    // A gap the service cannot fill (events past retention) is accepted after one replay.
    streams[1]?.emit(10);
    assert.equal(streams.length, 3);
    streams[2]?.emit(10);
    assert.equal(streams.length, 3, 'no second replay for the same gap');
    streams[2]?.emit(11);
    assert.deepEqual(seen, [4n, 5n, 6n, 7n, 10n, 11n]);
    assert.equal(b.cursor, 11n);
    // A jump inside one message: what follows it in the message is left to the re-read.
    streams[2]?.emitBatch([12, 14, 15]);
    assert.equal(streams.length, 4, 'reopened at the jump');
    assert.equal(streams[3]?.req.fromSeq, '12');
    streams[3]?.emitBatch([13, 14, 15]);
    assert.deepEqual(seen, [4n, 5n, 6n, 7n, 10n, 11n, 12n, 13n, 14n, 15n], '14 and 15 once each, after 13');
  } finally {
    await b.close();
  }
});
