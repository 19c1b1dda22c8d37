import { deviceSuite } from './device-suite.ts';
import { remoteFactory } from './fixtures.ts';

deviceSuite(remoteFactory());
