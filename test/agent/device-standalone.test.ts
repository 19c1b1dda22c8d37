import { deviceSuite } from './device-suite.ts';
import { standaloneFactory } from './fixtures.ts';

deviceSuite(standaloneFactory());
