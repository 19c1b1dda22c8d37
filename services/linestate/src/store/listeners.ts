/**
 * The live-event listeners of a store (LineStore.subscribe), shared by both stores:
 * per-listener chip filter, unsubscribe, and fan-out in which a throwing listener does
 * not affect the others.
 */
import type { EventSubscription, LineEventRecord } from './store.ts';

export interface EventListener {
  readonly chips: ReadonlySet<string> | undefined;
  readonly fn: (e: LineEventRecord) => void;
  active: boolean;
}

/** Told when a chip (undefined: every chip) gets its first listener and loses its last. */
export interface ListenerHooks {
  first(chip: string | undefined): void;
  last(chip: string | undefined): void;
}

export class EventListeners {
  readonly #set = new Set<EventListener>();
  readonly #hooks: ListenerHooks | undefined;
  /** Listeners per chip, and listeners of every chip: `wants` in O(1). */
  readonly #perChip = new Map<string, number>();
  #everyChip = 0;

  constructor(hooks?: ListenerHooks) {
    this.#hooks = hooks;
  }

  /** Add a listener for `chips` (empty = every chip). */
  add(chips: readonly string[], fn: (e: LineEventRecord) => void): EventSubscription {
    const l: EventListener = { chips: chips.length === 0 ? undefined : new Set(chips), fn, active: true };
    this.#set.add(l);
    this.#count(l, 1);
    return {
      close: () => {
        if (!this.#set.delete(l)) return;
        l.active = false;
        this.#count(l, -1);
      },
    };
  }

  /** True when some listener takes events of `chip`. */
  wants(chip: string): boolean {
    return this.#everyChip > 0 || (this.#perChip.get(chip) ?? 0) > 0;
  }

  #count(l: EventListener, d: 1 | -1): void {
    if (l.chips === undefined) {
      this.#everyChip += d;
      if (this.#everyChip === (d > 0 ? 1 : 0)) this.#tell(d, undefined);
      return;
    }
    for (const c of l.chips) {
      const n = (this.#perChip.get(c) ?? 0) + d;
      if (n > 0) this.#perChip.set(c, n);
      else this.#perChip.delete(c);
      if (n === (d > 0 ? 1 : 0)) this.#tell(d, c);
    }
  }

  #tell(d: 1 | -1, chip: string | undefined): void {
    if (d > 0) this.#hooks?.first(chip);
    else this.#hooks?.last(chip);
  }

  /** True when anyone listens. */
  any(): boolean {
    return this.#set.size > 0;
  }

  /** The listeners subscribed now (to deliver later to exactly these). */
  current(): readonly EventListener[] {
    return [...this.#set];
  }

  /** Deliver `e` to the still-active listeners among `targets` (default: all) whose filter matches. */
  emit(e: LineEventRecord, targets: Iterable<EventListener> = this.#set): void {
    for (const l of targets) {
      if (!l.active || (l.chips !== undefined && !l.chips.has(e.chip))) continue;
      try {
        l.fn(e);
      } catch {
        // a listener's fault is its own; the others still get the event
      }
    }
  }

  /** Drop every listener (store closed; the hooks are not told). */
  clear(): void {
    for (const l of this.#set) l.active = false;
    this.#set.clear();
    this.#perChip.clear();
    this.#everyChip = 0;
  }
}
