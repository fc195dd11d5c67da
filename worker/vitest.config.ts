import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.jsonc" },
      remoteBindings: false,
      // A small room, so the room-full answer is quick to reach.
      miniflare: { bindings: { MAX_PEERS_PER_ROOM: "3" } },
    }),
  ],
});
