// Admin pages (admin token): tenants, system status and live system metrics.
import { useState, type FormEvent } from "react";
import { when, type Api, type SystemStatus, type Tenant } from "../api";
import { Empty, ErrorBox, Notice, Section, useAction, useLoad } from "../common";
import { Link } from "../router";
import { useFeed } from "./tenant";

export function TenantsPage(props: { api: Api }) {
  const tenants = useLoad(() => props.api.get<{ tenants: Tenant[] }>("/system/tenants"), []);
  const [name, setName] = useState("");
  const [created, setCreated] = useState<{ id: string; name: string; api_key: string } | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const action = useAction();

  const create = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      const body = await props.api.json<{ id: string; name: string; api_key: string }>(
        "POST",
        "/system/tenants",
        { name: name.trim() },
      );
      setName("");
      setCreated(body);
      tenants.reload();
    });
  };

  const toggle = (tenant: Tenant) => {
    const verb = tenant.status === "active" ? "suspend" : "resume";
    void action.run(async () => {
      await props.api.json("POST", `/system/tenants/${encodeURIComponent(tenant.id)}/${verb}`);
      setNotice(`${verb === "suspend" ? "Suspended" : "Resumed"} ${tenant.name}.`);
      tenants.reload();
    });
  };

  const list = tenants.data?.tenants ?? [];
  return (
    <>
      <h1>Tenants</h1>
      <Notice text={notice} />
      <Section title="All tenants">
        <ErrorBox error={tenants.error ?? action.error} />
        {!tenants.loading && list.length === 0 && <Empty what="tenants" />}
        {list.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>ID</th>
                <th>Status</th>
                <th>Max calls</th>
                <th>Max workers</th>
                <th>Created</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((t) => (
                <tr key={t.id}>
                  <td>
                    <Link to={`/t/${t.id}/agents`}>{t.name}</Link>
                  </td>
                  <td className="mono">{t.id}</td>
                  <td>{t.status}</td>
                  <td>{t.quotas.max_concurrent_calls}</td>
                  <td>{t.quotas.max_workers}</td>
                  <td>{when(t.created_at)}</td>
                  <td>
                    <button
                      type="button"
                      className={t.status === "active" ? "danger" : ""}
                      onClick={() => toggle(t)}
                      disabled={action.busy}
                    >
                      {t.status === "active" ? "Suspend" : "Resume"}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="New tenant">
        <form onSubmit={create} className="row-form" aria-label="Create tenant">
          <label>
            Name
            <input name="tenant_name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={100} />
          </label>
          <button type="submit" disabled={action.busy}>
            Create tenant
          </button>
        </form>
        {created && (
          <div className="notice" role="status">
            <p>
              Created {created.name} (<span className="mono">{created.id}</span>). Its first API key is shown this
              once; copy it now:
            </p>
            <p>
              <code className="secret-once">{created.api_key}</code>{" "}
              <button type="button" onClick={() => void navigator.clipboard?.writeText(created.api_key)}>
                Copy
              </button>{" "}
              <button type="button" onClick={() => setCreated(null)}>
                Done
              </button>
            </p>
          </div>
        )}
      </Section>
    </>
  );
}

export function StatusPage(props: { api: Api }) {
  const status = useLoad(() => props.api.get<SystemStatus>("/system/status"), []);
  const s = status.data;
  return (
    <>
      <h1>System status</h1>
      <p>
        <button type="button" onClick={status.reload}>
          Refresh
        </button>{" "}
        {s?.draining && <strong className="error">Draining: no new calls are accepted.</strong>}
      </p>
      <ErrorBox error={status.error} />
      {s && (
        <>
          <Section title="Tenants">
            <table>
              <thead>
                <tr>
                  <th>Tenant</th>
                  <th>Status</th>
                  <th>Calls</th>
                  <th>Workers</th>
                  <th>Calls/s</th>
                </tr>
              </thead>
              <tbody>
                {s.tenants.map((t) => (
                  <tr key={t.id}>
                    <td>
                      <Link to={`/t/${t.id}/agents`}>{t.name}</Link>
                    </td>
                    <td>{t.status}</td>
                    <td>
                      {t.live.calls ?? 0} / {t.quotas.max_concurrent_calls}
                    </td>
                    <td>
                      {t.live.workers ?? 0} / {t.quotas.max_workers}
                    </td>
                    <td>
                      {(t.live.calls_per_second ?? 0).toFixed(2)} / {t.quotas.max_cps}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
          <Section title="Workers">
            {s.workers.length === 0 ? (
              <Empty what="workers" />
            ) : (
              <table>
                <thead>
                  <tr>
                    <th>PID</th>
                    <th>Tenant</th>
                    <th>Calls</th>
                    <th>CPU %</th>
                    <th>RSS MB</th>
                  </tr>
                </thead>
                <tbody>
                  {s.workers.map((w) => (
                    <tr key={w.pid}>
                      <td>{w.pid}</td>
                      <td className="mono">{w.tenant_id ?? "—"}</td>
                      <td>{w.calls}</td>
                      <td>{w.cpu_percent.toFixed(1)}</td>
                      <td>{w.rss_mb.toFixed(0)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
          <Section title="Live calls">
            {s.calls.length === 0 ? (
              <Empty what="live calls" />
            ) : (
              <table>
                <thead>
                  <tr>
                    <th>Call</th>
                    <th>Tenant</th>
                    <th>Agent</th>
                    <th>Provider</th>
                    <th>Started</th>
                  </tr>
                </thead>
                <tbody>
                  {s.calls.map((c) => (
                    <tr key={c.id}>
                      <td>
                        <Link to={`/t/${c.tenant_id}/calls/${c.id}`}>{c.id}</Link>
                      </td>
                      <td className="mono">{c.tenant_id}</td>
                      <td className="mono">{c.agent_id}</td>
                      <td>{c.provider}</td>
                      <td>{when(c.started_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
          <Section title="Trunk registrations">
            {(s.trunk_registrations ?? []).length === 0 ? (
              <Empty what="trunk registrations" />
            ) : (
              <table>
                <thead>
                  <tr>
                    <th>Tenant</th>
                    <th>Trunk</th>
                    <th>State</th>
                    <th>Host</th>
                    <th>Failures</th>
                    <th>Last error</th>
                  </tr>
                </thead>
                <tbody>
                  {(s.trunk_registrations ?? []).map((r) => (
                    <tr key={`${r.tenant_id}/${r.trunk_id}`}>
                      <td className="mono">{r.tenant_id}</td>
                      <td className="mono">{r.trunk_id}</td>
                      <td>{r.state}</td>
                      <td>{r.host ?? "—"}</td>
                      <td>{r.failures}</td>
                      <td>{r.last_error ?? ""}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
          <Section title="Limits">
            <pre>{JSON.stringify(s.limits, null, 2)}</pre>
          </Section>
        </>
      )}
    </>
  );
}

export function MetricsPage(props: { api: Api }) {
  const feed = useFeed(props.api.socketUrl("/system/metrics/ws", { interval: "2" }), 60);
  const latest = feed.messages[0];
  return (
    <>
      <h1>Live metrics</h1>
      <p role="status">Feed: {feed.state}</p>
      <Section title="Latest sample">
        {latest ? (
          <>
            <dl className="facts" aria-label="Latest metrics">
              <dt>At</dt>
              <dd>{when(Number(latest.at))}</dd>
              <dt>Tenants</dt>
              <dd>{String(latest.tenants ?? "—")}</dd>
              <dt>Active calls</dt>
              <dd>{String(latest.active_calls ?? "—")}</dd>
              <dt>Workers</dt>
              <dd>{String(latest.workers ?? "—")}</dd>
              <dt>Draining</dt>
              <dd>{latest.draining ? "yes" : "no"}</dd>
            </dl>
            <details>
              <summary>Full sample</summary>
              <pre>{JSON.stringify(latest, null, 2)}</pre>
            </details>
          </>
        ) : (
          <p className="muted">Waiting for a sample…</p>
        )}
      </Section>
      <Section title="Recent samples">
        <ul className="feed">
          {feed.messages.slice(1, 20).map((m, i) => (
            <li key={feed.messages.length - i}>
              <code>{JSON.stringify(m)}</code>
            </li>
          ))}
        </ul>
      </Section>
    </>
  );
}
