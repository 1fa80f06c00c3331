// The console is built at set-up (scripts/assets.sh) into the gateway's static folder, which
// serves it at /console/. Everything it needs is in the bundle: no request leaves the host.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

export default defineConfig({
  base: '/console/',
  plugins: [vue()],
  build: {
    outDir: fileURLToPath(new URL('../api/static/console', import.meta.url)),
    emptyOutDir: true,
    // the duty room's browsers: recent Chromium-based ones (360, QQ, Edge) and phones
    target: 'es2020',
    chunkSizeWarningLimit: 800,
  },
})
