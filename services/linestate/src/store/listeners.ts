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

export class EventListeners {
  readonly #set = new Set<EventListener>();

  /** Add a listener for `chips` (empty = every chip). */
  add(chips: readonly string[], fn: (e: LineEventRecord) => void): EventSubscription {
    const l: EventListener = { chips: chips.length === 0 ? undefined : new Set(chips), fn, active: true };
    this.#set.add(l);
    return {
      close: () => {
        l.active = false;
        this.#set.delete(l);
      },
    };
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

  /** Drop every listener (store closed). */
  clear(): void {
    for (const l of this.#set) l.active = false;
    this.#set.clear();
  }
}
