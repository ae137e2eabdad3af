// Every event the call record holds, in order, a page at a time and filterable by kind; and the post-call
// analysis where the agent asked for one.
import { html, useMemo, useState } from '../lib/ui.js';

const PAGE = 100;

function brief(data) {
  const { type, ...rest } = data || {};
  const text = JSON.stringify(rest);
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

// an event written without a time of its own (transcripts, replies, turn metrics) is stored at 0: its turn says when
const at = (e) => (e.t === 0 && e.data?.t === undefined ? (e.data?.turn !== undefined ? `turn ${e.data.turn}` : '–') : Number(e.t).toFixed(3));

export function Events({ events }) {
  const [kind, setKind] = useState('');
  const [page, setPage] = useState(0);
  const kinds = useMemo(() => [...new Set(events.map((e) => e.kind))].sort(), [events]);
  const shown = kind ? events.filter((e) => e.kind === kind) : events;
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  const p = Math.min(page, pages - 1);
  return html`<section class="events" data-testid="events">
    <div class="ev-head">
      <label for="ev-kind">Kind</label>
      <select id="ev-kind" data-testid="events-kind" value=${kind} onChange=${(e) => { setKind(e.target.value); setPage(0); }}>
        <option value="">all (${events.length})</option>
        ${kinds.map((k) => html`<option value=${k}>${k}</option>`)}
      </select>
    </div>
    ${shown.length
      ? html`<table class="ev-table"><thead><tr><th scope="col">t (s)</th><th scope="col">kind</th><th scope="col">data</th></tr></thead>
          <tbody>${shown.slice(p * PAGE, (p + 1) * PAGE).map(
            (e, i) => html`<tr key=${p * PAGE + i} data-testid="event-row" data-kind=${e.kind}>
              <td class="num">${at(e)}</td><td><code>${e.kind}</code></td>
              <td class="ev-data"><code>${brief(e.data)}</code></td></tr>`,
          )}</tbody></table>`
      : html`<div class="empty">No events.</div>`}
    ${pages > 1
      ? html`<div class="pager">
          <button class="btn" data-testid="events-prev" disabled=${p === 0} onClick=${() => setPage(p - 1)}>← Previous</button>
          <span class="muted">page ${p + 1} of ${pages}</span>
          <button class="btn" data-testid="events-next" disabled=${p >= pages - 1} onClick=${() => setPage(p + 1)}>Next →</button>
        </div>`
      : null}
  </section>`;
}

const show = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

export function Analysis({ analysis }) {
  if (!analysis) return null;
  const { status, summary, success, success_reason: reason, fields, error, ...rest } = analysis;
  return html`<section class="analysis" data-testid="analysis">
    <h2>Analysis</h2>
    <dl>
      ${status ? html`<dt>status</dt><dd data-testid="analysis-status">${status}</dd>` : null}
      ${summary ? html`<dt>summary</dt><dd data-testid="analysis-summary">${summary}</dd>` : null}
      ${success !== undefined && success !== null
        ? html`<dt>success</dt><dd data-testid="analysis-success">${success ? 'yes' : 'no'}${reason ? ` — ${reason}` : ''}</dd>`
        : null}
      ${error ? html`<dt>error</dt><dd>${show(error)}</dd>` : null}
      ${Object.entries(fields || {}).map(([k, v]) => html`<dt>${k}</dt><dd>${show(v)}</dd>`)}
      ${Object.entries(rest).map(([k, v]) => html`<dt>${k}</dt><dd>${show(v)}</dd>`)}
    </dl>
  </section>`;
}
