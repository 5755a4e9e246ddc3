import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // real PostgreSQL clusters are heavy; two cores: at most two test files at once
    maxWorkers: 2,
    minWorkers: 1,
  },
});
