/**
 * `npm run bench [-- suite...]`: runs the named benchmark suites (default: all) one after
 * another. Benchmarks are scripts, not tests: they print figures and write JSON results.
 */
import { suites } from './suites.ts';

const names = process.argv.slice(2);
if (names.includes('--help') || names.includes('-h')) {
  console.log(`Usage: npm run bench [-- SUITE...]\nSuites: ${Object.keys(suites).join(', ')}`);
  process.exit(0);
}
const unknown = names.filter((n) => !(n in suites));
if (unknown.length > 0) {
  console.error(`unknown suite(s): ${unknown.join(', ')} (known: ${Object.keys(suites).join(', ')})`);
  process.exit(2);
}
for (const name of names.length > 0 ? names : Object.keys(suites)) {
  const load = suites[name];
  if (load === undefined) continue;
  const suite = await load();
  console.log(`\n=== ${name}: ${suite.description}\n`);
  await suite.run();
}
