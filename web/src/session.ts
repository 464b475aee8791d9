// The signed-in session lives in sessionStorage only: it ends with the tab and
// is never written to logs, URLs (except WebSocket access_token) or the DOM. A
// one-time sign-in link (#signin=<code>) is read once and removed from the URL.

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

/**
 * The code of a one-time sign-in link (``/console/#signin=<code>``), removed from
 * the address bar at once so it stays out of history, bookmarks and screen shares.
 * Returns null when the URL carries none; a second call returns null too.
 */
export function takeSigninCode(): string | null {
  const fragment = window.location.hash.replace(/^#/, "");
  if (!fragment) return null;
  const code = new URLSearchParams(fragment).get("signin");
  if (code === null) return null;
  const url = window.location.pathname + window.location.search;
  window.history.replaceState(window.history.state, "", url);
  return code || null;
}
