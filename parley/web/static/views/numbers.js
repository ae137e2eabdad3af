// Phone numbers (and SIP users) mapped to agents: a call to a number reaches its agent. The operator assigns
// numbers to a tenant (`parley admin numbers assign`); here a tenant maps its numbers to its agents.
import { html, useState, useAsync, Table, ErrorBox, Loading, PageHeader, Field, ConfirmButton, formatTime } from '../lib/ui.js';
import { api } from '../lib/api.js';
import { can } from '../lib/session.js';

function MapForm({ agents, onMapped }) {
  const [number, setNumber] = useState('');
  const [agent, setAgent] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const chosen = agent || (agents[0] && agents[0].id) || '';
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true); setError(null);
    try {
      await api.post('numbers', { number: number.trim(), agent_id: chosen });
      setNumber('');
      onMapped();
    } catch (err) { setError(err); } finally { setBusy(false); }
  };
  if (!agents.length) return html`<div class="card" style="margin-bottom:1rem"><p class="muted">Create an agent first: a number is mapped to an agent.</p></div>`;
  return html`<form class="card" onSubmit=${submit} data-testid="number-form" style="margin-bottom:1rem">
    <h2>Map a number</h2>
    ${error && !Object.keys(error.fields).length ? html`<${ErrorBox} error=${error} />` : null}
    ${error && error.status === 403 ? html`<p class="hint">The operator assigns numbers to tenants first: <code>parley admin numbers assign</code>.</p>` : null}
    <div class="toolbar" style="align-items:flex-start">
      <div style="flex:1;min-width:200px"><${Field} id="number" label="Number or SIP user" error=${error && error.fields.number} hint="E.164, e.g. +14155550100">
        <input id="number" value=${number} required maxlength="200" inputmode="tel" autocomplete="off"
          onInput=${(e) => setNumber(e.target.value)} data-testid="number-input" />
      <//></div>
      <div style="flex:1;min-width:200px"><${Field} id="number-agent" label="Agent" error=${error && error.fields.agent_id}>
        <select id="number-agent" value=${chosen} onChange=${(e) => setAgent(e.target.value)} data-testid="number-agent">
          ${agents.map((a) => html`<option value=${a.id}>${a.name}</option>`)}
        </select>
      <//></div>
      <div class="field"><label aria-hidden="true">${"\u00a0"}</label><button class="btn primary" type="submit" disabled=${busy || !number.trim()} data-testid="number-add">Map number</button></div>
    </div>
  </form>`;
}

export default function Numbers() {
  const numbers = useAsync(() => api.get('numbers'), []);
  const agents = useAsync(() => api.get('agents', { limit: 200 }), []);
  const [error, setError] = useState(null);
  const canEdit = can('agents:write');
  const names = Object.fromEntries((agents.data || []).map((a) => [a.id, a.name]));
  const remove = async (n) => {
    setError(null);
    try { await api.del(`numbers/${encodeURIComponent(n.number)}`); numbers.reload(); } catch (e) { setError(e); }
  };
  const columns = [
    { key: 'number', label: 'Number', render: (n) => html`<code>${n.number}</code>` },
    { key: 'agent', label: 'Agent', render: (n) => html`<a href=${`#/agents/${n.agent_id}`}>${names[n.agent_id] || n.agent_id}</a>` },
    { key: 'created_at', label: 'Mapped', render: (n) => formatTime(n.created_at) },
    ...(canEdit ? [{ key: 'del', label: '', render: (n) => html`<${ConfirmButton} class="btn small danger" testid="number-delete"
        confirmLabel="Unmap?" onConfirm=${() => remove(n)}>Remove</${ConfirmButton}>` }] : []),
  ];
  return html`<div data-testid="numbers-view">
    <${PageHeader} title="Numbers" subtitle="Incoming calls to a number reach the agent it is mapped to. To move a number, remove it and map it again." />
    ${canEdit && agents.data ? html`<${MapForm} agents=${agents.data} onMapped=${numbers.reload} />` : null}
    <${ErrorBox} error=${error || numbers.error || agents.error} />
    ${numbers.data === undefined ? html`<${Loading} />` : html`<${Table} columns=${columns} rows=${numbers.data} rowKey=${(n) => n.number}
        testid="numbers" empty="No numbers mapped yet." />`}
  </div>`;
}
