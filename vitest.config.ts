import { defineConfig } from 'vitest/config';

// Integration files share one Postgres cluster (started in globalSetup); each file makes its own
// database and slot, so files may run in parallel. Two workers suit the 2-core machines we run on.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/globalSetup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
