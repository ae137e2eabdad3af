// The tenant's agents: a list (name, description, version, last change), and a new agent from a template.
import { html, useState, useAsync, Table, Pager, ErrorBox, Loading, PageHeader, formatTime, navigate } from '../lib/ui.js';
import { api } from '../lib/api.js';
import { can } from '../lib/session.js';

const LIMIT = 50;
const TEMPLATES = [
  ['receptionist', 'Receptionist', 'Answers the phone for a dental clinic from its knowledge collection: greeting, short answers, barge-in. A good first agent.'],
  ['blank', 'Blank', 'The few fields every agent needs, to fill in yourself.'],
];

function NewAgent({ onClose }) {
  return html`<section class="card" data-testid="new-agent-panel" style="margin-bottom:1rem">
    <div class="page-header" style="margin-bottom:.75rem"><h2 style="margin:0">Start from</h2>
      <button class="btn ghost" onClick=${onClose}>Close</button></div>
    <div class="grid two">
      ${TEMPLATES.map(([id, name, text]) => html`<button class="btn" style="justify-content:flex-start;text-align:left;white-space:normal;padding:1rem;flex-direction:column;align-items:flex-start"
          onClick=${() => navigate(`/agents/new?template=${id}`)} data-testid=${`template-${id}`}>
        <strong>${name}</strong><span class="muted" style="font-weight:400">${text}</span></button>`)}
    </div>
  </section>`;
}

export default function Agents() {
  const [offset, setOffset] = useState(0);
  const [creating, setCreating] = useState(false);
  const list = useAsync(() => api.get('agents', { limit: LIMIT, offset }), [offset]);
  const columns = [
    { key: 'name', label: 'Name', render: (a) => html`<a href=${`#/agents/${a.id}`} data-testid="agent-link">${a.name}</a>` },
    { key: 'description', label: 'Description', render: (a) => html`<span class="muted">${a.document.description || '–'}</span>` },
    { key: 'version', label: 'Version', class: 'num' },
    { key: 'updated_at', label: 'Updated', render: (a) => formatTime(a.updated_at) },
    { key: 'talk', label: '', render: (a) => (can('talk') ? html`<a class="btn small" href=${`#/talk/${a.id}`} data-testid="agent-talk">Talk</a>` : null) },
  ];
  return html`<div data-testid="agents-view">
    <${PageHeader} title="Agents" subtitle="Each save is a new version; calls record the version they ran.">
      ${can('agents:write') ? html`<button class="btn primary" onClick=${() => setCreating(!creating)} aria-expanded=${creating}
        data-testid="new-agent">New agent</button>` : null}
    <//>
    ${creating ? html`<${NewAgent} onClose=${() => setCreating(false)} />` : null}
    <${ErrorBox} error=${list.error} />
    ${list.data === undefined ? html`<${Loading} />` : html`
      <${Table} columns=${columns} rows=${list.data} testid="agents" onRow=${(a) => navigate(`/agents/${a.id}`)}
        empty=${can('agents:write') ? 'No agents yet: start one from a template with "New agent".' : 'No agents yet.'} />
      ${offset > 0 || list.data.length >= LIMIT ? html`<${Pager} offset=${offset} limit=${LIMIT} total=${null} count=${list.data.length} onChange=${setOffset} />` : null}`}
  </div>`;
}
