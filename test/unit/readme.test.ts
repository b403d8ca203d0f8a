import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { withTable } from '../../scripts/configTable.js';
import { configKeys } from '../../src/config.js';

describe('README', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it('carries the configuration table generated from the schema (run `npm run docs` after changing it)', () => {
    expect(readme).toBe(withTable(readme));
    for (const { key } of configKeys()) expect(readme).toContain(`\`${key}\``);
  });

  it('shows the two quick-start commands', () => {
    const firstScreen = readme.split('\n').slice(0, 20).join('\n');
    expect(firstScreen).toContain('npm run demo');
    expect(firstScreen).toContain('npm test');
  });
});
