// One call: its recording on a waveform, the speaking timeline, the transcript (click to seek, the playing line
// highlighted), the per-turn latency waterfall, every event, the analysis, and downloads. All of it is the
// API's record (GET /v1/calls/{id}); another tenant's call id is the API's 404, shown as "not found".
import {
  html, useMemo, useRef, useState, useAsync, ErrorBox, Loading, PageHeader, Link,
  formatDuration, formatTime,
} from '../lib/ui.js';
import { api } from '../lib/api.js';
import { Timeline } from '../lib/timeline.js';
import { Waterfall } from '../lib/waterfall.js';
import { ensureCallStyles, saveBlob } from './call_style.js';
import { Player } from './call_player.js';
import { Transcript, transcriptLines } from './call_transcript.js';
import { Events, Analysis } from './call_events.js';

function Facts({ call }) {
  const fact = (label, value, testid) => html`<div><dt>${label}</dt><dd data-testid=${testid}>${value ?? '–'}</dd></div>`;
  return html`<dl class="call-facts" data-testid="call-facts">
    ${fact('Agent', html`<${Link} to=${`/agents/${call.agent_id}`}>${call.agent_name}<//> v${call.agent_version}`, 'call-agent')}
    ${fact('Status', html`<span class=${`badge status-${call.status}`}>${call.status}</span>`, 'call-status')}
    ${fact('Started', formatTime(call.started_at))}
    ${fact('Duration', formatDuration(call.duration_s), 'call-duration')}
    ${fact('End reason', call.end_reason, 'call-end-reason')}
    ${fact('Transport', `${call.transport} · ${call.direction}`)}
    ${fact('Caller', call.caller)}
    ${fact('Called', call.called)}
  </dl>`;
}

function Downloads({ call }) {
  const [error, setError] = useState(null);
  const wav = async () => {
    setError(null);
    try {
      const tok = await api.post(`/v1/calls/${call.id}/recording-token`);
      const a = document.createElement('a'); // same origin: the token URL answers with an attachment
      a.href = tok.url;
      a.download = `call-${call.id}.wav`;
      document.body.appendChild(a);
      a.click();
      a.remove();
    } catch (e) {
      setError(e);
    }
  };
  const json = () => saveBlob(new Blob([JSON.stringify(call, null, 2)], { type: 'application/json' }), `call-${call.id}.json`);
  return html`<div class="downloads">
    <button class="btn" data-testid="download-wav" disabled=${!call.recording_bytes} onClick=${wav}>Download WAV</button>
    <button class="btn" data-testid="download-json" onClick=${json}>Download JSON</button>
    <${ErrorBox} error=${error} testid="download-error" />
  </div>`;
}

function Detail({ call }) {
  const controls = useRef(null);
  const clock = useRef(null);
  const [now, setNow] = useState(0);
  const [playing, setPlaying] = useState(false);
  const last = useRef(0);
  const lines = useMemo(() => transcriptLines(call.turns), [call]);
  const seek = (t) => {
    controls.current?.seek(t);
    setNow(t);
  };
  const onTime = (t) => {
    clock.current?.(t); // the timeline's playhead
    const a = controls.current?.audio;
    if (a) setPlaying(!a.paused); // the same value again renders nothing
    if (Math.abs(t - last.current) > 0.25) { // the transcript's highlight: a few times a second is plenty
      last.current = t;
      setNow(t);
    }
  };
  return html`<div class="call-detail">
    <${Facts} call=${call} />
    ${call.status === 'active' ? html`<p class="notice">This call is live: <${Link} to=${`/live?call=${call.id}`} testid="watch-live">watch it live<//>.</p>` : null}
    <h2>Recording</h2>
    <${Player} call=${call} onReady=${(c) => { controls.current = c; }} onTime=${onTime} />
    <h2>Timeline</h2>
    <${Timeline} turns=${call.turns} events=${call.events} duration=${call.duration_s} onSeek=${seek} clock=${clock} />
    <div class="call-columns">
      <div class="call-col">
        <h2>Transcript</h2>
        <${Transcript} lines=${lines} now=${now} onSeek=${seek} follow=${playing} />
      </div>
      <div class="call-col">
        <h2>Latency</h2>
        <${Waterfall} turns=${call.turns} />
      </div>
    </div>
    <${Analysis} analysis=${call.analysis} />
    <h2>Events</h2>
    <${Events} events=${call.events} />
  </div>`;
}

export default function Call({ params }) {
  ensureCallStyles();
  const id = params?.id;
  const call = useAsync(() => api.get(`/v1/calls/${encodeURIComponent(id)}`), [id]);
  const missing = call.error && (call.error.status === 404 || call.error.status === 422);
  return html`<div class="call-view">
    <${PageHeader} title="Call" subtitle=${id}>
      ${call.data ? html`<${Downloads} call=${call.data} />` : null}
      <${Link} to="/calls" class="btn" testid="back-to-calls">All calls<//>
    <//>
    ${missing
      ? html`<div class="empty not-found" role="alert" data-testid="not-found">Call not found: there is no call ${id} for this tenant.</div>`
      : html`<${ErrorBox} error=${call.error} />`}
    ${call.loading && !call.data ? html`<${Loading} />` : null}
    ${call.data ? html`<${Detail} call=${call.data} />` : null}
  </div>`;
}
