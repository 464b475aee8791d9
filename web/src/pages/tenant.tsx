// Tenant pages other than agents: numbers, secrets, calls, live feed, transfer
// targets, dial policy and trunks.
import { useEffect, useState, type FormEvent } from "react";
import {
  tenantBase,
  when,
  type Agent,
  type Api,
  type CallDetail,
  type CallRecord,
  type DialPolicyView,
  type PhoneNumber,
  type SecretInfo,
  type TrunkView,
} from "../api";
import { Empty, ErrorBox, Notice, Section, useAction, useLoad } from "../common";
import { Link } from "../router";

interface Props {
  api: Api;
  tenantId: string;
}

// ---------------------------------------------------------------- numbers

export function NumbersPage(props: Props) {
  const base = tenantBase(props.tenantId);
  const numbers = useLoad(() => props.api.get<{ numbers: PhoneNumber[] }>(`${base}/numbers`), [base]);
  const agents = useLoad(() => props.api.get<{ agents: Agent[] }>(`${base}/agents`), [base]);
  const [number, setNumber] = useState("");
  const [provider, setProvider] = useState<"twilio" | "sip">("twilio");
  const [agentId, setAgentId] = useState("");
  const [notice, setNotice] = useState<string | null>(null);
  const action = useAction();
  const agentList = agents.data?.agents ?? [];
  const chosenAgent = agentId || agentList[0]?.id || "";
  const agentName = (id: string) => agentList.find((a) => a.id === id)?.name ?? id;

  const add = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      const created = await props.api.json<PhoneNumber>("POST", `${base}/numbers`, {
        number: number.trim(),
        provider,
        agent_id: chosenAgent,
      });
      setNotice(`Added ${created.number}.`);
      setNumber("");
      numbers.reload();
    });
  };

  const remove = (n: PhoneNumber) => {
    void action.run(async () => {
      await props.api.json("DELETE", `${base}/numbers/${encodeURIComponent(n.id)}`);
      setNotice(`Removed ${n.number}.`);
      numbers.reload();
    });
  };

  const list = numbers.data?.numbers ?? [];
  return (
    <>
      <h1>Numbers</h1>
      <Notice text={notice} />
      <Section title="Phone numbers">
        <ErrorBox error={numbers.error ?? agents.error} />
        {!numbers.loading && list.length === 0 && <Empty what="numbers" />}
        {list.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Number</th>
                <th>Provider</th>
                <th>Agent</th>
                <th>Added</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((n) => (
                <tr key={n.id}>
                  <td className="mono">{n.number}</td>
                  <td>{n.provider}</td>
                  <td>
                    <Link to={`/t/${props.tenantId}/agents/${n.agent_id}`}>{agentName(n.agent_id)}</Link>
                  </td>
                  <td>{when(n.created_at)}</td>
                  <td>
                    <button type="button" className="danger" onClick={() => remove(n)} aria-label={`Delete ${n.number}`}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Add a number">
        <form onSubmit={add} className="row-form" aria-label="Add number">
          <label>
            Number (+E.164)
            <input
              name="number"
              value={number}
              onChange={(e) => setNumber(e.target.value)}
              placeholder="+15551234567"
              pattern="\+[1-9][0-9]{6,14}"
              required
            />
          </label>
          <label>
            Provider
            <select name="provider" value={provider} onChange={(e) => setProvider(e.target.value as "twilio" | "sip")}>
              <option value="twilio">twilio</option>
              <option value="sip">sip</option>
            </select>
          </label>
          <label>
            Agent
            <select name="agent_id" value={chosenAgent} onChange={(e) => setAgentId(e.target.value)} required>
              {agentList.map((a) => (
                <option key={a.id} value={a.id}>
                  {a.name}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" disabled={action.busy || !chosenAgent}>
            Add number
          </button>
          <ErrorBox error={action.error} />
        </form>
      </Section>
    </>
  );
}

// ---------------------------------------------------------------- secrets

export function SecretsPage(props: Props) {
  const base = tenantBase(props.tenantId);
  const secrets = useLoad(() => props.api.get<{ secrets: SecretInfo[] }>(`${base}/secrets`), [base]);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [notice, setNotice] = useState<string | null>(null);
  const action = useAction();

  const store = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(value);
      } catch {
        throw new Error("The value must be a JSON object, e.g. {\"token\": \"…\"}");
      }
      const secretName = name.trim();
      await props.api.json("PUT", `${base}/secrets/${encodeURIComponent(secretName)}`, parsed);
      // The value leaves the page as soon as it is stored.
      setValue("");
      setName("");
      setNotice(`Stored secret ${secretName}.`);
      secrets.reload();
    });
  };

  const remove = (secret: SecretInfo) => {
    if (!window.confirm(`Delete secret ${secret.name}?`)) return;
    void action.run(async () => {
      await props.api.json("DELETE", `${base}/secrets/${encodeURIComponent(secret.name)}`);
      setNotice(`Deleted secret ${secret.name}.`);
      secrets.reload();
    });
  };

  const list = secrets.data?.secrets ?? [];
  return (
    <>
      <h1>Secrets</h1>
      <Notice text={notice} />
      <Section title="Stored secrets">
        <p className="muted">Values are write-only: they are encrypted at rest and never shown.</p>
        <ErrorBox error={secrets.error} />
        {!secrets.loading && list.length === 0 && <Empty what="secrets" />}
        {list.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Last written</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((s) => (
                <tr key={s.name}>
                  <td className="mono">{s.name}</td>
                  <td>{when(s.updated_at)}</td>
                  <td>
                    <button type="button" className="danger" onClick={() => remove(s)}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Write a secret">
        <form onSubmit={store} className="stack-form" aria-label="Write secret" autoComplete="off">
          <label>
            Name
            <input
              name="secret_name"
              value={name}
              onChange={(e) => setName(e.target.value)}
              pattern="[a-z0-9_\-]{1,64}"
              placeholder="twilio"
              required
            />
          </label>
          <label>
            Value (JSON object; write-only)
            <textarea
              name="secret_value"
              rows={4}
              value={value}
              onChange={(e) => setValue(e.target.value)}
              placeholder='{"account_sid": "AC…", "auth_token": "…"}'
              required
              spellCheck={false}
              className="mono"
            />
          </label>
          <button type="submit" disabled={action.busy}>
            Store secret
          </button>
          <ErrorBox error={action.error} />
        </form>
      </Section>
    </>
  );
}

// ---------------------------------------------------------------- calls

const CALL_STATUSES = ["", "ringing", "in_progress", "completed", "busy", "no_answer", "failed", "canceled"];

export function CallsPage(props: Props) {
  const base = tenantBase(props.tenantId);
  const initial = new URLSearchParams(window.location.search);
  const [filters, setFilters] = useState({
    agent_id: initial.get("agent_id") ?? "",
    provider: "",
    status: "",
    direction: "",
  });
  const [applied, setApplied] = useState(filters);
  const [pages, setPages] = useState<CallRecord[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const action = useAction();
  const agents = useLoad(() => props.api.get<{ agents: Agent[] }>(`${base}/agents`), [base]);

  const query = (extra: Record<string, string>) => {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...applied, ...extra })) if (v) params.set(k, v);
    params.set("limit", "50");
    return `${base}/calls?${params.toString()}`;
  };

  const first = useLoad(
    () => props.api.get<{ calls: CallRecord[]; next_cursor: string | null }>(query({})),
    [base, JSON.stringify(applied)],
  );
  useEffect(() => {
    if (first.data) {
      setPages(first.data.calls);
      setCursor(first.data.next_cursor ?? null);
    }
  }, [first.data]);

  const more = () => {
    if (!cursor) return;
    void action.run(async () => {
      const page = await props.api.get<{ calls: CallRecord[]; next_cursor: string | null }>(query({ cursor }));
      setPages((prev) => [...prev, ...page.calls]);
      setCursor(page.next_cursor ?? null);
    });
  };

  const apply = (event: FormEvent) => {
    event.preventDefault();
    setApplied(filters);
  };
  const set = (key: keyof typeof filters) => (e: { target: { value: string } }) =>
    setFilters({ ...filters, [key]: e.target.value });

  return (
    <>
      <h1>Calls</h1>
      <Section title="Filters">
        <form onSubmit={apply} className="row-form" aria-label="Call filters">
          <label>
            Agent
            <select name="agent_id" value={filters.agent_id} onChange={set("agent_id")}>
              <option value="">any</option>
              {(agents.data?.agents ?? []).map((a) => (
                <option key={a.id} value={a.id}>
                  {a.name}
                </option>
              ))}
            </select>
          </label>
          <label>
            Provider
            <select name="provider" value={filters.provider} onChange={set("provider")}>
              <option value="">any</option>
              <option value="twilio">twilio</option>
              <option value="sip">sip</option>
            </select>
          </label>
          <label>
            Status
            <select name="status" value={filters.status} onChange={set("status")}>
              {CALL_STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s || "any"}
                </option>
              ))}
            </select>
          </label>
          <label>
            Direction
            <select name="direction" value={filters.direction} onChange={set("direction")}>
              <option value="">any</option>
              <option value="inbound">inbound</option>
              <option value="outbound">outbound</option>
            </select>
          </label>
          <button type="submit">Apply</button>
          <button type="button" onClick={() => first.reload()}>
            Refresh
          </button>
        </form>
      </Section>
      <Section title="Call list">
        <ErrorBox error={first.error ?? action.error} />
        {!first.loading && pages.length === 0 && <Empty what="calls" />}
        {pages.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Started</th>
                <th>From</th>
                <th>To</th>
                <th>Provider</th>
                <th>Direction</th>
                <th>Status</th>
                <th>Duration</th>
              </tr>
            </thead>
            <tbody>
              {pages.map((c) => (
                <tr key={c.id}>
                  <td>
                    <Link to={`/t/${props.tenantId}/calls/${c.id}`}>{when(c.started_at ?? c.created_at)}</Link>
                  </td>
                  <td className="mono">{c.from_number}</td>
                  <td className="mono">{c.to_number}</td>
                  <td>{c.provider}</td>
                  <td>{c.direction}</td>
                  <td>{c.status}</td>
                  <td>{c.duration != null ? `${c.duration.toFixed(1)} s` : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {cursor && (
          <button type="button" onClick={more} disabled={action.busy}>
            Load more
          </button>
        )}
      </Section>
    </>
  );
}

function Recording(props: { api: Api; path: string }) {
  const [url, setUrl] = useState<string | null>(null);
  const action = useAction();
  useEffect(
    () => () => {
      if (url) URL.revokeObjectURL(url);
    },
    [url],
  );
  // Fetched with the bearer header as a blob: an <audio src> could not send it.
  const load = () =>
    void action.run(async () => {
      const blob = await props.api.blob(props.path);
      setUrl(URL.createObjectURL(blob));
    });
  return (
    <div>
      {url ? (
        <audio controls src={url} aria-label="Call recording" />
      ) : (
        <button type="button" onClick={load} disabled={action.busy}>
          {action.busy ? "Loading…" : "Load recording"}
        </button>
      )}
      <ErrorBox error={action.error} />
    </div>
  );
}

function turnText(turn: Record<string, unknown>): { who: string; text: string } {
  const who = String(turn.role ?? turn.speaker ?? turn.who ?? turn.kind ?? "turn");
  const text = String(turn.text ?? turn.transcript ?? turn.utterance ?? JSON.stringify(turn));
  return { who, text };
}

export function CallDetailPage(props: Props & { callId: string }) {
  const path = `${tenantBase(props.tenantId)}/calls/${encodeURIComponent(props.callId)}`;
  const detail = useLoad(() => props.api.get<CallDetail>(path), [path]);
  const d = detail.data;
  return (
    <>
      <p>
        <Link to={`/t/${props.tenantId}/calls`}>← Calls</Link>
      </p>
      <h1>Call {props.callId}</h1>
      <ErrorBox error={detail.error} />
      {d && (
        <>
          <dl className="facts">
            <dt>From</dt>
            <dd className="mono">{d.call.from_number}</dd>
            <dt>To</dt>
            <dd className="mono">{d.call.to_number}</dd>
            <dt>Agent</dt>
            <dd>
              <Link to={`/t/${props.tenantId}/agents/${d.call.agent_id}`}>{d.call.agent_id}</Link>
            </dd>
            <dt>Provider</dt>
            <dd>{d.call.provider}</dd>
            <dt>Direction</dt>
            <dd>{d.call.direction}</dd>
            <dt>Status</dt>
            <dd>{d.call.status}</dd>
            <dt>Started</dt>
            <dd>{when(d.call.started_at ?? d.call.created_at)}</dd>
            <dt>Ended</dt>
            <dd>{when(d.call.ended_at)}</dd>
            <dt>End reason</dt>
            <dd>{d.call.end_reason ?? "—"}</dd>
          </dl>
          <Section title="Recording">
            {d.call.recording ? <Recording api={props.api} path={`${path}/recording`} /> : <p className="muted">No recording.</p>}
          </Section>
          <Section title="Transcript">
            {d.turns.length === 0 ? (
              <Empty what="transcript turns" />
            ) : (
              <ol className="transcript">
                {d.turns.map((turn, i) => {
                  const t = turnText(turn);
                  return (
                    <li key={i}>
                      <strong>{t.who}:</strong> {t.text}
                    </li>
                  );
                })}
              </ol>
            )}
          </Section>
          <Section title="Events">
            {d.events.length === 0 ? (
              <Empty what="events" />
            ) : (
              <table>
                <thead>
                  <tr>
                    <th>At</th>
                    <th>Kind</th>
                    <th>Detail</th>
                  </tr>
                </thead>
                <tbody>
                  {d.events.map((e, i) => (
                    <tr key={i}>
                      <td>{when(e.at)}</td>
                      <td>{e.kind}</td>
                      <td>{e.detail ?? ""}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
        </>
      )}
    </>
  );
}

// ---------------------------------------------------------------- live feed

/** A WebSocket feed kept as the newest ``keep`` JSON messages. */
export function useFeed(url: string, keep = 200): { messages: Record<string, unknown>[]; state: string } {
  const [messages, setMessages] = useState<Record<string, unknown>[]>([]);
  const [state, setState] = useState("connecting");
  useEffect(() => {
    let closed = false;
    let socket: WebSocket | null = null;
    let retry: number | undefined;
    let attempts = 0;
    const open = () => {
      socket = new WebSocket(url);
      setState("connecting");
      socket.onopen = () => {
        attempts = 0;
        setState("connected");
      };
      socket.onmessage = (event: MessageEvent) => {
        try {
          const parsed = JSON.parse(String(event.data)) as Record<string, unknown>;
          setMessages((prev) => [parsed, ...prev].slice(0, keep));
        } catch {
          // Not JSON: not part of the feed's contract; ignore.
        }
      };
      socket.onclose = () => {
        if (closed) return;
        attempts += 1;
        setState("reconnecting");
        retry = window.setTimeout(open, Math.min(10000, 500 * 2 ** attempts));
      };
    };
    open();
    return () => {
      closed = true;
      window.clearTimeout(retry);
      socket?.close();
    };
  }, [url, keep]);
  return { messages, state };
}

export function LivePage(props: Props) {
  const url = props.api.socketUrl(`${tenantBase(props.tenantId)}/analytics/ws`);
  const feed = useFeed(url);
  return (
    <>
      <h1>Live feed</h1>
      <p role="status">Feed: {feed.state}</p>
      <Section title="Events (newest first)">
        {feed.messages.length === 0 ? (
          <p className="muted">Waiting for call events…</p>
        ) : (
          <ul className="feed">
            {feed.messages.map((m, i) => (
              <li key={feed.messages.length - i}>
                <strong>{String(m.type ?? m.kind ?? "event")}</strong>{" "}
                {m.call_id ? (
                  <Link to={`/t/${props.tenantId}/calls/${String(m.call_id)}`}>{String(m.call_id)}</Link>
                ) : null}{" "}
                <code>{JSON.stringify(m)}</code>
              </li>
            ))}
          </ul>
        )}
      </Section>
    </>
  );
}

// ---------------------------------------------------------------- transfer targets

export function TransferTargetsPage(props: Props) {
  const path = `${tenantBase(props.tenantId)}/transfer-targets`;
  const loaded = useLoad(() => props.api.get<{ targets: Record<string, string> }>(path), [path]);
  const [rows, setRows] = useState<[string, string][] | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const action = useAction();
  const current = rows ?? Object.entries(loaded.data?.targets ?? {});

  const update = (i: number, at: 0 | 1, value: string) => {
    const next = current.map((r) => [...r] as [string, string]);
    next[i][at] = value;
    setRows(next);
  };

  const save = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      const targets: Record<string, string> = {};
      for (const [name, number] of current) if (name.trim()) targets[name.trim()] = number.trim();
      await props.api.json("PUT", path, { targets });
      setRows(null);
      setNotice("Saved transfer targets.");
      loaded.reload();
    });
  };

  return (
    <>
      <h1>Transfer targets</h1>
      <Notice text={notice} />
      <Section title="Named targets">
        <p className="muted">A flow's transfer node names a target; the number must pass the dial policy.</p>
        <ErrorBox error={loaded.error ?? action.error} />
        <form onSubmit={save} aria-label="Transfer targets">
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Number (+E.164)</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {current.map(([name, number], i) => (
                <tr key={i}>
                  <td>
                    <input aria-label="Target name" value={name} onChange={(e) => update(i, 0, e.target.value)} pattern="[a-z][a-z0-9_\-]{0,31}" />
                  </td>
                  <td>
                    <input aria-label="Target number" value={number} onChange={(e) => update(i, 1, e.target.value)} pattern="\+[1-9][0-9]{6,14}" />
                  </td>
                  <td>
                    <button type="button" className="danger" onClick={() => setRows(current.filter((_, j) => j !== i))}>
                      Remove
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <button type="button" onClick={() => setRows([...current, ["", ""]])}>
            Add target
          </button>{" "}
          <button type="submit" disabled={action.busy}>
            Save
          </button>
        </form>
      </Section>
    </>
  );
}

// ---------------------------------------------------------------- dial policy

export function DialPolicyPage(props: Props) {
  const path = `${tenantBase(props.tenantId)}/dial-policy`;
  const loaded = useLoad(() => props.api.get<DialPolicyView>(path), [path]);
  const [home, setHome] = useState<string | null>(null);
  const [prefixes, setPrefixes] = useState<string | null>(null);
  const [premium, setPremium] = useState<boolean | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const action = useAction();
  const p = loaded.data;

  const save = (event: FormEvent) => {
    event.preventDefault();
    if (!p) return;
    void action.run(async () => {
      const homeValue = (home ?? p.home_country_code ?? "").trim();
      const list = (prefixes ?? p.allowed_prefixes.join("\n"))
        .split(/[\s,]+/)
        .map((s) => s.trim())
        .filter(Boolean);
      await props.api.json<DialPolicyView>("PUT", path, {
        home_country_code: homeValue || null,
        allowed_prefixes: list,
        allow_premium: premium ?? p.allow_premium,
      });
      setHome(null);
      setPrefixes(null);
      setPremium(null);
      setNotice("Saved dial policy.");
      loaded.reload();
    });
  };

  return (
    <>
      <h1>Dial policy</h1>
      <Notice text={notice} />
      <ErrorBox error={loaded.error ?? action.error} />
      {p && (
        <Section title="Outbound destinations">
          <p>
            Home country in effect: <strong>+{p.effective_home_country_code}</strong>
          </p>
          <form onSubmit={save} className="stack-form" aria-label="Dial policy">
            <label>
              Home country code (without +; empty = server default)
              <input value={home ?? p.home_country_code ?? ""} onChange={(e) => setHome(e.target.value)} pattern="[1-9][0-9]{0,2}" />
            </label>
            <label>
              Allowed prefixes (one per line, e.g. +1, +44; empty = home country only)
              <textarea rows={4} value={prefixes ?? p.allowed_prefixes.join("\n")} onChange={(e) => setPrefixes(e.target.value)} className="mono" />
            </label>
            <label className="inline">
              <input type="checkbox" checked={premium ?? p.allow_premium} onChange={(e) => setPremium(e.target.checked)} />
              Allow premium-rate destinations
            </label>
            <button type="submit" disabled={action.busy}>
              Save
            </button>
          </form>
        </Section>
      )}
    </>
  );
}

// ---------------------------------------------------------------- trunks

export function TrunksPage(props: Props) {
  const base = tenantBase(props.tenantId);
  const trunks = useLoad(() => props.api.get<{ trunks: TrunkView[] }>(`${base}/trunks`), [base]);
  const [form, setForm] = useState({ name: "", preset: "generic", hosts: "", username: "", password: "", register: true });
  const [notice, setNotice] = useState<string | null>(null);
  const action = useAction();

  const create = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      await props.api.json("POST", `${base}/trunks`, {
        name: form.name.trim(),
        preset: form.preset,
        hosts: form.hosts.split(/[\s,]+/).filter(Boolean),
        username: form.username.trim(),
        password: form.password || null,
        register: form.register,
      });
      setForm({ name: "", preset: "generic", hosts: "", username: "", password: "", register: true });
      setNotice("Created trunk.");
      trunks.reload();
    });
  };

  const remove = (view: TrunkView) => {
    if (!window.confirm(`Delete trunk ${view.trunk.name}?`)) return;
    void action.run(async () => {
      await props.api.json("DELETE", `${base}/trunks/${encodeURIComponent(view.trunk.id)}`);
      setNotice(`Deleted trunk ${view.trunk.name}.`);
      trunks.reload();
    });
  };

  const list = trunks.data?.trunks ?? [];
  return (
    <>
      <h1>Trunks</h1>
      <Notice text={notice} />
      <Section title="SIP trunks" actions={<button type="button" onClick={trunks.reload}>Refresh</button>}>
        <ErrorBox error={trunks.error ?? action.error} />
        {!trunks.loading && list.length === 0 && <Empty what="trunks" />}
        {list.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Hosts</th>
                <th>User</th>
                <th>Transport</th>
                <th>Registration</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((v) => (
                <tr key={v.trunk.id}>
                  <td>{v.trunk.name}</td>
                  <td className="mono">{v.trunk.hosts.join(", ")}</td>
                  <td className="mono">{v.trunk.username}</td>
                  <td>{v.trunk.transport}</td>
                  <td>
                    {v.registration ? (
                      <>
                        {v.registration.state}
                        {v.registration.host ? ` via ${v.registration.host}` : ""}
                        {v.registration.expires_in != null ? `, expires in ${Math.round(v.registration.expires_in)} s` : ""}
                        {v.registration.last_error ? ` (${v.registration.last_error})` : ""}
                      </>
                    ) : (
                      "not registering"
                    )}
                  </td>
                  <td>
                    <button type="button" className="danger" onClick={() => remove(v)}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Add a trunk">
        <form onSubmit={create} className="stack-form" aria-label="Add trunk" autoComplete="off">
          <label>
            Name
            <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} required maxLength={100} />
          </label>
          <label>
            Preset
            <select value={form.preset} onChange={(e) => setForm({ ...form, preset: e.target.value })}>
              <option value="generic">generic</option>
              <option value="voipms">voipms</option>
            </select>
          </label>
          <label>
            Hosts (host or host:port, comma separated)
            <input value={form.hosts} onChange={(e) => setForm({ ...form, hosts: e.target.value })} />
          </label>
          <label>
            Username
            <input value={form.username} onChange={(e) => setForm({ ...form, username: e.target.value })} required />
          </label>
          <label>
            Password (write-only)
            <input type="password" value={form.password} onChange={(e) => setForm({ ...form, password: e.target.value })} />
          </label>
          <label className="inline">
            <input type="checkbox" checked={form.register} onChange={(e) => setForm({ ...form, register: e.target.checked })} />
            Register with the carrier
          </label>
          <button type="submit" disabled={action.busy}>
            Create trunk
          </button>
        </form>
      </Section>
    </>
  );
}
