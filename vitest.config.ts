import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    environment: 'node',
    // Engine tests train small models on the wasm backend, which takes tens of seconds per test.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // At most two test files run at once, so a run leaves the rest of the machine usable.
    maxWorkers: 2,
    // A committed `.only` would silently skip the rest of the suite, so it fails the run.
    allowOnly: false,
  },
});
