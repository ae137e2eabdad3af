// Analytics: for a date range and optionally one agent, what GET /v1/analytics computes in the database: calls and
// minutes per day, voice-to-voice p50/p95 per day (uPlot charts), totals, end reasons and transports.
import { html, useState, useEffect, useRef, useMemo, useAsync, ErrorBox, Loading, PageHeader, formatLatency } from '../lib/ui.js';
import { api } from '../lib/api.js';
import uPlot from '../vendor/uplot/dist/uPlot.esm.js';

const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const PRESETS = [[7, '7 days'], [30, '30 days'], [90, '90 days']];
const CHART_HEIGHT = 220;

const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
function daysAgo(n) { const d = new Date(); d.setHours(0, 0, 0, 0); d.setDate(d.getDate() - n); return d; }
function nextDay(day) { const d = new Date(`${day}T00:00:00`); d.setDate(d.getDate() + 1); return iso(d); }
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** A uPlot chart that follows its container's width; kept at a fixed height so the page does not jump. */
function Chart({ data, series, yLabel, bars, testid, format }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current) return undefined;
    const grid = { stroke: css('--border'), width: 1 };
    const axis = { stroke: css('--muted'), grid, ticks: grid };
    const opts = {
      width: box.current.clientWidth || 600,
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, bars ? 1 : 0.1)] } },
      axes: [axis, { ...axis, label: yLabel, size: 56, values: (u, vals) => vals.map(format || ((v) => v)) }],
      series: [{}, ...series.map((s) => ({
        label: s.label,
        stroke: css(s.color),
        fill: bars ? `${css(s.color)}` : undefined,
        width: bars ? 0 : 2,
        points: { show: !bars, size: 5 },
        spanGaps: false,
        value: (u, v) => (v === null || v === undefined ? '–' : format ? format(v) : v),
        paths: bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
      }))],
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
    };
    const chart = new uPlot(opts, data, box.current);
    const resize = new ResizeObserver(() => chart.setSize({ width: box.current.clientWidth, height: CHART_HEIGHT }));
    resize.observe(box.current);
    return () => { resize.disconnect(); chart.destroy(); };
  }, [data]);
  return html`<div class="chart" ref=${box} data-testid=${testid} role="img" aria-label=${yLabel}></div>`;
}

function Stat({ label, value, sub, testid }) {
  return html`<div class="card stat" data-testid=${testid}><div class="label">${label}</div><div class="value">${value}</div>${sub ? html`<div class="sub">${sub}</div>` : null}</div>`;
}

function Breakdown({ title, counts, testid }) {
  const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
  const most = Math.max(1, ...entries.map(([, n]) => n));
  return html`<section class="card" data-testid=${testid}><h2>${title}</h2>
    ${entries.length ? html`<ul class="bars">${entries.map(([k, n]) => html`<li><span class="name" title=${k}>${k}</span>
      <span class="bar" style=${`width:${(100 * n) / most}%`}></span><span class="num">${n}</span></li>`)}</ul>`
      : html`<p class="muted">No calls in this range.</p>`}
  </section>`;
}

function Filters({ range, setRange, agents }) {
  const set = (k) => (e) => setRange({ ...range, [k]: e.target.value });
  return html`<div class="toolbar" data-testid="analytics-filters">
    <div class="field"><label for="an-since">From</label><input id="an-since" type="date" value=${range.since} max=${range.until} onChange=${set('since')} data-testid="analytics-since" /></div>
    <div class="field"><label for="an-until">To</label><input id="an-until" type="date" value=${range.until} min=${range.since} onChange=${set('until')} data-testid="analytics-until" /></div>
    <div class="field"><label for="an-agent">Agent</label>
      <select id="an-agent" value=${range.agent} onChange=${set('agent')} data-testid="analytics-agent">
        <option value="">All agents</option>
        ${(agents || []).map((a) => html`<option value=${a.id}>${a.name}</option>`)}
      </select></div>
    <div class="field"><span class="hint">Quick</span><div class="inline">
      ${PRESETS.map(([n, label]) => html`<button class="btn small" onClick=${() => setRange({ ...range, since: iso(daysAgo(n - 1)), until: iso(daysAgo(0)) })}>${label}</button>`)}
    </div></div>
  </div>`;
}

const pct = (v) => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(1)}%`);

export default function Analytics() {
  const [range, setRange] = useState({ since: iso(daysAgo(29)), until: iso(daysAgo(0)), agent: '' });
  const agents = useAsync(() => api.get('agents', { limit: 200 }), []);
  const figures = useAsync(() => api.get('analytics', {
    since: `${range.since}T00:00:00`, until: `${nextDay(range.until)}T00:00:00`, tz: TZ, agent_id: range.agent,
  }), [range.since, range.until, range.agent]);
  const f = figures.data;
  const [calls, v2v] = useMemo(() => {
    if (!f) return [null, null];
    const xs = f.days.map((d) => new Date(`${d.date}T12:00:00`).getTime() / 1000);
    return [[xs, f.days.map((d) => d.calls)], [xs, f.days.map((d) => d.v2v_p50), f.days.map((d) => d.v2v_p95)]];
  }, [f]);
  const t = f && f.totals;
  return html`<div data-testid="analytics-view">
    <${PageHeader} title="Analytics" subtitle=${`Computed by the API from the call records; days in ${TZ}.`} />
    <${Filters} range=${range} setRange=${setRange} agents=${agents.data} />
    <${ErrorBox} error=${figures.error} />
    ${!f ? html`<${Loading} />` : html`<div class="stack" style=${figures.loading ? 'opacity:.6' : ''}>
      <div class="grid stats">
        <${Stat} label="Calls" value=${t.calls} testid="total-calls" />
        <${Stat} label="Minutes" value=${t.minutes.toFixed(1)} testid="total-minutes" />
        <${Stat} label="Turns" value=${t.turns} testid="total-turns" />
        <${Stat} label="Voice-to-voice p50" value=${formatLatency(t.v2v_p50)} sub=${`avg ${formatLatency(t.v2v_avg)} · ${t.v2v_samples} turns`} testid="total-p50" />
        <${Stat} label="Voice-to-voice p95" value=${formatLatency(t.v2v_p95)} testid="total-p95" />
        <${Stat} label="Interruptions" value=${pct(t.interruption_rate)} sub="of turns" testid="total-interruptions" />
      </div>
      <div class="grid two">
        <section class="card"><h2>Calls per day</h2>
          <${Chart} data=${calls} bars=${true} yLabel="calls" testid="chart-calls" series=${[{ label: 'calls', color: '--accent' }]} /></section>
        <section class="card"><h2>Voice-to-voice per day</h2>
          <${Chart} data=${v2v} yLabel="seconds" testid="chart-v2v" format=${(v) => formatLatency(v)}
            series=${[{ label: 'p50', color: '--caller' }, { label: 'p95', color: '--agent' }]} /></section>
      </div>
      <div class="grid two">
        <${Breakdown} title="End reasons" counts=${f.end_reasons} testid="end-reasons" />
        <${Breakdown} title="Transports" counts=${f.transports} testid="transports" />
      </div>
    </div>`}
  </div>`;
}
