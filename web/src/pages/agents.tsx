// Agents: list, create from a template or a pasted flowspec/1 document, call
// one from the browser, and one agent's flow graph, versions and warnings.
import { useState, type FormEvent } from "react";
import {
  ApiError,
  tenantBase,
  when,
  type Agent,
  type AgentVersion,
  type Api,
  type FlowDoc,
  type Template,
} from "../api";
import { Empty, ErrorBox, Notice, Section, useAction, useLoad } from "../common";
import { Link, navigate } from "../router";
import { CallPanel } from "./call";
import { FlowGraph } from "./flow";

interface Props {
  api: Api;
  tenantId: string;
}

function CreateFromTemplate(props: Props & { onCreated: (agent: Agent) => void }) {
  const base = tenantBase(props.tenantId);
  const templates = useLoad(
    () => props.api.get<{ templates: Template[] }>(`${base}/templates`),
    [base],
  );
  const [name, setName] = useState("");
  const [template, setTemplate] = useState("");
  const action = useAction();
  const list = templates.data?.templates ?? [];
  const chosen = template || list[0]?.name || "";

  const submit = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      const agent = await props.api.json<Agent>("POST", `${base}/agents`, {
        name: name.trim(),
        template: chosen,
      });
      setName("");
      props.onCreated(agent);
    });
  };

  return (
    <form onSubmit={submit} aria-label="Create agent from template" className="row-form">
      <label>
        Name
        <input name="agent_name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={100} />
      </label>
      <label>
        Template
        <select name="template" value={chosen} onChange={(e) => setTemplate(e.target.value)}>
          {list.map((t) => (
            <option key={t.name} value={t.name}>
              {t.name} ({t.kind})
            </option>
          ))}
        </select>
      </label>
      <button type="submit" disabled={action.busy || !chosen}>
        Create from template
      </button>
      <ErrorBox error={templates.error ?? action.error} />
      {list.find((t) => t.name === chosen) && (
        <p className="muted wide">{list.find((t) => t.name === chosen)?.description}</p>
      )}
    </form>
  );
}

function CreateFromFlow(props: Props & { onCreated: (agent: Agent) => void }) {
  const base = tenantBase(props.tenantId);
  const [name, setName] = useState("");
  const [text, setText] = useState("");
  const action = useAction();

  const submit = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      let flow: unknown;
      try {
        flow = JSON.parse(text);
      } catch (err) {
        throw new ApiError(0, "malformed_json", `not JSON: ${(err as Error).message}`, "$");
      }
      const agent = await props.api.json<Agent>("POST", `${base}/agents`, { name: name.trim(), flow });
      setName("");
      setText("");
      props.onCreated(agent);
    });
  };

  return (
    <form onSubmit={submit} aria-label="Create agent from flowspec" className="stack-form">
      <label>
        Name
        <input name="flow_agent_name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={100} />
      </label>
      <label>
        flowspec/1 document (JSON)
        <textarea
          name="flow"
          rows={10}
          value={text}
          onChange={(e) => setText(e.target.value)}
          required
          spellCheck={false}
          className="mono"
        />
      </label>
      <button type="submit" disabled={action.busy}>
        Validate and create
      </button>
      <ErrorBox error={action.error} />
    </form>
  );
}

export function AgentsPage(props: Props) {
  const base = tenantBase(props.tenantId);
  const agents = useLoad(() => props.api.get<{ agents: Agent[] }>(`${base}/agents`), [base]);
  const [notice, setNotice] = useState<string | null>(null);
  const [calling, setCalling] = useState<Agent | null>(null);
  const action = useAction();

  const created = (agent: Agent) => {
    const warned = agent.warnings.length ? ` Warnings: ${agent.warnings.join("; ")}` : "";
    setNotice(`Created agent ${agent.name} (${agent.id}), version ${agent.version}.${warned}`);
    agents.reload();
  };

  const remove = (agent: Agent) => {
    if (!window.confirm(`Delete agent ${agent.name}?`)) return;
    void action.run(async () => {
      await props.api.json("DELETE", `${base}/agents/${encodeURIComponent(agent.id)}`);
      setNotice(`Deleted agent ${agent.name}.`);
      agents.reload();
    });
  };

  const list = agents.data?.agents ?? [];
  return (
    <>
      <h1>Agents</h1>
      <Notice text={notice} />
      {calling && (
        <CallPanel api={props.api} tenantId={props.tenantId} agent={calling} onClose={() => setCalling(null)} />
      )}
      <Section title="All agents">
        <ErrorBox error={agents.error ?? action.error} />
        {!agents.loading && list.length === 0 && <Empty what="agents" />}
        {list.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>ID</th>
                <th>Kind</th>
                <th>Version</th>
                <th>Updated</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((agent) => (
                <tr key={agent.id}>
                  <td>
                    <Link to={`/t/${props.tenantId}/agents/${agent.id}`}>{agent.name}</Link>
                  </td>
                  <td className="mono">{agent.id}</td>
                  <td>{agent.kind}</td>
                  <td>{agent.version}</td>
                  <td>{when(agent.updated_at)}</td>
                  <td className="actions">
                    <button
                      type="button"
                      aria-label={`Call ${agent.name}`}
                      disabled={calling !== null}
                      onClick={() => setCalling(agent)}
                    >
                      Call
                    </button>
                    <button type="button" className="danger" onClick={() => remove(agent)}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="New agent from a template">
        <CreateFromTemplate {...props} onCreated={created} />
      </Section>
      <Section title="New agent from a flowspec/1 document">
        <CreateFromFlow {...props} onCreated={created} />
      </Section>
    </>
  );
}

export function AgentDetailPage(props: Props & { agentId: string }) {
  const path = `${tenantBase(props.tenantId)}/agents/${encodeURIComponent(props.agentId)}`;
  const agent = useLoad(() => props.api.get<Agent>(path), [path]);
  const versions = useLoad(
    () => props.api.get<{ versions: AgentVersion[] }>(`${path}/versions`),
    [path],
  );
  const action = useAction();
  const [notice, setNotice] = useState<string | null>(null);
  const [name, setName] = useState<string | null>(null);
  const [calling, setCalling] = useState(false);

  const saveFlow = async (flow: FlowDoc) => {
    await action.run(async () => {
      const updated = await props.api.json<Agent>("PATCH", path, { flow });
      setNotice(`Published version ${updated.version}.`);
      agent.reload();
      versions.reload();
    });
  };

  const rename = (event: FormEvent) => {
    event.preventDefault();
    void action.run(async () => {
      await props.api.json<Agent>("PATCH", path, { name: (name ?? "").trim() });
      setNotice("Renamed.");
      setName(null);
      agent.reload();
    });
  };

  const a = agent.data;
  return (
    <>
      <p>
        <Link to={`/t/${props.tenantId}/agents`}>← Agents</Link>
      </p>
      <h1>{a ? a.name : "Agent"}</h1>
      <ErrorBox error={agent.error ?? action.error} />
      <Notice text={notice} />
      {a && (
        <>
          <dl className="facts">
            <dt>ID</dt>
            <dd className="mono">{a.id}</dd>
            <dt>Kind</dt>
            <dd>{a.kind}</dd>
            <dt>Template</dt>
            <dd>{a.template ?? "—"}</dd>
            <dt>Version</dt>
            <dd>{a.version}</dd>
            <dt>Updated</dt>
            <dd>{when(a.updated_at)}</dd>
          </dl>
          {calling ? (
            <CallPanel api={props.api} tenantId={props.tenantId} agent={a} onClose={() => setCalling(false)} />
          ) : (
            <p>
              <button type="button" aria-label={`Call ${a.name}`} onClick={() => setCalling(true)}>
                Call
              </button>
            </p>
          )}
          <form onSubmit={rename} className="row-form" aria-label="Rename agent">
            <label>
              Name
              <input value={name ?? a.name} onChange={(e) => setName(e.target.value)} required maxLength={100} />
            </label>
            <button type="submit" disabled={action.busy || name === null}>
              Rename
            </button>
          </form>
          {a.warnings.length > 0 && (
            <Section title="Warnings">
              <ul>
                {a.warnings.map((w) => (
                  <li key={w}>{w}</li>
                ))}
              </ul>
            </Section>
          )}
          <Section title={`Flow (version ${a.version})`}>
            {a.flow ? (
              <FlowGraph
                key={`${a.id}-${a.version}`}
                flow={a.flow}
                onSave={saveFlow}
                busy={action.busy}
              />
            ) : (
              <p className="muted">This {a.kind} agent has no flow.</p>
            )}
          </Section>
        </>
      )}
      <Section title="Versions">
        <ErrorBox error={versions.error} />
        <table>
          <thead>
            <tr>
              <th>Version</th>
              <th>Published</th>
              <th>Flow hash</th>
            </tr>
          </thead>
          <tbody>
            {(versions.data?.versions ?? []).map((v) => (
              <tr key={v.version}>
                <td>{v.version}</td>
                <td>{when(v.created_at)}</td>
                <td className="mono">{v.flow_hash.slice(0, 16)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
      <p>
        <button type="button" className="link" onClick={() => navigate(`/t/${props.tenantId}/calls?agent_id=${encodeURIComponent(props.agentId)}`)}>
          Calls of this agent
        </button>
      </p>
    </>
  );
}
