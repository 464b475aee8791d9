// The console shell: sign-in, navigation and page dispatch.
import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { Api, errorText, redeemSigninCode, tenantBase } from "./api";
import { Link, match, navigate, usePath } from "./router";
import { clearSession, loadSession, saveSession, type Session } from "./session";
import { AgentDetailPage, AgentsPage } from "./pages/agents";
import {
  CallDetailPage,
  CallsPage,
  DialPolicyPage,
  LivePage,
  NumbersPage,
  SecretsPage,
  TransferTargetsPage,
  TrunksPage,
} from "./pages/tenant";
import { MetricsPage, StatusPage, TenantsPage } from "./pages/admin";

function SignIn(props: { onSignedIn: (session: Session) => void; linkError: string | null }) {
  const [mode, setMode] = useState<"tenant" | "admin">("tenant");
  const [tenantId, setTenantId] = useState("");
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    const secret = token.trim();
    const api = new Api(secret);
    try {
      if (mode === "admin") {
        await api.get("/system/tenants");
        props.onSignedIn({ kind: "admin", token: secret });
      } else {
        const id = tenantId.trim();
        await api.get(`${tenantBase(id)}/quotas`);
        props.onSignedIn({ kind: "tenant", token: secret, tenantId: id });
      }
    } catch (err) {
      setError(`Sign-in failed: ${errorText(err)}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="signin">
      <h1>voxgate console</h1>
      {props.linkError && (
        <p className="error" role="alert">
          {props.linkError}
        </p>
      )}
      <form onSubmit={submit} className="card" aria-label="Sign in">
        <fieldset>
          <legend>Sign in with</legend>
          <label className="inline">
            <input
              type="radio"
              name="mode"
              checked={mode === "tenant"}
              onChange={() => setMode("tenant")}
            />
            a tenant API key
          </label>
          <label className="inline">
            <input
              type="radio"
              name="mode"
              checked={mode === "admin"}
              onChange={() => setMode("admin")}
            />
            the admin token
          </label>
        </fieldset>
        {mode === "tenant" && (
          <label>
            Tenant ID
            <input
              name="tenant_id"
              value={tenantId}
              onChange={(e) => setTenantId(e.target.value)}
              placeholder="t_…"
              required
              autoComplete="off"
            />
          </label>
        )}
        <label>
          {mode === "admin" ? "Admin token" : "API key"}
          <input
            name="token"
            type="password"
            value={token}
            onChange={(e) => setToken(e.target.value)}
            required
            autoComplete="off"
          />
        </label>
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <p className="muted">The token is kept in this tab only (session storage).</p>
      </form>
    </main>
  );
}

const TENANT_PAGES: [string, string][] = [
  ["agents", "Agents"],
  ["numbers", "Numbers"],
  ["secrets", "Secrets"],
  ["calls", "Calls"],
  ["live", "Live feed"],
  ["transfer-targets", "Transfer targets"],
  ["dial-policy", "Dial policy"],
  ["trunks", "Trunks"],
];

const ADMIN_PAGES: [string, string][] = [
  ["tenants", "Tenants"],
  ["status", "Status"],
  ["metrics", "Live metrics"],
];

function tenantPage(api: Api, tenantId: string, rest: string) {
  const p = (pattern: string) => match(pattern, rest);
  let params: Record<string, string> | null;
  if ((params = p("/agents/:agentId")))
    return <AgentDetailPage api={api} tenantId={tenantId} agentId={params.agentId} />;
  if ((params = p("/calls/:callId")))
    return <CallDetailPage api={api} tenantId={tenantId} callId={params.callId} />;
  switch (rest) {
    case "/agents":
      return <AgentsPage api={api} tenantId={tenantId} />;
    case "/numbers":
      return <NumbersPage api={api} tenantId={tenantId} />;
    case "/secrets":
      return <SecretsPage api={api} tenantId={tenantId} />;
    case "/calls":
      return <CallsPage api={api} tenantId={tenantId} />;
    case "/live":
      return <LivePage api={api} tenantId={tenantId} />;
    case "/transfer-targets":
      return <TransferTargetsPage api={api} tenantId={tenantId} />;
    case "/dial-policy":
      return <DialPolicyPage api={api} tenantId={tenantId} />;
    case "/trunks":
      return <TrunksPage api={api} tenantId={tenantId} />;
  }
  return <NotFound />;
}

function NotFound() {
  return (
    <section className="card">
      <h2>Page not found</h2>
      <p>
        <Link to="/">Back to the start page</Link>
      </p>
    </section>
  );
}

/** Redeem a one-time sign-in link's code (once, even when effects run twice). */
function useSigninLink(
  code: string | null,
  onSignedIn: (session: Session) => void,
): { busy: boolean; error: string | null } {
  const [state, setState] = useState({ busy: code !== null, error: null as string | null });
  const started = useRef(false);
  useEffect(() => {
    if (code === null || started.current) return;
    started.current = true;
    redeemSigninCode(code)
      .then((granted) => {
        setState({ busy: false, error: null });
        onSignedIn({ kind: "tenant", token: granted.token, tenantId: granted.tenant_id });
      })
      .catch((err: unknown) =>
        setState({
          busy: false,
          error:
            `This sign-in link did not work (${errorText(err)}). A link works once and ` +
            "expires after a few minutes: restart `make run` for a new one, or sign in with an API key.",
        }),
      );
  }, [code, onSignedIn]);
  return state;
}

export function App(props: { signinCode: string | null }) {
  const [session, setSession] = useState<Session | null>(loadSession);
  const path = usePath();
  const api = useMemo(() => (session ? new Api(session.token) : null), [session]);
  const signedInByLink = useRef((next: Session) => {
    saveSession(next);
    setSession(next);
    navigate(next.kind === "admin" ? "/admin/tenants" : `/t/${next.tenantId}/agents`, true);
  }).current;
  const link = useSigninLink(props.signinCode, signedInByLink);

  if (link.busy) {
    return (
      <main className="signin">
        <h1>voxgate console</h1>
        <p role="status">Signing in with the one-time link…</p>
      </main>
    );
  }

  if (!session || !api) {
    return (
      <SignIn
        linkError={link.error}
        onSignedIn={(next) => {
          saveSession(next);
          setSession(next);
          navigate(next.kind === "admin" ? "/admin/tenants" : `/t/${next.tenantId}/agents`, true);
        }}
      />
    );
  }

  const signOut = () => {
    clearSession();
    setSession(null);
    navigate("/", true);
  };

  // Which tenant's pages are open: a tenant key has one; the admin may open any.
  const tenantMatch = /^\/t\/([^/]+)(\/.*)?$/.exec(path);
  const openTenant = tenantMatch ? decodeURIComponent(tenantMatch[1]) : null;
  const rest = tenantMatch ? (tenantMatch[2] ?? "/agents") : path;

  let page;
  if (path === "/" || path === "") {
    page = null;
    queueMicrotask(() =>
      navigate(session.kind === "admin" ? "/admin/tenants" : `/t/${session.tenantId}/agents`, true),
    );
  } else if (openTenant) {
    page =
      session.kind === "tenant" && openTenant !== session.tenantId ? (
        <NotFound />
      ) : (
        tenantPage(api, openTenant, rest)
      );
  } else if (session.kind === "admin" && path === "/admin/tenants") {
    page = <TenantsPage api={api} />;
  } else if (session.kind === "admin" && path === "/admin/status") {
    page = <StatusPage api={api} />;
  } else if (session.kind === "admin" && path === "/admin/metrics") {
    page = <MetricsPage api={api} />;
  } else {
    page = <NotFound />;
  }

  const tenantForNav = session.kind === "tenant" ? session.tenantId : openTenant;

  return (
    <div className="shell">
      <header className="top">
        <span className="brand">voxgate</span>
        <span className="who">
          {session.kind === "admin" ? "admin" : `tenant ${session.tenantId}`}
        </span>
        <button type="button" className="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      <nav aria-label="Main">
        {session.kind === "admin" && (
          <>
            <h3>System</h3>
            <ul>
              {ADMIN_PAGES.map(([slug, title]) => (
                <li key={slug}>
                  <Link to={`/admin/${slug}`} current={path === `/admin/${slug}`}>
                    {title}
                  </Link>
                </li>
              ))}
            </ul>
          </>
        )}
        {tenantForNav && (
          <>
            <h3>Tenant {session.kind === "admin" ? tenantForNav : ""}</h3>
            <ul>
              {TENANT_PAGES.map(([slug, title]) => (
                <li key={slug}>
                  <Link
                    to={`/t/${tenantForNav}/${slug}`}
                    current={rest.startsWith(`/${slug}`) && openTenant !== null}
                  >
                    {title}
                  </Link>
                </li>
              ))}
            </ul>
          </>
        )}
      </nav>
      <main className="content">{page}</main>
    </div>
  );
}
