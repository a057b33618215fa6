import type { BootMode, ImageVersion } from "./bindings";

/** A file name → an image name that passes the Rust rules (lowercase DNS label). */
export function imageNameFromPath(path: string): string {
  const base = path.split(/[\\/]/).pop() ?? "";
  const stem = base.replace(/\.(qcow2|img|raw|qcow)$/i, "");
  return stem
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/g, "");
}

export function bootText(boot: BootMode): string {
  return boot.kind === "disk" ? `disk (${boot.firmware.toUpperCase()})` : `kernel: ${boot.cmdline}`;
}

/** Versions grouped by image, newest image first by name order kept from the Rust side. */
export function groupByImage(versions: ImageVersion[]): Map<string, ImageVersion[]> {
  const out = new Map<string, ImageVersion[]>();
  for (const v of versions) {
    const list = out.get(v.image) ?? [];
    list.push(v);
    out.set(v.image, list);
  }
  return out;
}
