/**
 * Real-guest harness for gpio-fabric's end-to-end tests: boots Debian's 6.12 kernel under
 * QEMU (>= 9) with the initramfs built by `test/e2e/provision.sh` (gpio-virtio.ko,
 * levelirq.ko, busybox, the libgpiod v2 tools) and drives it over the serial console.
 *
 * Each `sockets` entry becomes one `vhost-user-gpio-pci` device whose backend (a gpio-fabric
 * device agent) must already listen on that UNIX socket: QEMU connects once at start and
 * exits with "Failed to connect" otherwise. Guest RAM is a shared memfd, which vhost-user
 * requires. There is no KVM here, so guests run under TCG unless /dev/kvm is usable.
 *
 * The guest's /init runs `gf-serve` (test/e2e/guest/serve.sh) on ttyS0 when the kernel
 * command line has `gpiofabric.serve=1`: the harness sends `<id> <base64 script>` lines and
 * reads the output between `__GF_BEGIN_<id>__` and `__GF_END_<id>__ <status>` markers, with
 * echo off and no prompt, so typed text never mixes with results. Every wait is bounded;
 * errors carry the tail of the console.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, createWriteStream, existsSync, mkdirSync, readFileSync, type WriteStream } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** What provision.sh writes to `<cache>/e2e/manifest.json`. */
export interface E2eManifest {
  readonly schema: 1;
  /** Build key (hash of package versions and the guest sources). */
  readonly key: string;
  /** Path of qemu-system-x86_64. */
  readonly qemu: string;
  readonly qemuVersion: string;
  /** Path of the guest kernel image (Debian's vmlinuz). */
  readonly kernel: string;
  /** `uname -r` of the guest, e.g. 6.12.117+deb12-amd64. */
  readonly kernelRelease: string;
  readonly initramfs: string;
  readonly modules: { readonly gpioVirtio: string; readonly levelirq: string };
  /** gpiod tools inside the guest (gpiodetect, gpioget, gpioinfo, gpiomon, gpionotify, gpioset). */
  readonly guestTools: readonly string[];
  /** Printed by /init once the modules are loaded. */
  readonly readyMarker: string;
  /** Printed by gf-serve when it accepts requests. */
  readonly serveMarker: string;
  /** Debian package name to installed/downloaded version. */
  readonly packages: Readonly<Record<string, string>>;
}

/** Options of {@link bootGuest}. */
export interface BootOptions {
  /** Short name, used in QEMU's -name and in error messages. */
  readonly name: string;
  /** vhost-user-gpio socket paths, one virtio-gpio device each (backends must listen already). */
  readonly sockets?: readonly string[];
  /** Guest RAM in MiB (default 256). */
  readonly memoryMb?: number;
  /** Bound for booting up to the command server (default 120000 ms). */
  readonly timeoutMs?: number;
  /** File that receives everything the guest prints on its console (and QEMU's stderr). */
  readonly log?: string;
  /** Extra kernel command line words. */
  readonly cmdline?: string;
  /** Extra QEMU arguments, appended last. */
  readonly extraArgs?: readonly string[];
  /** Manifest to use instead of {@link loadManifest}(). */
  readonly manifest?: E2eManifest;
}

/** Result of one command run in the guest. */
export interface RunResult {
  /** Combined stdout and stderr, `\r\n` turned into `\n`. */
  readonly output: string;
  /** Exit status of the command (the shell's `$?`). */
  readonly code: number;
}

export interface RunOptions {
  /** Bound for the command (default 30000 ms). */
  readonly timeoutMs?: number;
}

/** A command started in the guest's background with output to a guest file. */
export interface BackgroundHandle {
  /** Guest pid, also its process group and session id. */
  readonly pid: number;
  /** Guest file that receives the command's stdout and stderr. */
  readonly logPath: string;
  /** Current content of the log file. */
  read(): Promise<string>;
  /** Whether the process still runs (not a zombie). */
  running(): Promise<boolean>;
  /** Signals the whole process group and waits (bounded) until the leader is gone. */
  kill(signal?: 'TERM' | 'KILL' | 'INT' | 'HUP'): Promise<void>;
}

/** A booted guest. */
export interface Guest {
  readonly name: string;
  /** Host pid of the QEMU process. */
  readonly pid: number;
  /** The QEMU argument list used. */
  readonly args: readonly string[];
  /** True once QEMU has exited. */
  readonly exited: boolean;
  /** Runs a shell script (any size up to a few KiB, any quoting) in a fresh guest `sh`. */
  run(cmd: string, opts?: RunOptions): Promise<RunResult>;
  /** Like run, but throws {@link GuestCommandError} unless the status is 0; returns the output. */
  check(cmd: string, opts?: RunOptions): Promise<string>;
  /** Starts `cmd` in its own session in the guest, output to a guest file. */
  background(cmd: string): Promise<BackgroundHandle>;
  /** Writes a guest file (any bytes; sent in chunks). */
  writeFile(path: string, content: string | Uint8Array): Promise<void>;
  /** The guest kernel log. */
  dmesg(): Promise<string>;
  /** Everything the console printed so far. */
  console(): string;
  /** `poweroff -f`, then SIGKILL after `timeoutMs` (default 15000); resolves with QEMU's exit code. */
  shutdown(opts?: { readonly timeoutMs?: number }): Promise<number | null>;
}

/** Base class of harness errors; `consoleTail` holds the last console lines. */
export class GuestError extends Error {
  readonly consoleTail: string;
  constructor(message: string, consoleTail: string, options?: ErrorOptions) {
    super(`${message}\n--- console tail ---\n${consoleTail}\n--- end of console tail ---`, options);
    this.name = 'GuestError';
    this.consoleTail = consoleTail;
  }
}

/** A bounded wait ran out. */
export class GuestTimeoutError extends GuestError {
  constructor(message: string, consoleTail: string, options?: ErrorOptions) {
    super(message, consoleTail, options);
    this.name = 'GuestTimeoutError';
  }
}

/** QEMU exited (or could not start) while something was waiting for the guest. */
export class GuestExitedError extends GuestError {
  constructor(message: string, consoleTail: string, options?: ErrorOptions) {
    super(message, consoleTail, options);
    this.name = 'GuestExitedError';
  }
}

/** A command run with {@link Guest.check} exited non-zero. */
export class GuestCommandError extends Error {
  readonly result: RunResult;
  constructor(cmd: string, result: RunResult) {
    super(`guest command failed with status ${result.code}: ${cmd}\n${result.output}`);
    this.name = 'GuestCommandError';
    this.result = result;
  }
}

/** The manifest is missing or unreadable: provisioning did not run. */
export class E2eNotProvisionedError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'E2eNotProvisionedError';
  }
}

/** Where provision.sh writes its manifest (GPIOFABRIC_E2E_MANIFEST overrides). */
export function manifestPath(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env['GPIOFABRIC_E2E_MANIFEST'];
  if (explicit !== undefined && explicit !== '') return explicit;
  const cache = env['GPIOFABRIC_CACHE'];
  const root = cache !== undefined && cache !== '' ? cache : join(homedir(), '.cache', 'gpio-fabric');
  return join(root, 'e2e', 'manifest.json');
}

/** Reads and checks the manifest; throws {@link E2eNotProvisionedError} when provisioning is missing. */
export function loadManifest(path: string = manifestPath()): E2eManifest {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new E2eNotProvisionedError(
      `e2e guest not provisioned: cannot read ${path}; run \`sudo bash test/e2e/provision.sh\` (npm test does it)`,
      { cause },
    );
  }
  let m: unknown;
  try {
    m = JSON.parse(raw);
  } catch (cause) {
    throw new E2eNotProvisionedError(`e2e manifest ${path} is not JSON; run test/e2e/provision.sh again`, { cause });
  }
  const o = m as Partial<Record<keyof E2eManifest, unknown>>;
  if (typeof m !== 'object' || m === null || o.schema !== 1) {
    throw new E2eNotProvisionedError(`e2e manifest ${path} has an unknown schema; run test/e2e/provision.sh again`);
  }
  for (const k of ['qemu', 'kernel', 'initramfs'] as const) {
    const p = o[k];
    if (typeof p !== 'string' || !existsSync(p)) {
      throw new E2eNotProvisionedError(`e2e manifest ${path}: ${k} (${String(p)}) is missing; run test/e2e/provision.sh again`);
    }
  }
  return m as E2eManifest;
}

/** QEMU arguments of one vhost-user-gpio device on `socketPath` (index makes the ids unique). */
export function vhostUserGpioArgs(socketPath: string, index: number): string[] {
  if (socketPath.includes(',')) throw new RangeError(`socket path must not contain ',': ${socketPath}`);
  return ['-chardev', `socket,id=gpio${index},path=${socketPath}`, '-device', `vhost-user-gpio-pci,chardev=gpio${index},id=gpio${index}`];
}

/** The full QEMU argument list for a guest (pure; {@link bootGuest} spawns it). */
export function qemuArgs(manifest: E2eManifest, opts: BootOptions, kvm = false): string[] {
  const mb = opts.memoryMb ?? 256;
  if (!Number.isInteger(mb) || mb < 64 || mb > 65536) throw new RangeError(`memoryMb out of range: ${mb}`);
  const append = ['console=ttyS0', 'quiet', 'loglevel=1', 'panic=-1', 'gpiofabric.serve=1', opts.cmdline ?? '']
    .filter((w) => w !== '')
    .join(' ');
  const args = [
    '-name', `gf-${opts.name}`,
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
    '-accel', kvm ? 'kvm' : 'tcg',
    '-smp', '1',
    '-m', `${mb}M`,
    // vhost-user needs guest RAM the backend can map: a shared memfd
    '-object', `memory-backend-memfd,id=mem,size=${mb}M,share=on`,
    '-machine', 'pc,memory-backend=mem',
    '-kernel', manifest.kernel,
    '-initrd', manifest.initramfs,
    '-append', append,
  ];
  (opts.sockets ?? []).forEach((s, i) => args.push(...vhostUserGpioArgs(s, i)));
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** Quotes a string for a POSIX shell. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Longest request line the guest tty accepts in canonical mode is 4095 bytes; keep a margin. */
export const MAX_REQUEST_LINE = 4000;

/** The request line gf-serve reads for script `cmd` with request id `id`. */
export function encodeRequest(id: number, cmd: string): string {
  const line = `${id} ${Buffer.from(cmd, 'utf8').toString('base64')}\n`;
  if (line.length > MAX_REQUEST_LINE) {
    throw new RangeError(`guest command too long (${cmd.length} bytes); use writeFile() and run the file`);
  }
  return line;
}

/**
 * Finds the result of request `id` in console text (from `from` on). Returns undefined
 * while the end marker has not arrived.
 */
export function parseResult(text: string, id: number, from = 0): RunResult | undefined {
  const begin = `__GF_BEGIN_${id}__`;
  const b = text.indexOf(begin, from);
  if (b < 0) return undefined;
  const endRe = new RegExp(`\\r?\\n__GF_END_${id}__ (\\d+)\\r?\\n`, 'g');
  endRe.lastIndex = b + begin.length;
  const e = endRe.exec(text);
  if (e === null) return undefined;
  let body = text.slice(b + begin.length, e.index);
  body = body.replace(/^\r?\n/, '').replace(/\r\n/g, '\n').replace(/\r/g, '');
  return { output: body, code: Number(e[1]) };
}

interface Waiter {
  readonly test: () => boolean;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

const TAIL_LINES = 40;
const SETPRIV = '/usr/bin/setpriv';
const CONSOLE_CAP = 8 * 1024 * 1024;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // never leave a QEMU behind when a test process ends abruptly
  process.once('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

class QemuGuest implements Guest {
  readonly name: string;
  readonly args: readonly string[];
  private readonly child: ChildProcess;
  private readonly logStream: WriteStream | undefined;
  private text = '';
  private dropped = 0;
  private stderr = '';
  private waiters = new Set<Waiter>();
  private exitCode: number | null = null;
  private exitedFlag = false;
  private readonly exitPromise: Promise<number | null>;
  private seq = 0;
  private bgSeq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private wedged: string | undefined;

  constructor(manifest: E2eManifest, opts: BootOptions) {
    this.name = opts.name;
    this.args = qemuArgs(manifest, opts, kvmUsable());
    if (opts.log !== undefined) {
      mkdirSync(dirname(opts.log), { recursive: true });
      this.logStream = createWriteStream(opts.log, { flags: 'a' });
    }
    installExitHook();
    // setpriv (util-linux) makes the kernel SIGKILL QEMU if this process dies without
    // running its exit hooks (e.g. a test runner killed by a signal); it execs QEMU in place
    const [file, argv] = existsSync(SETPRIV)
      ? [SETPRIV, ['--pdeathsig', 'KILL', manifest.qemu, ...this.args]]
      : [manifest.qemu, [...this.args]];
    this.child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this.child);
    this.child.stdin?.on('error', () => {
      /* EPIPE after QEMU exits: reported through the exit path */
    });
    this.child.stdout?.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
    this.child.stderr?.on('data', (d: Buffer) => {
      const s = d.toString('utf8');
      this.stderr = (this.stderr + s).slice(-16384);
      this.logStream?.write(`[qemu stderr] ${s}`);
    });
    this.exitPromise = new Promise((resolve) => {
      const done = (code: number | null, how: string): void => {
        if (this.exitedFlag) return;
        this.exitedFlag = true;
        this.exitCode = code;
        live.delete(this.child);
        this.logStream?.end();
        const err = new GuestExitedError(`guest ${this.name}: QEMU ${how}`, this.tail());
        for (const w of this.waiters) w.reject(err);
        this.waiters.clear();
        resolve(code);
      };
      this.child.once('exit', (code, signal) => done(code, signal !== null ? `killed by ${signal}` : `exited with code ${code}`));
      this.child.once('error', (e) => done(null, `failed to start: ${e.message}`));
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get exited(): boolean {
    return this.exitedFlag;
  }

  console(): string {
    return this.text;
  }

  private onData(s: string): void {
    this.logStream?.write(Buffer.from(s, 'latin1'));
    this.text += s;
    if (this.text.length > CONSOLE_CAP) {
      const cut = this.text.length - CONSOLE_CAP / 2;
      this.text = this.text.slice(cut);
      this.dropped += cut;
    }
    for (const w of [...this.waiters]) {
      if (w.test()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  /** Last console lines plus QEMU's stderr, for error messages. */
  tail(): string {
    const lines = this.text.replace(/\r/g, '').split('\n').slice(-TAIL_LINES).join('\n');
    return this.stderr === '' ? lines : `${lines}\n[qemu stderr]\n${this.stderr.trim()}`;
  }

  /** Waits until `test()` holds (checked on every console chunk), at most `ms`. */
  waitFor(test: () => boolean, ms: number, what: string): Promise<void> {
    if (test()) return Promise.resolve();
    if (this.exitedFlag) return Promise.reject(new GuestExitedError(`guest ${this.name}: QEMU exited before ${what}`, this.tail()));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new GuestTimeoutError(`guest ${this.name}: timed out after ${ms} ms waiting for ${what}`, this.tail()));
      }, ms);
      const w: Waiter = {
        test,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.add(w);
    });
  }

  /** Absolute console offset, stable across trimming of the in-memory buffer. */
  private mark(): number {
    return this.dropped + this.text.length;
  }

  private since(abs: number): number {
    return Math.max(0, abs - this.dropped);
  }

  async waitBooted(manifest: E2eManifest, timeoutMs: number): Promise<void> {
    await this.waitFor(() => this.text.includes(manifest.serveMarker), timeoutMs, `the guest to boot (${manifest.serveMarker})`);
  }

  private write(s: string): void {
    this.child.stdin?.write(s);
  }

  run(cmd: string, opts: RunOptions = {}): Promise<RunResult> {
    const next = this.queue.then(() => this.runNow(cmd, opts.timeoutMs ?? 30000));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(cmd: string, timeoutMs: number): Promise<RunResult> {
    if (this.wedged !== undefined) {
      throw new GuestError(`guest ${this.name} no longer answers (stuck in: ${this.wedged})`, this.tail());
    }
    if (this.exitedFlag) throw new GuestExitedError(`guest ${this.name}: QEMU has exited`, this.tail());
    const id = ++this.seq;
    const line = encodeRequest(id, cmd);
    const start = this.mark();
    let result: RunResult | undefined;
    const test = (): boolean => {
      result = parseResult(this.text, id, this.since(start));
      return result !== undefined;
    };
    this.write(line);
    try {
      await this.waitFor(test, timeoutMs, `command ${id} to finish: ${cmd}`);
    } catch (e) {
      if (!(e instanceof GuestTimeoutError)) throw e;
      // interrupt it (Ctrl-C); a task stuck in the kernel cannot be, then the guest is wedged
      this.write('\x03');
      try {
        await this.waitFor(test, 3000, `command ${id} to stop after Ctrl-C`);
      } catch {
        this.wedged = cmd;
      }
      throw e;
    }
    if (result === undefined) throw new GuestError(`guest ${this.name}: lost the result of command ${id}`, this.tail());
    return result;
  }

  async check(cmd: string, opts: RunOptions = {}): Promise<string> {
    const r = await this.run(cmd, opts);
    if (r.code !== 0) throw new GuestCommandError(cmd, r);
    return r.output;
  }

  async background(cmd: string): Promise<BackgroundHandle> {
    const n = ++this.bgSeq;
    const logPath = `/tmp/gf-bg-${n}.log`;
    // setsid makes the command a session and process-group leader (the serving shell runs
    // it without job control, so setsid need not fork): kill() can signal the whole group
    const out = await this.check(`setsid sh -c ${shellQuote(cmd)} </dev/null >${logPath} 2>&1 & echo $!`);
    const pid = Number(out.trim());
    if (!Number.isInteger(pid) || pid <= 1) throw new GuestError(`guest ${this.name}: background start gave no pid: ${out}`, this.tail());
    const running = async (): Promise<boolean> => {
      const r = await this.run(`s=$(cat /proc/${pid}/stat 2>/dev/null) || exit 1; case "$s" in *") Z "*) exit 1;; esac`);
      return r.code === 0;
    };
    return {
      pid,
      logPath,
      read: () => this.check(`cat ${logPath}`),
      running,
      kill: async (signal = 'TERM') => {
        await this.run(`kill -${signal} -${pid} 2>/dev/null || kill -${signal} ${pid} 2>/dev/null; true`);
        const deadline = Date.now() + 10000;
        while (await running()) {
          if (Date.now() > deadline) throw new GuestTimeoutError(`guest ${this.name}: pid ${pid} survived SIG${signal}`, this.tail());
          await new Promise((r) => setTimeout(r, 100));
        }
      },
    };
  }

  async writeFile(path: string, content: string | Uint8Array): Promise<void> {
    const b64 = Buffer.from(content).toString('base64');
    const chunk = 2400; // base64 of the wrapping script stays under MAX_REQUEST_LINE
    await this.check(`: > ${shellQuote(path)}`);
    for (let i = 0; i < b64.length; i += chunk) {
      await this.check(`printf '%s' '${b64.slice(i, i + chunk)}' | base64 -d >> ${shellQuote(path)}`);
    }
  }

  async dmesg(): Promise<string> {
    return this.check('dmesg');
  }

  async shutdown(opts: { readonly timeoutMs?: number } = {}): Promise<number | null> {
    if (this.exitedFlag) return this.exitCode;
    const timeoutMs = opts.timeoutMs ?? 15000;
    if (this.wedged === undefined) {
      // not through run(): the guest powers off before it could print an end marker
      await this.queue;
      this.write(encodeRequest(++this.seq, 'poweroff -f'));
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exitPromise.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), this.wedged === undefined ? timeoutMs : 0);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) this.child.kill('SIGKILL');
    return this.exitPromise;
  }

  kill(): void {
    if (!this.exitedFlag) this.child.kill('SIGKILL');
  }

  exitedPromise(): Promise<number | null> {
    return this.exitPromise;
  }
}

/**
 * Boots a guest and resolves once its command server is ready. On failure QEMU is killed
 * and the error includes the console tail (and QEMU's stderr, e.g. "Failed to connect").
 */
export async function bootGuest(opts: BootOptions): Promise<Guest> {
  const manifest = opts.manifest ?? loadManifest();
  const g = new QemuGuest(manifest, opts);
  try {
    await g.waitBooted(manifest, opts.timeoutMs ?? 120000);
  } catch (e) {
    g.kill();
    await g.exitedPromise();
    throw e;
  }
  return g;
}
