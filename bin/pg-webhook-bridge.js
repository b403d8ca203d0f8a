#!/usr/bin/env node
// Runs the TypeScript sources through tsx in a checkout (dev dependencies installed), and the
// compiled dist/ in a production install or image.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli.ts', import.meta.url);
const compiled = new URL('../dist/cli.js', import.meta.url);
let cli;
if (existsSync(source) && (await canLoad('tsx/esm/api'))) {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import(source.href);
} else {
  cli = await import(compiled.href);
}
await cli.main(process.argv);

async function canLoad(name) {
  try {
    await import.meta.resolve(name);
    return true;
  } catch {
    return false;
  }
}
