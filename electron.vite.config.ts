import { resolve } from 'node:path';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'electron-vite';
import type { Plugin } from 'vite';

const STRICT_SCRIPT_SRC = "script-src 'self'";

/**
 * Adds 'unsafe-inline' to the page's script-src on the dev server only. @vitejs/plugin-react
 * injects the React Refresh preamble there as an inline script, which the strict policy of
 * src/renderer/index.html blocks. Built pages keep the strict policy.
 */
function allowInlineScriptsInDev(): Plugin {
  return {
    name: 'attune:dev-inline-scripts',
    apply: 'serve',
    transformIndexHtml: {
      order: 'pre',
      handler(html) {
        if (!html.includes(STRICT_SCRIPT_SRC)) {
          throw new Error(
            `src/renderer/index.html: the CSP no longer contains "${STRICT_SCRIPT_SRC}". ` +
              'Update allowInlineScriptsInDev in electron.vite.config.ts to match it.',
          );
        }
        return html.replace(STRICT_SCRIPT_SRC, `${STRICT_SCRIPT_SRC} 'unsafe-inline'`);
      },
    },
  };
}

export default defineConfig({
  // Entry points follow the electron-vite defaults: src/main/index.ts, src/preload/index.ts and
  // src/renderer/index.html. Output goes to out/{main,preload,renderer}.
  main: {},
  preload: {
    build: {
      // A sandboxed preload cannot load ES modules or other files, so it is one CommonJS bundle.
      rolldownOptions: {
        output: { format: 'cjs', entryFileNames: '[name].cjs' },
      },
    },
  },
  renderer: {
    root: resolve(import.meta.dirname, 'src/renderer'),
    plugins: [react(), allowInlineScriptsInDev()],
  },
});
