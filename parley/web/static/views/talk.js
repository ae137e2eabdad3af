// Talk: a conversation with an agent in the browser, through parley-talk.js (the reference talk client).
// #/talk/:ref talks to the agent as saved; #/talk/:ref?draft=1 to the unsaved draft the agent editor keeps in
// sessionStorage['parley.draft.<ref>'] (POST talk-token with {draft}). The key never reaches the socket: the
// console fetches a one-session talk token with it, and the WebSocket carries only the token. ?buffer=300 sets the
// jitter buffer's target (ms) for a poor network.
import { html, useState, useEffect, useRef, useAsync, ErrorBox, PageHeader, Loading, formatLatency } from '../lib/ui.js';
import { api } from '../lib/api.js';
import { connect } from '../parley-talk.js';

const KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];
const KEY_ID = { '*': 'star', '#': 'hash' };

function ensureStyles() {
  if (document.getElementById('parley-talk-css')) return;
  const link = document.createElement('link');
  link.id = 'parley-talk-css';
  link.rel = 'stylesheet';
  link.href = '/console/views/talk.css';
  document.head.appendChild(link);
}

/** The draft the editor kept: JSON (or YAML text, read with the vendored js-yaml). */
export async function readDraft(ref) {
  const raw = sessionStorage.getItem(`parley.draft.${ref}`);
  if (!raw) throw new Error('there is no unsaved draft of this agent in this tab: open it in the editor first');
  try {
    return JSON.parse(raw);
  } catch {
    const yaml = await import('../vendor/js-yaml/dist/js-yaml.mjs');
    return yaml.load(raw);
  }
}

/** ?buffer=<ms>: the jitter buffer's target, for a slow or jittery network (default 100 ms, 40..2000). */
export function bufferMs(query) {
  const ms = Number(query && query.buffer);
  return Number.isFinite(ms) && ms > 0 ? Math.min(2000, Math.max(40, ms)) : 100;
}

const STATUS = {
  idle: 'Not connected. Start, then speak: the agent answers through your speakers.',
  starting: 'Opening the microphone and connecting…',
  live: 'Live: speak now. Interrupt the agent at any time.',
  ending: 'Hanging up…',
};

function statusLine(state, end) {
  if (state === 'ended' && end) return end.dropped ? end.message : `Call ended: ${end.reason}`;
  if (state === 'ended') return 'Not connected.';
  return STATUS[state] || state;
}

function Turn({ t }) {
  return html`<li class="talk-turn" data-testid="talk-turn" data-turn=${t.turn}>
    ${t.turn > 0 || t.caller ? html`<div class=${`line caller${t.final ? '' : ' speculative'}`} data-testid="transcript-caller"
        data-final=${t.final ? '1' : '0'}><span class="who">You</span><span class="text">${t.caller || '…'}</span></div>` : null}
    ${t.agent ? html`<div class=${`line agent${t.interrupted ? ' interrupted' : ''}`} data-testid="transcript-agent">
        <span class="who">Agent</span><span class="text">${t.agent}</span>
        ${t.interrupted ? html`<span class="badge" title="you spoke over the agent">interrupted</span>` : null}</div>` : null}
    ${t.voiceToVoice !== null && t.voiceToVoice !== undefined ? html`<div class="latency" data-testid="turn-latency"
        title="voice-to-voice: from the end of your speech to the agent's first audio">
        voice-to-voice <strong>${formatLatency(t.voiceToVoice)}</strong></div>` : null}
  </li>`;
}

function Keypad({ onKey, disabled }) {
  return html`<div class="keypad" role="group" aria-label="keypad" data-testid="keypad">
    ${KEYS.map((k) => html`<button class="btn key" disabled=${disabled} onClick=${() => onKey(k)}
      data-testid=${`dtmf-${KEY_ID[k] || k}`} aria-label=${`key ${k}`}>${k}</button>`)}
  </div>`;
}

function Counters({ stats, callId }) {
  return html`<dl class="talk-counters" data-testid="talk-counters">
    <div><dt>sent</dt><dd>${Math.round(stats.bytesSent / 1024)} KiB</dd></div>
    <div><dt>received</dt><dd>${Math.round(stats.bytesReceived / 1024)} KiB</dd></div>
    <div><dt>played</dt><dd>${((stats.framesPlayed || 0) * 0.02).toFixed(1)} s</dd></div>
    <div><dt>buffered</dt><dd>${stats.queuedMs || 0} ms</dd></div>
    <div><dt>barge-ins</dt><dd>${stats.interruptions}</dd></div>
    ${callId ? html`<div><dt>call</dt><dd><a href=${`#/calls/${callId}`} data-testid="talk-call-link">${callId.slice(0, 8)}</a></dd></div>` : null}
  </dl>`;
}

export default function Talk({ params, query }) {
  const ref = params.ref;
  const draft = query && query.draft === '1';
  const agent = useAsync(() => api.get(`agents/${encodeURIComponent(ref)}`), [ref]);
  const [state, setState] = useState('idle');
  const [error, setError] = useState(null);
  const [turns, setTurns] = useState([]);
  const [stats, setStats] = useState({ bytesSent: 0, bytesReceived: 0, framesPlayed: 0, interruptions: 0 });
  const [end, setEnd] = useState(null);
  const [callId, setCallId] = useState(null);
  const [last, setLast] = useState(null);
  const call = useRef(null);
  useEffect(ensureStyles, []);
  useEffect(() => () => { if (call.current) { call.current.hangUp(); call.current.close(); } }, []);

  const start = async () => {
    setError(null); setEnd(null); setTurns([]); setCallId(null); setLast(null);
    setState('starting');
    try {
      const body = draft ? { draft: await readDraft(ref) } : {};
      const c = await connect({
        getToken: () => api.post(`agents/${encodeURIComponent(ref)}/talk-token`, body),
        targetMs: bufferMs(query),
      });
      call.current = c;
      window.parleyTalk = c; // for people (and tests) looking at the counters: parleyTalk.stats
      const refresh = () => setTurns([...c.turns.values()].sort((a, b) => a.turn - b.turn));
      for (const kind of ['transcript', 'agent_text', 'turn_metrics']) c.on(kind, refresh);
      c.on('latency', (e) => setLast(e.voiceToVoice));
      c.on('call', (e) => setCallId(e.call_id));
      c.on('stats', (s) => setStats({ ...s }));
      c.on('state', (e) => setState(e.state));
      c.on('end', (e) => setEnd(e));
      c.on('error', (e) => setError(new Error(e.message)));
      setState(c.state);
    } catch (e) {
      setError(e);
      setState('ended');
    }
  };
  const hangUp = () => call.current && call.current.hangUp();
  const onKey = (k) => { try { call.current && call.current.dtmf(k); } catch (e) { setError(e); } };
  const live = state === 'live';
  const busy = state === 'starting' || state === 'ending';

  if (agent.loading && !agent.data) return html`<${Loading} />`;
  if (agent.error) return html`<${ErrorBox} error=${agent.error} />`;
  const a = agent.data;
  return html`<section class="talk" data-testid="talk-view" data-state=${state} data-call-id=${callId || ''}
      data-bytes-received=${stats.bytesReceived} data-frames-played=${stats.framesPlayed || 0}
      data-flushes=${stats.flushes || 0} data-flushed-ms=${stats.flushedMs || 0} data-underruns=${stats.underruns || 0}
      data-interruptions=${stats.interruptions}>
    <${PageHeader} title=${`Talk to ${a.name}`} subtitle=${draft ? 'the unsaved draft (not a saved version)' : `version ${a.version}`}>
      <a class="btn ghost" href=${`#/agents/${encodeURIComponent(ref)}`} data-testid="talk-back">Edit agent</a>
    </${PageHeader}>
    <div class="card talk-controls">
      <div class="talk-buttons">
        <button class="btn primary" disabled=${live || busy} onClick=${start} data-testid="talk-start">
          ${state === 'ended' ? 'Talk again' : 'Start talking'}</button>
        <button class="btn danger" disabled=${!live} onClick=${hangUp} data-testid="talk-hangup">Hang up</button>
        ${draft ? html`<span class="badge" data-testid="talk-draft-badge">draft</span>` : null}
      </div>
      <p class="talk-status" role="status" aria-live="polite" data-testid="talk-status">${statusLine(state, end)}</p>
      <${ErrorBox} error=${error} testid="talk-error" />
      <div class="talk-latency" data-testid="talk-latency" data-seconds=${last ?? ''}>
        last turn voice-to-voice: <strong>${formatLatency(last)}</strong></div>
    </div>
    <div class="talk-layout">
      <div class="card">
        <h2>Transcript</h2>
        ${turns.length ? html`<ol class="talk-transcript" data-testid="talk-transcript">${turns.map((t) => html`<${Turn} key=${t.turn} t=${t} />`)}</ol>`
          : html`<p class="muted empty" data-testid="talk-transcript-empty">What you and the agent say appears here, as it is said.</p>`}
      </div>
      <div class="card">
        <h2>Keypad</h2>
        <${Keypad} onKey=${onKey} disabled=${!live} />
        <${Counters} stats=${stats} callId=${callId} />
      </div>
    </div>
  </section>`;
}
