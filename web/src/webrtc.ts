// A browser call to one agent over WebRTC, with no UI: the microphone, the peer
// connection (mic track + a "dtmf" data channel), the non-trickle offer/answer
// exchange with the server, hang-up, and the call's live transcript from the
// tenant's analytics feed.  pages/call.tsx renders its CallView.
//
// Standard APIs only (getUserMedia, RTCPeerConnection, WebSocket), so it runs in
// Chromium and Firefox alike.
import { ApiError, errorText, tenantBase, type Api } from "./api";

// ---------------------------------------------------------------- state

export type CallPhase = "idle" | "microphone" | "connecting" | "live" | "ended";

// Which phase may follow which; anything else (e.g. "live" after a hang-up,
// when a late event arrives) is ignored.
const TRANSITIONS: Record<CallPhase, readonly CallPhase[]> = {
  idle: ["microphone", "ended"],
  microphone: ["connecting", "ended"],
  connecting: ["live", "ended"],
  live: ["ended"],
  ended: [],
};

/** Why a call could not start or went down, each with the text the caller reads. */
export type CallProblem =
  | "insecure_context"
  | "microphone_denied"
  | "no_microphone"
  | "microphone_busy"
  | "microphone_failed"
  | "agent_not_found"
  | "no_capacity"
  | "quota"
  | "draining"
  | "bad_offer"
  | "webrtc_unavailable"
  | "server_error"
  | "ice_failed"
  | "connection_lost";

export const PROBLEM_TEXT: Record<CallProblem, string> = {
  insecure_context:
    "This browser only gives the microphone to secure pages: open the console over https or on localhost.",
  microphone_denied:
    "Microphone access was denied. Allow the microphone for this site (the icon in the address bar), then press Call again.",
  no_microphone: "No microphone was found. Connect one, then press Call again.",
  microphone_busy:
    "The microphone could not be started: another application may be using it.",
  microphone_failed: "The microphone could not be opened.",
  agent_not_found: "This agent no longer exists.",
  no_capacity:
    "The agent has no free speech worker right now (no capacity). Try again in a moment.",
  quota: "The tenant's call quota is reached (too many calls at once or per second). Try again shortly.",
  draining: "The server is shutting down or restarting and takes no new calls. Try again shortly.",
  bad_offer: "The server could not use this browser's call offer.",
  webrtc_unavailable: "This server cannot take browser calls (its webrtc extra is not installed).",
  server_error: "The server could not start the call.",
  ice_failed:
    "The audio connection failed (ICE): this browser could not reach the server's media port. A firewall or VPN may block UDP.",
  connection_lost: "The audio connection to the server was lost.",
};

// The server's end reasons (call_ended.reason), as the caller reads them.
const END_TEXT: Record<string, string> = {
  caller_hangup: "You hung up.",
  agent_hangup: "The agent ended the call.",
  transfer: "The agent transferred the call.",
  worker_lost: "The agent's speech worker stopped.",
  drain: "The server is shutting down.",
  timeout: "The call reached its time limit.",
  error: "The call failed on the server.",
};

export interface TranscriptEntry {
  id: number;
  speaker: "caller" | "agent" | "keypad";
  text: string;
  /** End-to-end reply latency of a caller turn: end of speech to the agent's first audio. */
  latencyMs: number | null;
}

export type FeedState = "connecting" | "open" | "unavailable";

export interface CallEnd {
  message: string;
  problem: CallProblem | null;
}

/** Everything the call panel shows; a new object on every change. */
export interface CallView {
  phase: CallPhase;
  callId: string | null;
  muted: boolean;
  transcript: TranscriptEntry[];
  feed: FeedState;
  end: CallEnd | null;
}

export const INITIAL_VIEW: CallView = {
  phase: "idle",
  callId: null,
  muted: false,
  transcript: [],
  feed: "connecting",
  end: null,
};

export const KEYPAD = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"] as const;
const DIGITS = /^[0-9*#A-D]+$/;

// ---------------------------------------------------------------- transcript

/** One message of the tenant analytics feed (see voxgate/server/routes_analytics.py). */
export interface FeedMessage {
  type?: string;
  call_id?: string;
  role?: string;
  text?: string;
  kind?: string;
  detail?: string;
  reason?: string;
}

function latencyFromTurnRecord(detail: string): { caller: string; ms: number } | null {
  try {
    const record = JSON.parse(detail) as { caller_text?: string; latencies?: Record<string, number> };
    const seconds = record.latencies?.end_to_end;
    if (typeof seconds !== "number" || typeof record.caller_text !== "string") return null;
    return { caller: record.caller_text, ms: Math.round(seconds * 1000) };
  } catch {
    return null;
  }
}

/**
 * The transcript after one feed message of this call.  Agent speech arrives a
 * sentence at a time (as each is heard); consecutive pieces form one entry.
 */
export function applyFeedMessage(transcript: TranscriptEntry[], message: FeedMessage): TranscriptEntry[] {
  const last = transcript[transcript.length - 1];
  const nextId = (last?.id ?? 0) + 1;
  if (message.type === "turn" && typeof message.text === "string" && message.text.trim()) {
    const text = message.text.trim();
    if (message.role === "agent") {
      if (last?.speaker === "agent")
        return [...transcript.slice(0, -1), { ...last, text: `${last.text} ${text}` }];
      return [...transcript, { id: nextId, speaker: "agent", text, latencyMs: null }];
    }
    return [...transcript, { id: nextId, speaker: "caller", text, latencyMs: null }];
  }
  if (message.type !== "event" || typeof message.detail !== "string") return transcript;
  if (message.kind === "turn_latency") {
    // Sent when the reply's first audio leaves: it belongs to the latest caller turn.
    const seconds = Number(message.detail);
    let at = transcript.length - 1;
    while (at >= 0 && transcript[at].speaker !== "caller") at -= 1;
    if (!Number.isFinite(seconds) || at < 0 || transcript[at].latencyMs !== null) return transcript;
    return transcript.map((e, i) => (i === at ? { ...e, latencyMs: Math.round(seconds * 1000) } : e));
  }
  if (message.kind === "turn") {
    // The closed turn's record: fills in a latency the live event did not give.
    const found = latencyFromTurnRecord(message.detail);
    if (found === null) return transcript;
    const at = transcript.findIndex(
      (e) => e.speaker === "caller" && e.latencyMs === null && e.text === found.caller.trim(),
    );
    if (at < 0) return transcript;
    return transcript.map((e, i) => (i === at ? { ...e, latencyMs: found.ms } : e));
  }
  if (message.kind === "dtmf" && DIGITS.test(message.detail)) {
    if (last?.speaker === "keypad")
      return [...transcript.slice(0, -1), { ...last, text: last.text + message.detail }];
    return [...transcript, { id: nextId, speaker: "keypad", text: message.detail, latencyMs: null }];
  }
  return transcript;
}

// ---------------------------------------------------------------- errors

function microphoneProblem(error: unknown): CallProblem {
  const name = error instanceof DOMException || error instanceof Error ? error.name : "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return "microphone_denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no_microphone";
    case "NotReadableError":
    case "AbortError":
      return "microphone_busy";
  }
  return "microphone_failed";
}

/** The problem behind a refused offer (see the webrtc route's error codes). */
export function offerProblem(error: unknown): CallProblem {
  if (!(error instanceof ApiError)) return "server_error";
  if (error.code === "no_capacity") return "no_capacity";
  if (error.code === "draining") return "draining";
  if (error.status === 404) return "agent_not_found";
  if (error.code === "webrtc_unavailable") return "webrtc_unavailable";
  if (error.status === 429 || error.code.startsWith("busy") || error.code.includes("quota"))
    return "quota";
  if (error.status === 400 || error.status === 413 || error.status === 422) return "bad_offer";
  return "server_error";
}

// ---------------------------------------------------------------- the call

interface WebRtcAnswer {
  type: "answer";
  sdp: string;
  call_id: string;
}

// Non-trickle: the offer carries every candidate, so wait for gathering (bounded:
// a stuck STUN/TURN lookup must not hold the call; host candidates come first).
const GATHER_TIMEOUT_MS = 5000;
// Media must flow this long after the answer, or the connection counts as failed.
const CONNECT_TIMEOUT_MS = 20000;
// The analytics feed gets this long to open before the offer goes out anyway.
const FEED_WAIT_MS = 3000;
// After the remote side closes, how long the server's end reason may take to arrive.
const END_REASON_WAIT_MS = 1500;
// Feed messages kept while the call id is not known yet.
const EARLY_FEED_LIMIT = 200;

function waitForIceGathering(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      window.clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = window.setTimeout(done, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * One call from this browser to an agent.  ``start`` once; ``hangUp`` or
 * ``dispose`` end it.  Every change is reported through ``onChange``.
 */
export class BrowserCall {
  private view: CallView = INITIAL_VIEW;
  private readonly base: string;
  private mic: MediaStream | null = null;
  private pc: RTCPeerConnection | null = null;
  private dtmf: RTCDataChannel | null = null;
  private feed: WebSocket | null = null;
  private early: FeedMessage[] = [];
  private connectTimer: number | undefined;
  private endTimer: number | undefined;

  constructor(
    private readonly api: Api,
    tenantId: string,
    private readonly agentId: string,
    private readonly audio: HTMLAudioElement,
    private readonly onChange: (view: CallView) => void,
  ) {
    this.base = tenantBase(tenantId);
  }

  get current(): CallView {
    return this.view;
  }

  private update(change: Partial<CallView>): void {
    if (change.phase !== undefined && change.phase !== this.view.phase) {
      if (!TRANSITIONS[this.view.phase].includes(change.phase)) return;
    }
    this.view = { ...this.view, ...change };
    this.onChange(this.view);
  }

  private get ended(): boolean {
    return this.view.phase === "ended";
  }

  async start(): Promise<void> {
    if (this.view.phase !== "idle") return;
    this.update({ phase: "microphone" });
    if (!navigator.mediaDevices?.getUserMedia) {
      this.finish({ problem: "insecure_context" });
      return;
    }
    let mic: MediaStream;
    try {
      mic = await navigator.mediaDevices.getUserMedia({
        // Echo cancellation keeps the agent's own voice out of the microphone (no
        // false barge-in on speakers); the browser's noise suppression is off:
        // it garbles words for speech recognition, which copes with noise itself.
        audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
        video: false,
      });
    } catch (err) {
      this.finish({ problem: microphoneProblem(err), detail: errorText(err) });
      return;
    }
    if (this.ended) {
      // Hung up while the browser was asking for the microphone.
      mic.getTracks().forEach((t) => t.stop());
      return;
    }
    this.mic = mic;
    this.update({ phase: "connecting" });
    await this.openFeed();
    if (this.ended) return;

    // No ICE servers: the browser reaches the server's own host candidates, and a
    // public STUN server would be a third party learning who calls.
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
    // Created before the offer so that the offer negotiates the data channel.
    const dtmf = pc.createDataChannel("dtmf", { ordered: true });
    this.dtmf = dtmf;
    dtmf.onclose = () => this.remoteClosed();
    pc.ontrack = (event) => {
      this.audio.srcObject = event.streams[0] ?? new MediaStream([event.track]);
      this.audio.play().catch(() => {
        // Autoplay refused: the <audio> element's own controls can start it.
      });
    };
    pc.onconnectionstatechange = () => this.connectionChanged();

    let answer: WebRtcAnswer;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (this.ended) return;
      const sdp = pc.localDescription?.sdp ?? "";
      answer = await this.api.json<WebRtcAnswer>(
        "POST",
        `${this.base}/agents/${encodeURIComponent(this.agentId)}/webrtc`,
        { type: "offer", sdp },
      );
    } catch (err) {
      this.finish({ problem: offerProblem(err), detail: errorText(err) });
      return;
    }
    if (this.ended) {
      // Hung up while the offer was on its way: end the call the server just made.
      void this.deleteCall(answer.call_id);
      return;
    }
    this.update({ callId: answer.call_id });
    for (const message of this.early) this.onFeedMessage(message);
    this.early = [];
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (err) {
      void this.deleteCall(answer.call_id);
      this.finish({ problem: "bad_offer", detail: errorText(err) });
      return;
    }
    this.connectTimer = window.setTimeout(() => {
      if (this.view.phase === "connecting") this.finish({ problem: "ice_failed" });
    }, CONNECT_TIMEOUT_MS);
  }

  setMuted(muted: boolean): void {
    for (const track of this.mic?.getAudioTracks() ?? []) track.enabled = !muted;
    this.update({ muted });
  }

  /** Send keypad digits; false when the channel is not open (yet). */
  sendDigits(digits: string): boolean {
    if (!DIGITS.test(digits) || this.dtmf?.readyState !== "open") return false;
    this.dtmf.send(digits);
    return true;
  }

  /** End the call from this side: DELETE on the server, then close the connection. */
  async hangUp(): Promise<void> {
    if (this.ended) return;
    const callId = this.view.callId;
    this.finish({ message: END_TEXT.caller_hangup });
    if (callId !== null) await this.deleteCall(callId);
  }

  /** The panel went away: a live call must not outlive it. */
  dispose(): void {
    void this.hangUp();
  }

  private async deleteCall(callId: string): Promise<void> {
    try {
      await this.api.json("DELETE", `${this.base}/calls/${encodeURIComponent(callId)}`);
    } catch {
      // 404: the call had already ended (closing the connection ends it too).
    }
  }

  private connectionChanged(): void {
    const pc = this.pc;
    if (pc === null || this.ended) return;
    switch (pc.connectionState) {
      case "connected":
        window.clearTimeout(this.connectTimer);
        this.update({ phase: "live" });
        break;
      case "failed":
        this.finish({ problem: this.view.phase === "live" ? "connection_lost" : "ice_failed" });
        break;
      case "closed":
        this.remoteClosed();
        break;
    }
  }

  /** The server closed its side; wait briefly for the feed to say why. */
  private remoteClosed(): void {
    if (this.ended || this.endTimer !== undefined) return;
    this.endTimer = window.setTimeout(() => {
      this.finish({ message: "The call ended." });
    }, END_REASON_WAIT_MS);
  }

  private finish(how: { problem?: CallProblem; message?: string; detail?: string }): void {
    if (this.ended) return;
    window.clearTimeout(this.connectTimer);
    window.clearTimeout(this.endTimer);
    const problem = how.problem ?? null;
    let message = how.message ?? (problem ? PROBLEM_TEXT[problem] : "The call ended.");
    if (problem !== null && how.detail) message = `${message} (${how.detail})`;
    this.update({ phase: "ended", end: { message, problem } });
    this.mic?.getTracks().forEach((t) => t.stop());
    this.dtmf = null;
    this.pc?.close();
    this.feed?.close();
    this.audio.srcObject = null;
  }

  // ------------------------------------------------------------ live transcript

  /** Open the analytics feed; resolves once it is open, failed, or FEED_WAIT_MS passed. */
  private openFeed(): Promise<void> {
    return new Promise((resolve) => {
      const timer = window.setTimeout(resolve, FEED_WAIT_MS);
      const settle = () => {
        window.clearTimeout(timer);
        resolve();
      };
      let socket: WebSocket;
      try {
        socket = new WebSocket(this.api.socketUrl(`${this.base}/analytics/ws`));
      } catch {
        this.update({ feed: "unavailable" });
        settle();
        return;
      }
      this.feed = socket;
      socket.onopen = () => {
        this.update({ feed: "open" });
        settle();
      };
      socket.onclose = () => {
        if (!this.ended) this.update({ feed: "unavailable" });
        settle();
      };
      socket.onmessage = (event: MessageEvent) => {
        let message: FeedMessage;
        try {
          message = JSON.parse(String(event.data)) as FeedMessage;
        } catch {
          return; // not part of the feed's contract
        }
        if (this.view.callId === null) {
          if (this.early.length < EARLY_FEED_LIMIT) this.early.push(message);
        } else {
          this.onFeedMessage(message);
        }
      };
    });
  }

  private onFeedMessage(message: FeedMessage): void {
    if (message.call_id !== this.view.callId || this.ended) return;
    if (message.type === "call_ended") {
      const reason = message.reason ?? "";
      this.finish({ message: END_TEXT[reason] ?? `The call ended (${reason || "no reason given"}).` });
      return;
    }
    const transcript = applyFeedMessage(this.view.transcript, message);
    if (transcript !== this.view.transcript) this.update({ transcript });
  }
}
