// Unit tests: Vitest in jsdom with Testing Library, JSX compiled like the
// build does (classic runtime: React.createElement).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  oxc: { jsx: { runtime: 'classic' } },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}', '*.test.mjs'],
    setupFiles: ['src/testing/setup.ts'],
    testTimeout: 30_000,
    // Grafana's ES modules import CommonJS packages (moment-timezone, …) by
    // named exports, which Node refuses and Vite's transform allows.
    // React 19's development build advises the automatic JSX runtime; the
    // plugin keeps React.createElement on purpose (build.mjs).
    onConsoleLog: (log) => !log.includes('outdated JSX transform'),
    server: { deps: { inline: [/@grafana\//] } },
  },
});
