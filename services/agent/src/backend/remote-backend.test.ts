/**
 * RemoteBackend's event-stream cursor logic against a scripted client (the real service
 * is covered by test/agent and test/faults): a seq jump is re-read from the cursor once,
 * also when it comes in the middle of a WatchEventBatches message; echoes the stream
 * counted as left out are no jump; levels() takes the newer of result and event.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LineEvent as ProtoLineEvent, LineOpBatch, LineOpResultBatch, WatchEventsRequest } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';
import type { LineStateClient } from '../../../linestate/src/client.ts';
import { RemoteBackend } from './remote-backend.ts';
import type { LineEvent } from './line-backend.ts';

interface Stream {
  req: WatchEventsRequest;
  /** One message of one event (of line 0 unless `offset`; `echoesBefore` echoes left out before it). */
  emit(seq: number, level?: number, offset?: number, echoesBefore?: number): void;
  /** One message of several events. */
  emitBatch(seqs: readonly number[]): void;
  cancelled: boolean;
}

/** `opLevel` answers every line operation batch: the chip seq and line level its results carry. */
function scriptedClient(opLevel: () => [number, number] = () => [0, 0]): { client: LineStateClient; streams: Stream[] } {
  const streams: Stream[] = [];
  const client = {
    address: 'scripted',
    deadlineMs: 5000,
    opStream: (onResults: (b: LineOpResultBatch) => void) => ({
      write: (b: LineOpBatch) => {
        const [seq, level] = opLevel();
        const results = b.ops.map((o) => ({ id: o.id, code: 0, value: 0, message: '', level }));
        setImmediate(() => onResults({ results, seq: String(seq) }));
      },
      end: () => {},
      cancel: () => {},
    }),
    registerChip: async () => ({ leaseToken: '1', chip: { id: 'c', ngpio: 2, names: [], owner: 'o', online: true, leaseExpiresAtMs: '0', lastSeq: '3' }, lines: [], restored: true, tookOver: false, leaseTtlMs: 60_000 }),
    renewLease: async () => ({ leaseExpiresAtMs: '0' }),
    releaseChip: async () => {},
    watchEventBatches: (req: WatchEventsRequest, onEvents: (es: ProtoLineEvent[]) => void) => {
      const event = (seq: number, level = seq % 2, offset = 0, echoesBefore = 0): ProtoLineEvent => ({
        chip: 'c', offset, level, edge: level === 1 ? 1 : 2, seq: String(seq), timestampNs: '1', echoesBefore,
      });
      const s: Stream = {
        req,
        cancelled: false,
        emit: (seq, level, offset, echoesBefore) => {
          if (!s.cancelled) onEvents([event(seq, level, offset, echoesBefore)]);
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

test('echoes the stream left out are no gap; levels() takes the newer of an operation result and an event', async () => {
  let next: [number, number] = [0, 0];
  const { client, streams } = scriptedClient(() => next);
  const b = new RemoteBackend({ client, chip: 'c', ngpio: 2, owner: 'o' });
  const seen: [bigint, number, number][] = [];
  b.onEvent((e: LineEvent) => seen.push([e.seq, e.offset, e.level]));
  try {
    await b.start();
    await tick();
    assert.equal(streams[0]?.req.omitEchoes, true, 'the agent asks the stream to leave its echoes out');
    streams[0]?.emit(4, 1);
    streams[0]?.emit(7, 0, 0, 2); // 5 and 6 were echoes
    assert.equal(streams.length, 1, 'counted echoes are not a gap');
    assert.equal(b.cursor, 7n);
    streams[0]?.emit(10, 1, 0, 1); // 9 was an echo, 8 is missing
    assert.equal(streams.length, 2, 'a gap before the counted echoes is re-read');
    assert.equal(streams[1]?.req.fromSeq, '7');
    assert.equal(streams[1]?.req.omitEchoes, true);
    streams[1]?.emit(8, 1);
    streams[1]?.emit(10, 1, 0, 1);
    assert.deepEqual(seen, [[4n, 0, 1], [7n, 0, 0], [8n, 0, 1], [10n, 0, 1]]);

    // line 1: its level as of seq 20 from an operation's result (the change was an echo) ...
    next = [20, 1];
    await b.setValue(1, 1);
    assert.equal(b.levels()[1], 1, 'the result set the level');
    // ... an older event of line 1 arriving later is delivered but does not roll the level back
    streams[1]?.emit(11, 0, 1, 0);
    assert.deepEqual(seen.at(-1), [11n, 1, 0]);
    assert.equal(b.levels()[1], 1, 'seq 11 is older than the result (as of 20)');
    // ... a newer event wins
    streams[1]?.emit(21, 0, 1, 9); // 12..20 echoes
    assert.equal(streams.length, 2);
    assert.equal(b.levels()[1], 0);
    // an older result does not roll back a newer event either
    next = [15, 1];
    await b.getValue(1);
    assert.equal(b.levels()[1], 0);
    // the events delivered (4, 7, 8, 10, 11, 21) and the echoes counted account for every seq after 3
    assert.equal(b.echoesSkipped, 2n + 1n + 9n);
    assert.equal(BigInt(seen.length) + b.echoesSkipped, b.cursor - 3n);
  } finally {
    await b.close();
  }
});
