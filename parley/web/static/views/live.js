// Live calls: the calls active now on any transport (GET /v1/calls?status=active, polled), and one of them
// followed as it runs through its event stream (GET /v1/calls/{id}/events/stream, read with fetch so the
// bearer header goes with it): the caller's words as heard (speculative, then final), the agent's replies,
// each turn's voice-to-voice, interruptions and keys; hang up ends it (POST /v1/calls/{id}/hangup).
import {
  html, useEffect, useRef, useState, useAsync, ErrorBox, Table, PageHeader, ConfirmButton, Link,
  formatDuration, formatTime, formatLatency, navigate,
} from '../lib/ui.js';
import { api } from '../lib/api.js';
import { can } from '../lib/session.js';
import { readEvents } from '../lib/sse.js';
import { ensureCallStyles, queryObject } from './call_style.js';

const POLL_MS = 3000;

/** Folds one stream event into the live view's state {turns: {n: {caller, final, agent, cut, v2v}}, notes}. */
export function fold(state, kind, ev) {
  const d = ev?.data || {};
  const turns = { ...state.turns };
  const turn = (n) => (turns[n] = { ...(turns[n] || { turn: n }) });
  if (kind === 'transcript') Object.assign(turn(d.turn), { caller: d.text, final: !!d.final });
  else if (kind === 'agent_text') Object.assign(turn(d.turn), { agent: d.text, cut: !!d.interrupted });
  else if (kind === 'turn_metrics') Object.assign(turn(d.turn), { v2v: d.voice_to_voice });
  else if (kind === 'interruption' || kind === 'dtmf' || kind === 'action' || kind === 'tool' || kind === 'error') {
    const what = kind === 'dtmf' ? `key ${d.digit}` : kind === 'action' ? `action ${d.action}` : kind === 'tool' ? `tool ${d.tool}` : kind;
    return { ...state, notes: [...state.notes.slice(-49), { t: ev.t, what }] };
  } else return state;
  return { ...state, turns };
}

function LiveCall({ id }) {
  const [state, setState] = useState({ turns: {}, notes: [] });
  const [ended, setEnded] = useState(null);
  const [error, setError] = useState(null);
  const [asked, setAsked] = useState(null);
  const bottom = useRef(null);
  useEffect(() => {
    const abort = new AbortController();
    setState({ turns: {}, notes: [] });
    setEnded(null);
    setError(null);
    (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        let fresh = true;
        try {
          await readEvents(`/v1/calls/${id}/events/stream`, (kind, data) => {
            if (fresh) { setState({ turns: {}, notes: [] }); fresh = false; } // a reconnect replays every event
            if (kind === 'end') setEnded(data || {});
            else setState((s) => fold(s, kind, data));
          }, abort.signal);
          return; // the server closed the stream: the call has ended
        } catch (e) {
          if (abort.signal.aborted) return;
          if (e.status && e.status < 500) { setError(e); return; }
          await new Promise((r) => setTimeout(r, Math.min(10_000, 1000 * 2 ** attempt)));
        }
      }
    })();
    return () => abort.abort();
  }, [id]);
  useEffect(() => bottom.current?.scrollIntoView?.({ block: 'nearest' }), [state]);
  const hangup = async () => {
    try {
      await api.post(`/v1/calls/${id}/hangup`);
      setAsked('Hang-up requested.');
    } catch (e) {
      setAsked(e.status === 409 ? 'The call had already ended.' : null);
      if (e.status !== 409) setError(e);
    }
  };
  const turns = Object.values(state.turns).sort((a, b) => a.turn - b.turn);
  return html`<section class="live-call" data-testid="live-call" data-call=${id}>
    <div class="live-head">
      <h2>Call <${Link} to=${`/calls/${id}`} testid="live-detail-link">${id.slice(0, 8)}<//></h2>
      ${ended
        ? html`<span class="badge status-ended" data-testid="live-ended">ended${ended.end_reason ? `: ${ended.end_reason}` : ''}</span>`
        : html`<span class="badge status-active" data-testid="live-running">live</span>`}
      ${!ended && can('calls:write')
        ? html`<${ConfirmButton} testid="hangup" confirmLabel="Hang up now" onConfirm=${hangup}>Hang up<//>`
        : null}
      ${asked ? html`<span class="muted" data-testid="hangup-status">${asked}</span>` : null}
    </div>
    <${ErrorBox} error=${error} testid="live-error" />
    <ol class="live-transcript" data-testid="live-transcript" aria-live="polite">
      ${turns.map((t) => html`
        ${t.caller ? html`<li class=${`tr-caller${t.final ? '' : ' speculative'}`} data-testid="live-line" data-speaker="caller" data-final=${t.final ? 'true' : 'false'}>
          <span class="tr-who">caller</span> ${t.caller}</li>` : null}
        ${t.agent ? html`<li class="tr-agent" data-testid="live-line" data-speaker="agent">
          <span class="tr-who">agent</span> ${t.agent}${t.cut ? html` <em class="muted">(interrupted)</em>` : ''}
          ${t.v2v != null ? html` <span class="latency" data-testid="live-v2v">${formatLatency(t.v2v)}</span>` : null}</li>` : null}`)}
      <li ref=${bottom} class="live-end" aria-hidden="true"></li>
    </ol>
    ${state.notes.length
      ? html`<ul class="live-notes">${state.notes.map((n) => html`<li><code>${Number(n.t).toFixed(2)} s</code> ${n.what}</li>`)}</ul>`
      : null}
  </section>`;
}

const COLUMNS = [
  { key: 'started_at', label: 'Started', render: (c) => formatTime(c.started_at) },
  { key: 'agent_name', label: 'Agent', render: (c) => `${c.agent_name} v${c.agent_version}` },
  { key: 'transport', label: 'Transport' },
  { key: 'direction', label: 'Direction' },
  { key: 'caller', label: 'Caller', render: (c) => c.caller || '–' },
  { key: 'since', label: 'For', render: (c) => formatDuration((Date.now() - new Date(c.started_at).getTime()) / 1000) },
];

export default function Live({ query }) {
  ensureCallStyles();
  const selected = queryObject(query).call || null;
  const list = useAsync(() => api.page('/v1/calls', { status: 'active', limit: 100 }), []);
  useEffect(() => {
    const timer = setInterval(() => list.reload(), POLL_MS);
    return () => clearInterval(timer);
  }, []);
  const rows = list.data?.items || [];
  return html`<div class="live-view">
    <${PageHeader} title="Live calls" subtitle="Calls in progress on every transport; pick one to follow it." />
    <${ErrorBox} error=${list.error} />
    <div data-testid="live-count" data-count=${rows.length} class="muted">
      ${list.data ? `${list.data.total ?? rows.length} active` : 'Loading…'}</div>
    <${Table} columns=${COLUMNS} rows=${rows} testid="live-calls" empty="No calls are active right now."
      onRow=${(c) => navigate(`/live?call=${c.id}`)} />
    ${selected ? html`<${LiveCall} id=${selected} key=${selected} />` : null}
  </div>`;
}
