// The speaking timeline of a call: who spoke when, and what happened, at the call's real times.
//
// From the record only (seconds on the call clock, the recording's time):
//   caller speech    turn.times speech_start -> speech_end   (the VAD's)
//   pause            speech_end -> end_of_turn                (the silence the turn detector waited through)
//   end of turn      end_of_turn                              (the turn detector's decision)
//   agent speech     first_audio_out -> agent_end             (cut short when the turn was interrupted)
//   interruption     event `interruption` t
//   DTMF             event `dtmf` t (its digit)
//   action           event `action` t (hang_up, transfer, ...); `hangup` (by the operator), `error` (a failed reply)
//   tool call        event `tool` t - duration_ms -> t        (the event is written when the tool returned)
import { html, useEffect, useMemo, useRef, useState } from './ui.js';

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
    else if (e.kind === 'hangup') items.push({ lane: 'action', kind: 'hangup', start: e.t, end: e.t, label: `hung up by ${d.by ?? '?'}` });
    else if (e.kind === 'error') items.push({ lane: 'action', kind: 'error', start: e.t, end: e.t, label: `${d.stage ?? ''} error` });
    else if (e.kind === 'tool') {
      const dur = (Number(d.duration_ms) || 0) / 1000;
      items.push({ lane: 'tool', kind: d.ok === false ? 'failed' : 'span', start: Math.max(0, e.t - dur), end: e.t, label: String(d.tool ?? 'tool') });
    }
  }
  return items;
}

const COLOURS = {
  'caller:speech': ['--caller', '#0e7490'], 'caller:pause': ['--caller', '#0e7490', 0.35], 'caller:eot': ['--text', '#161a21'],
  'agent:speech': ['--agent', '#7c3aed'], 'agent:speech-cut': ['--warn', '#9a6700'],
  'interruption:mark': ['--danger', '#c22f2f'], 'dtmf:mark': ['--accent', '#4f46e5'],
  'action:mark': ['--ok', '#157347'], 'action:hangup': ['--ok', '#157347'], 'action:error': ['--danger', '#c22f2f'],
  'tool:span': ['--muted', '#5f6b7a'], 'tool:failed': ['--danger', '#c22f2f'],
};
const LANE_PX = 18;

/** Draws the items on a canvas: thousands of turns cost one paint, not thousands of elements. */
function paint(canvas, items, from, to) {
  const span = to - from;
  const width = canvas.clientWidth;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(width * ratio));
  canvas.height = Math.round(LANES.length * LANE_PX * ratio);
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  const css = getComputedStyle(canvas);
  const lane = Object.fromEntries(LANES.map((l, i) => [l.key, i]));
  for (const i of items) {
    if (i.end < from || i.start > to) continue;
    const [name, fallback, alpha = 1] = COLOURS[`${i.lane}:${i.kind}`] || ['--muted', '#5f6b7a'];
    g.fillStyle = css.getPropertyValue(name).trim() || fallback;
    g.globalAlpha = alpha;
    const x = ((i.start - from) / span) * width;
    const w = Math.max(i.end > i.start ? 1 : 2, ((i.end - i.start) / span) * width);
    const mark = i.kind === 'mark' || i.kind === 'eot' || i.kind === 'hangup' || i.kind === 'error';
    const y = lane[i.lane] * LANE_PX + (mark ? 1 : 4);
    g.fillRect(x, y, w, mark ? LANE_PX - 2 : LANE_PX - 8);
  }
  g.globalAlpha = 1;
}

/** The item under a point (for the tooltip): the nearest in its lane within a few pixels. */
function itemAt(items, laneKey, t, slack) {
  let best = null;
  for (const i of items) {
    if (i.lane !== laneKey || t < i.start - slack || t > i.end + slack) continue;
    if (!best || Math.abs((i.start + i.end) / 2 - t) < Math.abs((best.start + best.end) / 2 - t)) best = i;
  }
  return best;
}

export const ZOOMS = [
  { key: 'all', label: 'whole call', seconds: 0 },
  { key: '600', label: '10 min', seconds: 600 },
  { key: '60', label: '1 min', seconds: 60 },
  { key: '15', label: '15 s', seconds: 15 },
];

/** The window shown: the whole call, or `seconds` around `t` (kept inside the call). */
export function windowAt(span, seconds, t) {
  if (!seconds || seconds >= span) return [0, span];
  const from = Math.min(Math.max(0, t - seconds / 2), span - seconds);
  return [from, from + seconds];
}

/**
 * The timeline; `duration` in seconds, `onSeek(t)` when clicked, `clock` a ref that gets a function the player
 * calls with the play position (it moves the playhead without re-rendering the view).
 */
export function Timeline({ turns, events, duration, onSeek, clock }) {
  const items = useMemo(() => timelineItems(turns, events), [turns, events]);
  const span = Math.max(duration || 0, ...items.map((i) => i.end), 0.001);
  const canvas = useRef(null);
  const head = useRef(null);
  const [zoom, setZoom] = useState(ZOOMS[0].seconds);
  const [centre, setCentre] = useState(0);
  const [from, to] = windowAt(span, zoom, centre);
  const counts = useMemo(() => {
    const c = {};
    for (const i of items) c[`${i.lane}:${i.kind}`] = (c[`${i.lane}:${i.kind}`] || 0) + 1;
    return c;
  }, [items]);
  useEffect(() => {
    const el = canvas.current;
    if (!el) return undefined;
    paint(el, items, from, to);
    const watch = new ResizeObserver(() => paint(el, items, from, to));
    watch.observe(el);
    return () => watch.disconnect();
  }, [items, from, to]);
  const place = (t) => {
    if (head.current) {
      head.current.style.left = `${((t - from) / (to - from)) * 100}%`;
      head.current.hidden = t < from || t > to;
    }
  };
  if (clock) {
    clock.current = (t) => {
      place(t);
      if (zoom && (t < from || t > to - zoom * 0.1)) setCentre(t + zoom * 0.4); // a page on when it reaches the edge
    };
  }
  const where = (ev) => {
    const box = ev.currentTarget.getBoundingClientRect();
    const t = from + ((ev.clientX - box.left) / box.width) * (to - from);
    const laneKey = LANES[Math.min(LANES.length - 1, Math.floor((ev.clientY - box.top) / LANE_PX))]?.key;
    return { t, laneKey, slack: (3 / box.width) * (to - from) };
  };
  const hover = (ev) => {
    const { t, laneKey, slack } = where(ev);
    const i = itemAt(items, laneKey, t, slack);
    ev.currentTarget.title = i
      ? `${i.label || i.kind} @ ${i.start.toFixed(2)} s${i.end > i.start ? ` – ${i.end.toFixed(2)} s` : ''}`
      : `${t.toFixed(2)} s`;
  };
  const seek = (ev) => {
    const { t } = where(ev);
    onSeek?.(t);
    place(t);
  };
  const pickZoom = (e) => {
    const seconds = Number(e.target.value);
    setZoom(seconds);
    const at = head.current ? from + (parseFloat(head.current.style.left || '0') / 100) * (to - from) : 0;
    setCentre(at);
  };
  return html`<section class="timeline-wrap">
    <div class="tl-tools">
      <label for="tl-zoom">Show</label>
      <select id="tl-zoom" data-testid="timeline-zoom" value=${zoom} onChange=${pickZoom}>
        ${ZOOMS.filter((z) => !z.seconds || z.seconds < span).map((z) => html`<option value=${z.seconds}>${z.label}</option>`)}
      </select>
      <span class="muted" data-testid="timeline-window">${from.toFixed(1)} s – ${to.toFixed(1)} s</span>
    </div>
    <div class="timeline" data-testid="timeline" data-kinds=${JSON.stringify(counts)} data-from=${from} data-to=${to}>
      <div class="tl-labels" aria-hidden="true">${LANES.map((l) => html`<div class="tl-label">${l.label}</div>`)}</div>
      <div class="tl-area">
        <canvas ref=${canvas} class="tl-canvas" data-testid="timeline-canvas" style=${`height:${LANES.length * LANE_PX}px`}
          role="img" aria-label=${`speaking timeline: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ')}`}
          onClick=${seek} onMouseMove=${hover}></canvas>
        <div class="tl-playhead" ref=${head}></div>
      </div>
    </div>
  </section>`;
}
