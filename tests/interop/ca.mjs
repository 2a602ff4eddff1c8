// `--ca FILE` for the Node peer scripts that also use fetch: Node's fetch takes no
// authority of its own and reads NODE_EXTRA_CA_CERTS only when the process starts, so a
// script given --ca runs itself again with that set (its exit status is the script's).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** The PEM authority named by --ca (for `ws`'s `ca` option), or undefined without one. */
export function caArg() {
  const at = process.argv.indexOf("--ca");
  if (at < 0) return undefined;
  const file = process.argv[at + 1];
  if (process.env.NODE_EXTRA_CA_CERTS !== file) {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: file };
    const r = spawnSync(process.execPath, process.argv.slice(1), { stdio: "inherit", env });
    process.exit(r.status ?? 1);
  }
  return readFileSync(file);
}
