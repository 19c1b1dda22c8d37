#!/usr/bin/env node
// gpio-fabric: the one command-line entry point (service, agent, operator tool).
// TypeScript sources run through tsx; nothing is compiled ahead of time.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../services/cli/src/main.ts');
process.exitCode = await main(process.argv.slice(2));
