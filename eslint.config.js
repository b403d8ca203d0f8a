// Lint rules that guard what reviews miss: promises nobody awaits, promises handed where a callback
// is expected, unused code, import cycles, and imports that run against the data flow.
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/**
 * The pipeline's stages in data-flow order. A stage may import from the stages before it (and from the
 * shared leaves in src/), never from one after it: what an earlier stage needs from a later one is an
 * interface declared where it is consumed and passed in.
 */
const STAGES = ['replication', 'decode', 'twenty', 'route', 'store', 'webhooks', 'deliver', 'http'];
const stageZones = STAGES.slice(0, -1).map((stage, index) => ({
  target: `./src/${stage}`,
  from: STAGES.slice(index + 1).map((later) => `./src/${later}`),
  message: `src/${stage} runs before these stages in the data flow: declare what it needs from them as an interface in src/${stage}/types.ts and pass it in`,
}));

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'coverage/', 'test/fixtures/pgoutput/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver-next': [createTypeScriptImportResolver()] },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      // Control characters are matched on purpose: terminal output and log text are sanitised with them.
      'no-control-regex': 'off',
      // A variable a cleanup closure reads before start-up assigns it stays `let`.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones: stageZones }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
