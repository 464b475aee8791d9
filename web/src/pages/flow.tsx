// The flow graph of an agent: flowspec/1 nodes and edges drawn with @xyflow/react.
// Node text can be edited and saved as a new version; positions dragged here are
// kept in the document's ``layout``.
import { useCallback, useMemo, useState } from "react";
import {
  Background,
  Controls,
  MarkerType,
  ReactFlow,
  applyNodeChanges,
  type Edge,
  type Node,
  type NodeChange,
} from "@xyflow/react";
import type { FlowDoc, FlowNode } from "../api";

type Position = { x: number; y: number };

/** Positions from ``layout`` where present, else layered by distance from ``start``. */
export function layoutOf(flow: FlowDoc): Record<string, Position> {
  const stored = (flow.layout ?? {}) as Record<string, unknown>;
  const depth = new Map<string, number>();
  const first = flow.nodes.find((n) => n.type === "start") ?? flow.nodes[0];
  if (first) {
    depth.set(first.id, 0);
    const queue = [first.id];
    for (let i = 0; i < queue.length && i < 10000; i++) {
      const at = queue[i];
      for (const edge of flow.edges) {
        if (edge.source === at && !depth.has(edge.target)) {
          depth.set(edge.target, (depth.get(at) ?? 0) + 1);
          queue.push(edge.target);
        }
      }
    }
  }
  const deepest = Math.max(0, ...depth.values());
  const perLayer = new Map<number, number>();
  const out: Record<string, Position> = {};
  for (const node of flow.nodes) {
    const saved = stored[node.id] as Partial<Position> | undefined;
    if (saved && typeof saved.x === "number" && typeof saved.y === "number") {
      out[node.id] = { x: saved.x, y: saved.y };
      continue;
    }
    const layer = depth.get(node.id) ?? deepest + 1;
    const column = perLayer.get(layer) ?? 0;
    perLayer.set(layer, column + 1);
    out[node.id] = { x: column * 230, y: layer * 200 };
  }
  return out;
}

function describe(node: FlowNode): string {
  const text = typeof node.text === "string" ? node.text : "";
  const short = text.length > 70 ? `${text.slice(0, 67)}…` : text;
  return short;
}

function nodeLabel(node: FlowNode) {
  return (
    <div className="flow-node" data-node-id={node.id}>
      <strong>{node.label || node.id}</strong>
      <span className="node-type">{node.type}</span>
      {describe(node) && <span className="node-text">{describe(node)}</span>}
    </div>
  );
}

function toNodes(flow: FlowDoc, positions: Record<string, Position>): Node[] {
  return flow.nodes.map((node) => ({
    id: node.id,
    position: positions[node.id] ?? { x: 0, y: 0 },
    data: { label: nodeLabel(node) },
    className: `flow-node-${node.type}`,
    ariaLabel: `${node.type} node ${node.id}`,
  }));
}

function toEdges(flow: FlowDoc): Edge[] {
  return flow.edges.map((edge) => ({
    id: edge.id,
    source: edge.source,
    target: edge.target,
    label: edge.port,
    markerEnd: { type: MarkerType.ArrowClosed },
  }));
}

export function FlowGraph(props: {
  flow: FlowDoc;
  onSave?: (flow: FlowDoc) => Promise<void>;
  busy?: boolean;
}) {
  const { flow } = props;
  const [draft, setDraft] = useState<FlowDoc>(flow);
  // The graph library keeps measured sizes on its nodes: they live in state
  // and only their labels are replaced when a node's text changes.
  const [nodes, setNodes] = useState<Node[]>(() => toNodes(flow, layoutOf(flow)));
  const [selected, setSelected] = useState<string | null>(null);
  const [dirty, setDirty] = useState(false);
  const edges = useMemo(() => toEdges(draft), [draft]);

  const onNodesChange = useCallback((changes: NodeChange[]) => {
    if (changes.some((c) => c.type === "position" && c.dragging === false)) setDirty(true);
    setNodes((current) => applyNodeChanges(changes, current));
  }, []);

  const node = draft.nodes.find((n) => n.id === selected) ?? null;
  const editText = (text: string) => {
    const edited = draft.nodes.map((n) => (n.id === selected ? { ...n, text } : n));
    setDraft({ ...draft, nodes: edited });
    const changed = edited.find((n) => n.id === selected);
    if (changed) {
      setNodes((current) =>
        current.map((n) => (n.id === changed.id ? { ...n, data: { label: nodeLabel(changed) } } : n)),
      );
    }
    setDirty(true);
  };

  const save = async () => {
    if (!props.onSave) return;
    const positions: Record<string, Position> = {};
    for (const node of nodes) {
      positions[node.id] = { x: Math.round(node.position.x), y: Math.round(node.position.y) };
    }
    await props.onSave({ ...draft, layout: { ...(draft.layout ?? {}), ...positions } });
    setDirty(false);
  };

  return (
    <div className="flow-wrap">
      <div className="flow-canvas" aria-label="Flow graph" role="figure">
        <ReactFlow
          nodes={nodes}
          edges={edges}
          onNodesChange={onNodesChange}
          onNodeClick={(_, clicked) => setSelected(clicked.id)}
          onPaneClick={() => setSelected(null)}
          nodesConnectable={false}
          fitView
          proOptions={{ hideAttribution: true }}
        >
          <Background />
          <Controls showInteractive={false} />
        </ReactFlow>
      </div>
      <aside className="flow-side" aria-label="Node details">
        {node ? (
          <>
            <h3>
              {node.id} <span className="node-type">{node.type}</span>
            </h3>
            {typeof node.text === "string" || ["say", "ask", "intent", "transfer", "hangup"].includes(node.type) ? (
              <label>
                Text spoken
                <textarea
                  rows={6}
                  value={typeof node.text === "string" ? node.text : ""}
                  onChange={(e) => editText(e.target.value)}
                  disabled={!props.onSave}
                />
              </label>
            ) : (
              <p className="muted">This node type has no text.</p>
            )}
            <details>
              <summary>Node JSON</summary>
              <pre>{JSON.stringify(node, null, 2)}</pre>
            </details>
            <p className="muted">
              Leaves through:{" "}
              {draft.edges
                .filter((e) => e.source === node.id)
                .map((e) => `${e.port} → ${e.target}`)
                .join(", ") || "nothing"}
            </p>
          </>
        ) : (
          <p className="muted">Select a node to see or edit it. Drag nodes to rearrange.</p>
        )}
        {props.onSave && (
          <button type="button" onClick={save} disabled={!dirty || props.busy}>
            {props.busy ? "Saving…" : "Save as new version"}
          </button>
        )}
      </aside>
    </div>
  );
}
