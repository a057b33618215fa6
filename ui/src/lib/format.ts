const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 8589934592 → "8.0 GiB" */
export function bytes(n: number): string {
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** RFC 3339 → local time "HH:MM:SS" when it is today, else the date "YYYY-MM-DD". */
export function when(rfc3339: string, now: Date = new Date()): string {
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  const pad = (x: number) => String(x).padStart(2, "0");
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const today = `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
  return date === today ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : date;
}

/** The same rule as HostName::parse in Rust; the Rust side stays authoritative. */
export function hostNameProblem(name: string): string | null {
  if (name.length === 0) return null;
  if (name.length > 63) return `at most 63 characters (this is ${name.length})`;
  const bad = [...name].find((c) => !/[a-z0-9-]/.test(c));
  if (bad !== undefined) return `"${bad}" is not allowed; use lowercase letters a-z, digits and "-"`;
  if (name.startsWith("-") || name.endsWith("-")) return `must not start or end with "-"`;
  return null;
}
