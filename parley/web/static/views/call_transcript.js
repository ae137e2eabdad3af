// The call's transcript, one line per caller turn and agent reply, at its time in the recording.
// Clicking a line seeks the audio there; the line being played is highlighted (and its page shown while
// playing). Lines render a page at a time, so a call of thousands of turns never builds thousands of rows.
import { html, useEffect, useState } from '../lib/ui.js';

const PAGE = 100;

/** Lines {speaker, turn, text, t, interrupted}: the caller's from speech_start (speech_end where the VAD start
 * is not recorded: keypad turns, older calls), the agent's from its first audio out. */
export function transcriptLines(turns) {
  const lines = [];
  for (const turn of turns) {
    const t = turn.times || {};
    if (turn.turn > 0 && turn.caller_text) {
      const at = t.speech_start ?? t.speech_end ?? t.end_of_turn ?? 0;
      lines.push({ speaker: 'caller', turn: turn.turn, text: turn.caller_text, t: at });
    }
    if (turn.agent_text) {
      const at = t.first_audio_out ?? t.tts_first_audio ?? t.speech_end ?? 0;
      lines.push({ speaker: 'agent', turn: turn.turn, text: turn.agent_text, t: at, interrupted: turn.interrupted });
    }
  }
  return lines.sort((a, b) => a.t - b.t);
}

/** Index of the last line starting at or before `t` (-1: before the first). */
export function lineAt(lines, t) {
  let lo = 0;
  let hi = lines.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (lines[mid].t <= t + 0.05) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

const stamp = (t) => {
  const s = Math.max(0, t);
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}`;
};

export function Transcript({ lines, now, onSeek, follow }) {
  const active = lineAt(lines, now);
  const [page, setPage] = useState(0);
  const pages = Math.max(1, Math.ceil(lines.length / PAGE));
  useEffect(() => {
    if (follow && active >= 0 && Math.floor(active / PAGE) !== page) setPage(Math.floor(active / PAGE));
  }, [active, follow]);
  if (!lines.length) return html`<div class="empty" data-testid="transcript-empty">Nothing was said.</div>`;
  const first = page * PAGE;
  return html`<section class="transcript" data-testid="transcript">
    <ol class="tr-lines">
      ${lines.slice(first, first + PAGE).map((line, k) => {
        const i = first + k;
        return html`<li key=${i}>
          <button class=${`tr-line tr-${line.speaker}${i === active ? ' playing' : ''}`} data-testid="transcript-line"
              data-t=${line.t} data-speaker=${line.speaker} data-turn=${line.turn} aria-current=${i === active ? 'true' : undefined}
              onClick=${() => onSeek(line.t)}>
            <span class="tr-time">${stamp(line.t)}</span>
            <span class="tr-who">${line.speaker}</span>
            <span class="tr-text">${line.text}${line.interrupted ? html` <em class="muted">(interrupted)</em>` : ''}</span>
          </button>
        </li>`;
      })}
    </ol>
    ${pages > 1
      ? html`<div class="pager">
          <button class="btn" data-testid="transcript-prev" disabled=${page === 0} onClick=${() => setPage(page - 1)}>← Earlier</button>
          <span class="muted">lines ${first + 1}–${Math.min(lines.length, first + PAGE)} of ${lines.length}</span>
          <button class="btn" data-testid="transcript-next" disabled=${page >= pages - 1} onClick=${() => setPage(page + 1)}>Later →</button>
        </div>`
      : null}
  </section>`;
}
