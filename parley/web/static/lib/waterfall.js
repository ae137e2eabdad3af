// Per-turn latency waterfall: each turn's stages as bars at their real offsets from the caller's speech end.
//
// Every number comes from the turn's `times` in the API's call record (seconds on the call clock, see
// parley/calls/turnlog.py and parley/pipeline/frames.py Stage), nothing is estimated:
//   VAD lag          speech_end      -> stt_start        the VAD's hangover: speech ended in the audio, the VAD
//                                                         reported the pause (STT starts on that pause)
//   pause detection  stt_start       -> end_of_turn      the turn detector's wait before it ended the turn
//   STT              stt_start       -> stt_final        transcription (runs during the pause: speculative)
//   LLM first token  stt_final       -> llm_first_token  the reply starts on the transcript
//   TTS first audio  llm_first_token -> tts_first_audio
//   playout          max(tts_first_audio, end_of_turn) -> first_audio_out
//                                                         a speculative reply waits for the end of turn, then
//                                                         the transport's buffer
// A stage is left out when either of its times is missing (a keypad turn has no VAD, the greeting no caller)
// or when it would be negative. Voice-to-voice is the record's own `voice_to_voice` (first_audio_out -
// speech_end). The call's p50/p95 are over the turns that have one, linearly interpolated between ranks
// (numpy.percentile's default), so a script gets the same numbers from the same record.
import { html, useState } from './ui.js';

export const STAGES = [
  { key: 'vad', label: 'VAD lag', from: (t) => t.speech_end, to: (t) => t.stt_start },
  { key: 'pause', label: 'pause detection', from: (t) => t.stt_start, to: (t) => t.end_of_turn },
  { key: 'stt', label: 'STT', from: (t) => t.stt_start, to: (t) => t.stt_final },
  { key: 'llm', label: 'LLM first token', from: (t) => t.stt_final, to: (t) => t.llm_first_token },
  { key: 'tts', label: 'TTS first audio', from: (t) => t.llm_first_token, to: (t) => t.tts_first_audio },
  {
    key: 'playout',
    label: 'playout',
    from: (t) => (t.tts_first_audio === undefined ? undefined : Math.max(t.tts_first_audio, t.end_of_turn ?? -Infinity)),
    to: (t) => t.first_audio_out,
  },
];

const round3 = (v) => Math.round(v * 1000) / 1000;

/** One turn's stages: [{key, label, start (s after speech_end, or after the first stamp), dur (s)}]. */
export function turnStages(times) {
  const t = times || {};
  const origin = t.speech_end ?? Math.min(...Object.values(t));
  const out = [];
  for (const s of STAGES) {
    const a = s.from(t);
    const b = s.to(t);
    if (a === undefined || b === undefined || !isFinite(a) || !isFinite(b) || b < a) continue;
    out.push({ key: s.key, label: s.label, start: round3(a - origin), dur: round3(b - a) });
  }
  return out;
}

/** numpy.percentile(values, q) with linear interpolation; null for no values. */
export function percentile(values, q) {
  if (!values.length) return null;
  const v = [...values].sort((a, b) => a - b);
  const pos = ((v.length - 1) * q) / 100;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

/** The call's summary: p50, p95, the worst turn and its biggest stage. */
export function summarise(turns) {
  const timed = turns.filter((t) => t.voice_to_voice !== null && t.voice_to_voice !== undefined);
  const v2v = timed.map((t) => t.voice_to_voice);
  let worst = null;
  for (const t of timed) if (!worst || t.voice_to_voice > worst.voice_to_voice) worst = t;
  let biggest = null;
  if (worst) for (const s of turnStages(worst.times)) if (!biggest || s.dur > biggest.dur) biggest = s;
  return { p50: percentile(v2v, 50), p95: percentile(v2v, 95), worst, biggest, count: timed.length };
}

const ms = (s) => (s === null || s === undefined ? '—' : `${Math.round(s * 1000)} ms`);
const PAGE = 50;

function TurnRow({ turn, scale }) {
  const stages = turnStages(turn.times);
  const pct = (s) => `${Math.min(100, (s / scale) * 100)}%`;
  return html`<div class="wf-row" data-testid="waterfall-turn" data-turn=${turn.turn}
      data-v2v=${turn.voice_to_voice ?? ''}>
    <div class="wf-label">turn ${turn.turn}${turn.interrupted ? ' ✂' : ''}</div>
    <div class="wf-bars">
      ${stages.map(
        (s) => html`<div class="wf-lane" title=${`${s.label}: ${ms(s.dur)} (from +${ms(s.start)})`}>
          <span class="wf-text">${s.label} <b>${ms(s.dur)}</b></span>
          <span class="wf-track">
            <span class=${`wf-bar wf-${s.key}`} data-testid="waterfall-stage" data-stage=${s.key}
              data-start=${s.start} data-dur=${s.dur}
              style=${`left:${pct(Math.max(0, s.start))};width:max(2px,${pct(s.dur)})`}></span>
            ${turn.voice_to_voice != null ? html`<span class="wf-v2v" style=${`left:${pct(turn.voice_to_voice)}`}></span>` : null}
          </span>
        </div>`,
      )}
    </div>
    <div class="wf-total">${ms(turn.voice_to_voice)}</div>
  </div>`;
}

/** The waterfall of a call's turns (paged: a call of thousands of turns renders one page at a time). */
export function Waterfall({ turns }) {
  const [page, setPage] = useState(0);
  const timed = turns.filter((t) => Object.keys(t.times || {}).length);
  const sum = summarise(turns);
  const ends = timed.flatMap((t) => turnStages(t.times).map((s) => s.start + s.dur));
  const scale = Math.max(0.5, ...ends, ...timed.map((t) => t.voice_to_voice || 0));
  const pages = Math.max(1, Math.ceil(timed.length / PAGE));
  const shown = timed.slice(page * PAGE, (page + 1) * PAGE);
  return html`<section class="waterfall" data-testid="waterfall">
    <div class="wf-summary" data-testid="waterfall-summary" data-p50=${sum.p50 ?? ''} data-p95=${sum.p95 ?? ''}
        data-worst-turn=${sum.worst?.turn ?? ''} data-worst-stage=${sum.biggest?.key ?? ''}>
      <span>voice-to-voice p50 <b>${ms(sum.p50)}</b></span>
      <span>p95 <b>${ms(sum.p95)}</b></span>
      <span>${sum.worst
        ? html`worst: turn <b>${sum.worst.turn}</b>, ${ms(sum.worst.voice_to_voice)}${sum.biggest
            ? html`, mostly <b>${sum.biggest.label}</b> (${ms(sum.biggest.dur)})`
            : ''}`
        : 'no timed turns'}</span>
    </div>
    <div class="wf-legend">${STAGES.map((s) => html`<span class=${`wf-key wf-${s.key}`}>${s.label}</span>`)}
      <span class="wf-key wf-v2v-key">voice-to-voice</span></div>
    ${shown.map((t) => html`<${TurnRow} turn=${t} scale=${scale} />`)}
    ${pages > 1
      ? html`<div class="pager">
          <button data-testid="waterfall-prev" disabled=${page === 0} onClick=${() => setPage(page - 1)}>‹</button>
          <span>page ${page + 1} of ${pages}</span>
          <button data-testid="waterfall-next" disabled=${page >= pages - 1} onClick=${() => setPage(page + 1)}>›</button>
        </div>`
      : null}
  </section>`;
}
