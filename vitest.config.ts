import { defineConfig } from 'vitest/config';

// Two projects: unit tests need nothing; integration files share one Postgres cluster started in
// globalSetup (each file makes its own database and slot), so they may run in parallel. Two workers
// suit the 2-core machines we run on.
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/helpers/globalSetup.ts'],
          // The leak guard: after each file, every handle it opened must be closed.
          setupFiles: ['test/helpers/leakGuardSetup.ts'],
          testTimeout: 180_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
