// Builds the console into engine/console/static/: one script, one style sheet, the page.
// The output depends on the sources and the pinned packages only (no dates, no hashes of
// paths), so CI can rebuild and compare it with what is committed.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "engine", "console", "static");
mkdirSync(out, { recursive: true });

await build({
  absWorkingDir: here,
  entryPoints: { console: "src/index.jsx" },
  outdir: out,
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "eof",
  charset: "utf8",
  sourcemap: false,
  logLevel: "warning",
});
await build({
  absWorkingDir: here,
  entryPoints: { console: "src/console.css" },
  outdir: out,
  bundle: true,
  minify: true,
  logLevel: "warning",
});
copyFileSync(join(here, "index.html"), join(out, "index.html"));
