// Builds the web UI into dist/, which the query crate embeds in the binary
// (query/src/ui.rs serves it under /ui/ and the page at /).
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/ui/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    chunkSizeWarningLimit: 1024,
  },
});
