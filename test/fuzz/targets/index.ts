/** Every fuzz target, in run order. */
import type { FuzzTarget } from '../target.ts';
import { codecTarget } from './codec.ts';
import { gpioDeviceTarget } from './gpio-device.ts';
import { sessionTarget } from './session.ts';
import { topologyTarget } from './topology.ts';
import { virtqueueTarget } from './virtqueue.ts';

export const allTargets: readonly FuzzTarget[] = [codecTarget, sessionTarget, virtqueueTarget, gpioDeviceTarget, topologyTarget];
