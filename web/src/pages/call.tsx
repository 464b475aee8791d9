// The call panel: talk to an agent from the browser, with a live transcript,
// mute, keypad and hang-up.  The call itself is webrtc.ts's BrowserCall.
import { useEffect, useRef, useState } from "react";
import type { Api } from "../api";
import { Link } from "../router";
import { BrowserCall, INITIAL_VIEW, KEYPAD, type CallPhase, type CallView, type TranscriptEntry } from "../webrtc";

const PHASE_TEXT: Record<CallPhase, string> = {
  idle: "starting",
  microphone: "asking for the microphone",
  connecting: "connecting",
  live: "live",
  ended: "ended",
};

const SPEAKER: Record<TranscriptEntry["speaker"], string> = {
  caller: "You",
  agent: "Agent",
  keypad: "Keypad",
};

function Transcript(props: { view: CallView }) {
  const { transcript, phase, feed } = props.view;
  return (
    <>
      <h3>Transcript</h3>
      {feed === "unavailable" && phase !== "ended" && (
        <p className="muted">The live transcript is unavailable (the analytics feed closed); the call goes on.</p>
      )}
      {transcript.length === 0 && phase !== "ended" && <p className="muted">Waiting for the agent to speak…</p>}
      <ol className="call-transcript" aria-label="Transcript" aria-live="polite">
        {transcript.map((entry) => (
          <li key={entry.id} className={`turn-${entry.speaker}`}>
            <span className="speaker">{SPEAKER[entry.speaker]}</span>
            <span className="said">{entry.text}</span>
            {entry.latencyMs !== null && (
              <span className="latency" title="From the end of your speech to the agent's first audio">
                reply in {entry.latencyMs} ms
              </span>
            )}
          </li>
        ))}
      </ol>
    </>
  );
}

export function CallPanel(props: {
  api: Api;
  tenantId: string;
  agent: { id: string; name: string };
  onClose: () => void;
}) {
  const { api, tenantId, agent, onClose } = props;
  const audio = useRef<HTMLAudioElement>(null);
  const [view, setView] = useState<CallView>(INITIAL_VIEW);
  const [call, setCall] = useState<BrowserCall | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const element = audio.current;
    if (element === null) return;
    let active = true;
    const next = new BrowserCall(api, tenantId, agent.id, element, (changed) => {
      if (active) setView(changed);
    });
    setCall(next);
    setView(next.current);
    void next.start();
    return () => {
      // Leaving the panel (or calling again) must not leave a call running.
      next.dispose();
      active = false;
    };
  }, [api, tenantId, agent.id, attempt]);

  const { phase, end, muted } = view;
  const ended = phase === "ended";
  return (
    <section className="card call" aria-label={`Call with ${agent.name}`}>
      <header className="card-head">
        <h2>Call with {agent.name}</h2>
      </header>
      <p role="status" className={`call-state call-${phase}`}>
        Call state: <strong>{PHASE_TEXT[phase]}</strong>
        {muted && !ended && <> (your microphone is muted)</>}
        {end && end.problem === null && <> — {end.message}</>}
      </p>
      {view.callId && (
        <p className="muted">
          Call ID{" "}
          {ended ? (
            // Only once ended: leaving the page hangs a live call up.
            <Link to={`/t/${tenantId}/calls/${view.callId}`}>{view.callId}</Link>
          ) : (
            <span className="mono">{view.callId}</span>
          )}
        </p>
      )}
      {end && end.problem !== null && (
        <p className="error" role="alert">
          {end.message}
        </p>
      )}
      <audio ref={audio} controls aria-label="Agent audio" className="call-audio" />
      <div className="call-controls">
        {!ended && (
          <>
            <button
              type="button"
              aria-pressed={muted}
              disabled={phase === "idle" || phase === "microphone"}
              onClick={() => call?.setMuted(!muted)}
            >
              Mute
            </button>
            <button type="button" className="danger" onClick={() => void call?.hangUp()}>
              Hang up
            </button>
          </>
        )}
        {ended && (
          <>
            <button type="button" onClick={() => setAttempt((n) => n + 1)}>
              Call again
            </button>
            <button type="button" className="danger" onClick={onClose}>
              Close
            </button>
          </>
        )}
      </div>
      <div role="group" aria-label="Keypad" className="keypad">
        {KEYPAD.map((key) => (
          <button
            key={key}
            type="button"
            aria-label={`Key ${key}`}
            disabled={phase !== "live"}
            onClick={() => call?.sendDigits(key)}
          >
            {key}
          </button>
        ))}
      </div>
      <Transcript view={view} />
    </section>
  );
}
