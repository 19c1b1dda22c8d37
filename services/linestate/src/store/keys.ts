/**
 * Redis key naming of the line store, in one place. Every key of a fabric carries the
 * hash tag `{<fabric>}` so Redis Cluster keeps a whole fabric in one slot and every Lua
 * script stays Cluster-safe. The Lua scripts build the same names from the prefix (see
 * lua/lib.lua, which documents the value layout).
 */
import { ID_PATTERN } from './validate.ts';

export interface FabricKeys {
  /** "gf:{<fabric>}:" — passed to every script as ARGV[1]. */
  readonly prefix: string;
  /** SET of chip ids; also KEYS[1] of every script (routes it to the fabric's slot). */
  readonly chips: string;
  /** SET of net names. */
  readonly nets: string;
  /** HASH "chip:offset" -> net name. */
  readonly lineNets: string;
  /** Counter for generated net names. */
  readonly netSeq: string;
  /**
   * The fabric's pub/sub channel of replicas from before per-chip channels: scripts publish
   * on it only while one of them subscribes; current replicas subscribe to it (as a
   * pattern, so that they are not counted) only while one of them runs.
   */
  readonly channel: string;
  /** Pub/sub channel of one chip's live events. */
  chipChannel(id: string): string;
  /** Pattern of every chip's channel (a listener of every chip). */
  readonly everyChipPattern: string;
  /** HASH of one chip: lease, seq, packed line states. */
  chip(id: string): string;
  /** HASH line name -> offset of one chip. */
  names(id: string): string;
  /** HASH of one net. */
  net(name: string): string;
  /** STREAM of one chip's events (ids 0-<seq>). */
  events(id: string): string;
}

export function fabricKeys(fabric: string): FabricKeys {
  if (!ID_PATTERN.test(fabric)) throw new Error(`fabric name ${JSON.stringify(fabric)} must be 1-64 characters of A-Z a-z 0-9 . _ -`);
  const p = `gf:{${fabric}}:`;
  return {
    prefix: p,
    chips: `${p}chips`,
    nets: `${p}nets`,
    lineNets: `${p}ln`,
    netSeq: `${p}netseq`,
    // no glob character can occur in them: the fabric and chip ids are [A-Za-z0-9._-]
    channel: `${p}events`,
    chipChannel: (id) => `${p}events:${id}`,
    everyChipPattern: `${p}events:*`,
    chip: (id) => `${p}c:${id}`,
    names: (id) => `${p}nm:${id}`,
    net: (name) => `${p}n:${name}`,
    events: (id) => `${p}ev:${id}`,
  };
}
