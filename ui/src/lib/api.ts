// Calls into the Rust side with one error shape. The generated bindings return
// {status, data | error}; Tauri itself may also reject with a plain string (an unknown command,
// a bad argument), which is turned into the same ApiError shape here.
import type { ApiError } from "./bindings";

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: ApiError };

type Generated<T> = { status: "ok"; data: T } | { status: "error"; error: ApiError };

export async function call<T>(request: Promise<Generated<T>>): Promise<Outcome<T>> {
  try {
    const result = await request;
    return result.status === "ok"
      ? { ok: true, value: result.data }
      : { ok: false, error: result.error };
  } catch (e) {
    return {
      ok: false,
      error: { code: "internal", message: `The desktop app failed to run the request: ${String(e)}`, detail: null },
    };
  }
}
