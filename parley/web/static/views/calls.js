// Calls: the tenant's calls, filtered and paged by the API (GET /v1/calls with x-total-count), exported as CSV
// or JSON by GET /v1/calls/export with the same filters. The filters live in the URL (#/calls?status=ended…)
// so a filtered list can be bookmarked and the back button works.
import {
  html, useState, useRef, useAsync, ErrorBox, Table, Pager, PageHeader, Loading,
  formatDuration, formatTime, navigate,
} from '../lib/ui.js';
import { api } from '../lib/api.js';
import { ensureCallStyles, queryObject, saveBlob } from './call_style.js';

const LIMIT = 25;
const TRANSPORTS = ['talk', 'twilio', 'telnyx', 'vonage', 'plivo', 'freeswitch', 'exotel', 'sip'];
export const FILTERS = [
  'agent_id', 'agent_version', 'transport', 'direction', 'status', 'end_reason',
  'since', 'until', 'min_duration_s', 'max_duration_s', 'q',
];

/** The API's query for the filters in the URL: dates as whole days (until: the end of that day, inclusive). */
export function apiFilters(f) {
  const out = {};
  for (const k of FILTERS) if (f[k] !== undefined && f[k] !== '') out[k] = f[k];
  if (out.since && /^\d{4}-\d{2}-\d{2}$/.test(out.since)) out.since = `${out.since}T00:00:00`;
  if (out.until && /^\d{4}-\d{2}-\d{2}$/.test(out.until)) out.until = `${out.until}T23:59:59.999`;
  return out;
}

// Keyed by the filters in the URL (see Calls): a new URL remounts the form with them, so nothing resets a value
// typed after the navigation (an effect that copied them in ran a frame late and could undo the next input).
function Filters({ initial, agents, onApply }) {
  const [f, setF] = useState(initial);
  const bind = (k) => ({ value: f[k] ?? '', onInput: (e) => setF({ ...f, [k]: e.target.value }), id: `f-${k}`, name: k });
  const submit = (e) => { e.preventDefault(); onApply(f); };
  const field = (k, label, input) => html`<label class="cf-field" for=${`f-${k}`}><span>${label}</span>${input}</label>`;
  return html`<form class="call-filters" onSubmit=${submit} data-testid="call-filters">
    ${field('agent_id', 'Agent', html`<select ...${bind('agent_id')} data-testid="filter-agent">
      <option value="">any</option>${(agents || []).map((a) => html`<option value=${a.id}>${a.name}</option>`)}</select>`)}
    ${field('agent_version', 'Version', html`<input type="number" min="1" ...${bind('agent_version')} data-testid="filter-version" />`)}
    ${field('transport', 'Transport', html`<input list="transports" ...${bind('transport')} placeholder="any" data-testid="filter-transport" />
      <datalist id="transports">${TRANSPORTS.map((t) => html`<option value=${t} />`)}</datalist>`)}
    ${field('direction', 'Direction', html`<select ...${bind('direction')} data-testid="filter-direction">
      <option value="">any</option><option value="inbound">inbound</option><option value="outbound">outbound</option></select>`)}
    ${field('status', 'Status', html`<select ...${bind('status')} data-testid="filter-status">
      ${['', 'active', 'dialing', 'ended', 'failed'].map((t) => html`<option value=${t}>${t || 'any'}</option>`)}</select>`)}
    ${field('end_reason', 'End reason', html`<input ...${bind('end_reason')} placeholder="caller-hangup" data-testid="filter-end-reason" />`)}
    ${field('since', 'From', html`<input type="date" ...${bind('since')} data-testid="filter-since" />`)}
    ${field('until', 'To', html`<input type="date" ...${bind('until')} data-testid="filter-until" />`)}
    ${field('min_duration_s', 'Min s', html`<input type="number" min="0" step="1" ...${bind('min_duration_s')} data-testid="filter-min-duration" />`)}
    ${field('max_duration_s', 'Max s', html`<input type="number" min="0" step="1" ...${bind('max_duration_s')} data-testid="filter-max-duration" />`)}
    ${field('q', 'Transcript', html`<input type="search" ...${bind('q')} placeholder="words said" data-testid="filter-q" />`)}
    <div class="cf-buttons">
      <button class="btn primary" type="submit" data-testid="filter-apply">Apply</button>
      <button class="btn" type="button" data-testid="filter-clear" onClick=${() => onApply({})}>Clear</button>
    </div>
  </form>`;
}

const COLUMNS = [
  { key: 'started_at', label: 'Started', render: (c) => html`<a href=${`#/calls/${c.id}`} data-testid="call-link">${formatTime(c.started_at)}</a>` },
  { key: 'agent_name', label: 'Agent', render: (c) => `${c.agent_name} v${c.agent_version}` },
  { key: 'transport', label: 'Transport' },
  { key: 'direction', label: 'Direction' },
  { key: 'caller', label: 'Caller', render: (c) => c.caller || '–' },
  { key: 'status', label: 'Status', render: (c) => html`<span class=${`badge status-${c.status}`}>${c.status}</span>` },
  { key: 'duration_s', label: 'Duration', class: 'num', render: (c) => formatDuration(c.duration_s) },
  { key: 'end_reason', label: 'End reason', render: (c) => c.end_reason || '–' },
];

export default function Calls({ query }) {
  ensureCallStyles();
  const q = queryObject(query);
  const filters = Object.fromEntries(FILTERS.filter((k) => q[k]).map((k) => [k, q[k]]));
  const offset = Math.max(0, Number(q.offset) || 0);
  const key = JSON.stringify([filters, offset]);
  const agents = useAsync(() => api.get('/v1/agents', { limit: 200 }), []);
  const loads = useRef(0);  // data-loads: how many lists have arrived (a test waits for the one it asked for)
  const page = useAsync(() => api.page('/v1/calls', { ...apiFilters(filters), limit: LIMIT, offset })
    .then((r) => ({ ...r, n: ++loads.current })), [key]);
  const [exporting, setExporting] = useState(null);
  const [exportError, setExportError] = useState(null);

  const go = (f, off = 0) => {
    const p = new URLSearchParams(Object.entries(f).filter(([k, v]) => FILTERS.includes(k) && v !== '' && v != null));
    if (off) p.set('offset', String(off));
    navigate(`/calls${p.toString() ? `?${p}` : ''}`);
  };
  const download = async (format) => {
    setExporting(format);
    setExportError(null);
    try {
      const resp = await api.raw(api.url('/v1/calls/export', { ...apiFilters(filters), format }));
      if (!resp.ok) throw new Error(`export failed (${resp.status})`);
      saveBlob(await resp.blob(), `calls.${format}`);
    } catch (e) {
      setExportError(e);
    } finally {
      setExporting(null);
    }
  };

  const items = page.data?.items || [];
  return html`<div class="calls-view" data-testid="calls-view" data-loads=${page.loading ? '' : page.data?.n ?? 0}>
    <${PageHeader} title="Calls" subtitle="Every call of this tenant, newest first.">
      <button class="btn" data-testid="export-csv" disabled=${!!exporting} onClick=${() => download('csv')}>
        ${exporting === 'csv' ? 'Exporting…' : 'Export CSV'}</button>
      <button class="btn" data-testid="export-json" disabled=${!!exporting} onClick=${() => download('json')}>
        ${exporting === 'json' ? 'Exporting…' : 'Export JSON'}</button>
    <//>
    <${Filters} key=${JSON.stringify(filters)} initial=${filters} agents=${agents.data} onApply=${(f) => go(f)} />
    <${ErrorBox} error=${exportError} testid="export-error" />
    <${ErrorBox} error=${page.error} />
    ${page.loading && !page.data ? html`<${Loading} />` : null}
    ${page.data
      ? html`<div class="calls-total muted" data-testid="calls-total" data-total=${page.data.total ?? ''}>
            ${page.data.total ?? items.length} call${(page.data.total ?? items.length) === 1 ? '' : 's'}</div>
          <${Table} columns=${COLUMNS} rows=${items} testid="calls" empty="No calls match."
            onRow=${(c) => navigate(`/calls/${c.id}`)} />
          <${Pager} offset=${offset} limit=${LIMIT} total=${page.data.total} count=${items.length}
            onChange=${(off) => go(filters, off)} />`
      : null}
  </div>`;
}
