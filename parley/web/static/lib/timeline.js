// The speaking timeline of a call: who spoke when, and what happened, at the call's real times.
//
// From the record only (seconds on the call clock, the recording's time):
//   caller speech    turn.times speech_start -> speech_end   (the VAD's)
//   pause            speech_end -> end_of_turn                (the silence the turn detector waited through)
//   end of turn      end_of_turn                              (the turn detector's decision)
//   agent speech     first_audio_out -> agent_end             (cut short when the turn was interrupted)
//   interruption     event `interruption` t
//   DTMF             event `dtmf` t (its digit)
//   action           event `action` t (hang_up, transfer, ...)
//   tool call        event `tool` t - duration_ms -> t        (the event is written when the tool returned)
import { html, useMemo } from './ui.js';

export const LANES = [
  { key: 'caller', label: 'caller' },
  { key: 'agent', label: 'agent' },
  { key: 'interruption', label: 'interruptions' },
  { key: 'dtmf', label: 'DTMF' },
  { key: 'action', label: 'actions' },
  { key: 'tool', label: 'tool calls' },
];

/** Timeline items {lane, kind, start, end, label} from a call record's turns and events. */
export function timelineItems(turns, events) {
  const items = [];
  for (const turn of turns) {
    const t = turn.times || {};
    if (t.speech_start !== undefined && t.speech_end !== undefined)
      items.push({ lane: 'caller', kind: 'speech', start: t.speech_start, end: t.speech_end, label: turn.caller_text });
    if (t.speech_end !== undefined && t.end_of_turn !== undefined && t.end_of_turn > t.speech_end)
      items.push({ lane: 'caller', kind: 'pause', start: t.speech_end, end: t.end_of_turn, label: 'pause' });
    if (t.end_of_turn !== undefined && turn.turn > 0)
      items.push({ lane: 'caller', kind: 'eot', start: t.end_of_turn, end: t.end_of_turn, label: `end of turn ${turn.turn}` });
    if (t.first_audio_out !== undefined) {
      const end = t.agent_end ?? t.first_audio_out;
      items.push({
        lane: 'agent',
        kind: turn.interrupted ? 'speech-cut' : 'speech',
        start: t.first_audio_out,
        end: Math.max(end, t.first_audio_out),
        label: turn.agent_text,
      });
    }
  }
  for (const e of events) {
    const d = e.data || {};
    if (e.kind === 'interruption') items.push({ lane: 'interruption', kind: 'mark', start: e.t, end: e.t, label: 'interruption' });
    else if (e.kind === 'dtmf') items.push({ lane: 'dtmf', kind: 'mark', start: e.t, end: e.t, label: `key ${d.digit ?? ''}` });
    else if (e.kind === 'action') items.push({ lane: 'action', kind: 'mark', start: e.t, end: e.t, label: String(d.action ?? 'action') });
    else if (e.kind === 'tool') {
      const dur = (Number(d.duration_ms) || 0) / 1000;
      items.push({ lane: 'tool', kind: d.ok === false ? 'failed' : 'span', start: Math.max(0, e.t - dur), end: e.t, label: String(d.tool ?? 'tool') });
    }
  }
  return items;
}

/** The timeline; `duration` in seconds, `onSeek(t)` when clicked, `playhead` a ref the caller moves. */
export function Timeline({ turns, events, duration, onSeek, playhead }) {
  const items = useMemo(() => timelineItems(turns, events), [turns, events]);
  const span = Math.max(duration || 0, ...items.map((i) => i.end), 0.001);
  const pct = (t) => `${(Math.max(0, t) / span) * 100}%`;
  const seek = (ev) => {
    const box = ev.currentTarget.getBoundingClientRect();
    if (onSeek) onSeek(((ev.clientX - box.left) / box.width) * span);
  };
  return html`<section class="timeline" data-testid="timeline">
    ${LANES.map(
      (lane) => html`<div class="tl-lane" data-lane=${lane.key}>
        <div class="tl-label">${lane.label}</div>
        <div class="tl-track" data-testid=${`timeline-${lane.key}`} onClick=${seek}>
          ${items
            .filter((i) => i.lane === lane.key)
            .map(
              (i) => html`<span class=${`tl-item tl-${lane.key} tl-${i.kind}`} data-testid="timeline-item"
                  data-kind=${`${lane.key}:${i.kind}`} data-start=${i.start} data-end=${i.end}
                  title=${`${i.label || lane.label} @ ${i.start.toFixed(2)} s${i.end > i.start ? ` – ${i.end.toFixed(2)} s` : ''}`}
                  style=${`left:${pct(i.start)};width:${i.end > i.start ? `max(2px,${pct(i.end - i.start)})` : '2px'}`}></span>`,
            )}
        </div>
      </div>`,
    )}
    <div class="tl-playhead-track"><div class="tl-playhead" ref=${playhead}></div></div>
  </section>`;
}
