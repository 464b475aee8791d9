import { defineConfig } from "vite";

// The console is served by voxgate itself under /console/ from the package's
// voxgate/server/console directory, which is this build's output.
export default defineConfig({
  base: "/console/",
  build: {
    outDir: "../voxgate/server/console",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      onwarn(warning, warn) {
        // @xyflow/react marks itself "use client" for server-component bundlers; irrelevant here.
        if (warning.code === "MODULE_LEVEL_DIRECTIVE") return;
        warn(warning);
      },
    },
  },
});
