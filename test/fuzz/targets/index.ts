/** Every fuzz target, in run order. */
import type { FuzzTarget } from '../target.ts';
import { codecTarget } from './codec.ts';
import { gpioDeviceTarget } from './gpio-device.ts';
import { virtqueueTarget } from './virtqueue.ts';

export const allTargets: readonly FuzzTarget[] = [codecTarget, virtqueueTarget, gpioDeviceTarget];
