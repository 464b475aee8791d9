// The signed-in session lives in sessionStorage only: it ends with the tab and
// is never written to logs, URLs (except WebSocket access_token) or the DOM.

export type Session =
  | { kind: "admin"; token: string }
  | { kind: "tenant"; token: string; tenantId: string };

const KEY = "voxgate.session";

export function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as Session;
    if (parsed.kind === "admin" && typeof parsed.token === "string") return parsed;
    if (
      parsed.kind === "tenant" &&
      typeof parsed.token === "string" &&
      typeof parsed.tenantId === "string"
    )
      return parsed;
  } catch {
    // A corrupt entry is the same as none.
  }
  return null;
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}
