/**
 * The vhost-user socket server: listens on a UNIX socket path, serves one front-end at a
 * time (a second concurrent connection is refused and logged), and after a disconnect
 * releases everything and waits for the next connection (guest reboot, QEMU restart).
 *
 * One device object lives for the whole server: its line backend, chip registration and
 * identity survive reconnects; each disconnect stops its queues and calls device.reset()
 * (interrupt state, pending buffers), which is what a fresh front-end expects.
 */
import type { FdSocket, Platform } from '../os/platform.ts';
import type { VirtioDevice } from '../virtio/types.ts';
import { MessageReader } from './codec.ts';
import { VhostUserSession } from './session.ts';

/**
 * A connection that arrives while another is active waits this long for the active one
 * to go away (its hang-up may still be unread) before it is refused.
 */
export const SECOND_CONNECTION_GRACE_MS = 250;

export interface ServeVhostUserOptions {
  readonly platform: Platform;
  readonly socketPath: string;
  /** The device, shared by successive connections (reset on each disconnect). */
  readonly device: VirtioDevice;
  readonly log?: (message: string) => void;
  /** Protocol features to offer (default MQ | REPLY_ACK | CONFIG). */
  readonly protocolFeatures?: bigint;
  /** A front-end connected (its session is live). */
  readonly onConnect?: () => void;
  /** The front-end went away (after everything was released); `error` on socket or framing failure. */
  readonly onDisconnect?: (error?: Error) => void;
}

export interface VhostUserServer {
  readonly socketPath: string;
  /** A front-end is connected. */
  readonly connected: boolean;
  /** Stop listening, drop the current connection (releasing everything). */
  close(): Promise<void>;
}

interface Active {
  readonly socket: FdSocket;
  readonly reader: MessageReader;
  readonly session: VhostUserSession;
}

/** Serve `device` over vhost-user on `socketPath`. Throws if the socket cannot be created. */
export function serveVhostUser(opts: ServeVhostUserOptions): VhostUserServer {
  const { platform, device } = opts;
  const log = opts.log ?? (() => {});
  let active: Active | null = null;
  let closed = false;

  const closeFds = (fds: readonly number[]): void => {
    for (const fd of fds) {
      try {
        platform.close(fd);
      } catch (e) {
        log(`close(${fd}) failed: ${(e as Error).message}`);
      }
    }
  };

  const teardown = (socket: FdSocket, error?: Error): void => {
    if (active?.socket !== socket) return;
    const a = active;
    active = null;
    a.session.close();
    closeFds(a.reader.takePendingFds());
    log(`vhost-user front-end disconnected from ${opts.socketPath}${error === undefined ? '' : `: ${error.message}`}`);
    try {
      opts.onDisconnect?.(error);
    } catch (e) {
      log(`onDisconnect failed: ${(e as Error).message}`);
    }
  };

  const onConnection = (socket: FdSocket): void => {
    if (closed) {
      socket.close();
      return;
    }
    if (active !== null) {
      // The current connection may already be dead with its hang-up not read yet (a
      // front-end that reconnects at once): give it a moment to close before refusing.
      const waitUntil = Date.now() + SECOND_CONNECTION_GRACE_MS;
      const retry = (): void => {
        if (closed) socket.close();
        else if (active === null) onConnection(socket);
        else if (Date.now() >= waitUntil) {
          log(`vhost-user: refusing a second connection on ${opts.socketPath} (one front-end at a time)`);
          socket.close();
        } else setTimeout(retry, 10);
      };
      setImmediate(retry);
      return;
    }
    const reader = new MessageReader();
    const sessionOpts = {
      platform,
      device,
      send: (bytes: Uint8Array) => socket.send(bytes),
      log,
      ...(opts.protocolFeatures === undefined ? {} : { protocolFeatures: opts.protocolFeatures }),
    };
    const session = new VhostUserSession(sessionOpts);
    active = { socket, reader, session };
    socket.onData((chunk, fds) => {
      if (active?.socket !== socket) {
        closeFds(fds);
        return;
      }
      try {
        const { messages, error } = reader.push(chunk, fds);
        for (const m of messages) session.handle(m);
        if (error !== null) {
          log(`vhost-user framing error, closing the connection: ${error.message}`);
          closeFds(error.fds);
          teardown(socket, error);
          socket.close();
        }
      } catch (e) {
        // handle() never throws; this is a last line of defence
        log(`vhost-user connection failed: ${(e as Error).message}`);
        teardown(socket, e as Error);
        socket.close();
      }
    });
    socket.onClose((error) => teardown(socket, error));
    log(`vhost-user front-end connected on ${opts.socketPath}`);
    try {
      opts.onConnect?.();
    } catch (e) {
      log(`onConnect failed: ${(e as Error).message}`);
    }
  };

  const listener = platform.listenUnix(opts.socketPath, onConnection);
  return {
    socketPath: opts.socketPath,
    get connected() {
      return active !== null;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      listener.close();
      const a = active;
      if (a !== null) {
        teardown(a.socket);
        a.socket.close();
      }
    },
  };
}
