/**
 * Argument helpers shared by `gpio-fabric agent` and `gpio-fabric up`, and the QEMU
 * command-line snippet that attaches a VM to an agent socket.
 */
import { Pull } from '../../common/src/line-model.ts';
import { UsageError } from './command.ts';

export function intArg(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}, not "${v}"`);
  return Number(v);
}

export function pullArg(v: string | undefined): Pull {
  switch (v) {
    case undefined:
    case 'none':
      return Pull.NONE;
    case 'up':
      return Pull.UP;
    case 'down':
      return Pull.DOWN;
    default:
      throw new UsageError(`--pull must be up, down or none, not "${v}"`);
  }
}

export function namesArg(v: string | undefined, ngpio: number): string[] {
  if (v === undefined || v === '') return [];
  const names = v.split(',');
  if (names.length > ngpio) throw new UsageError(`--names lists ${names.length} names for ${ngpio} lines`);
  while (names.length < ngpio) names.push('');
  return names;
}

/** The QEMU arguments that attach a VM to the agent listening on `socketPath`. */
export function qemuArgs(chip: string, socketPath: string, memory = '1G'): string {
  const id = `gpio-${chip}`.replace(/[^A-Za-z0-9_-]/g, '_');
  return [
    `-m ${memory} -object memory-backend-memfd,id=mem,size=${memory},share=on -machine memory-backend=mem`,
    `-chardev socket,id=${id},path=${socketPath}`,
    `-device vhost-user-gpio-pci,chardev=${id},id=${id}`,
  ].join(' \\\n    ');
}

export const QEMU_NOTE = 'Guest RAM must be shared (memory-backend-memfd with share=on, size equal to -m); QEMU >= 9 is needed for guest interrupts (7.2 never offers VIRTIO_GPIO_F_IRQ); the agent must listen before QEMU starts.';
