// API keys: create one (its secret is shown once, with a copy button), list them, revoke one. Admins only.
import { html, useState, useAsync, Table, ErrorBox, Loading, PageHeader, Field, ConfirmButton, formatTime, copyText } from '../lib/ui.js';
import { api } from '../lib/api.js';
import { can, current } from '../lib/session.js';

const SCOPES = ['agents:read', 'agents:write', 'calls:read', 'calls:write', 'talk', 'keys'];
const ROLES = { viewer: 'Reads agents, calls and analytics; changes nothing.', editor: 'Also builds agents and handles calls.', admin: 'Also creates and revokes keys.' };

function Created({ created, onDone }) {
  const [copied, setCopied] = useState(false);
  return html`<section class="success-box" data-testid="key-created" role="status">
    <strong>Key “${created.name}” created.</strong> Copy its secret now: Parley keeps only its hash and will not show it again.
    <div class="secret"><code data-testid="key-secret">${created.secret}</code>
      <button class="btn" onClick=${async () => setCopied(await copyText(created.secret))} data-testid="key-copy">${copied ? 'Copied' : 'Copy'}</button>
      <button class="btn ghost" onClick=${onDone} data-testid="key-dismiss">Done</button></div>
  </section>`;
}

function CreateForm({ onCreated }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState('viewer');
  const [scopes, setScopes] = useState([]);
  const toggle = (sc) => setScopes(scopes.includes(sc) ? scopes.filter((x) => x !== sc) : [...scopes, sc]);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true); setError(null);
    try {
      onCreated(await api.post('keys', { name: name.trim(), role, scopes }));
      setName('');
      setScopes([]);
    } catch (err) { setError(err); } finally { setBusy(false); }
  };
  return html`<form class="card" onSubmit=${submit} data-testid="key-form" style="margin-bottom:1rem">
    <h2>New key</h2>
    ${error && !Object.keys(error.fields).length ? html`<${ErrorBox} error=${error} />` : null}
    <div class="toolbar" style="align-items:flex-start">
      <div style="flex:2;min-width:200px"><${Field} id="key-name" label="Name" error=${error && error.fields.name} hint="Who or what uses it, e.g. “ci” or “alice”.">
        <input id="key-name" value=${name} maxlength="100" required onInput=${(e) => setName(e.target.value)} data-testid="key-name" />
      <//></div>
      <div style="flex:1;min-width:200px"><${Field} id="key-role" label="Role" error=${error && error.fields.role} hint=${ROLES[role]}>
        <select id="key-role" value=${role} onChange=${(e) => setRole(e.target.value)} data-testid="key-role">
          ${Object.keys(ROLES).map((r) => html`<option value=${r}>${r}</option>`)}
        </select>
      <//></div>
      <div class="field"><label aria-hidden="true">${"\u00a0"}</label><button class="btn primary" type="submit" disabled=${busy || !name.trim()} data-testid="key-create">Create key</button></div>
    </div>
    <details>
      <summary>Limit to some scopes (optional)</summary>
      <p class="hint">Without any, the key may do everything its role allows. A key cannot hold more than yours.</p>
      <div class="inline" style="flex-wrap:wrap">${SCOPES.map((sc) => html`<label class="inline" style="font-size:.9rem">
        <input type="checkbox" style="width:auto;min-height:0" checked=${scopes.includes(sc)} onChange=${() => toggle(sc)}
          data-testid=${`key-scope-${sc}`} /> <code>${sc}</code></label>`)}</div>
    </details>
  </form>`;
}

export default function Keys() {
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  const keys = useAsync(() => (can('keys') ? api.get('keys') : Promise.resolve([])), []);
  if (!can('keys')) {
    return html`<${PageHeader} title="API keys" /><div class="card notice">Only an admin key can manage keys.</div>`;
  }
  const mine = current() && current().key_id;
  const revoke = async (k) => {
    setError(null);
    try { await api.del(`keys/${k.id}`); keys.reload(); } catch (e) { setError(e); }
  };
  const columns = [
    { key: 'name', label: 'Name', render: (k) => html`<span><strong>${k.name}</strong>${k.id === mine ? html` <span class="badge">this browser</span>` : null}</span>` },
    { key: 'prefix', label: 'Starts with', render: (k) => html`<code>${k.prefix}…</code>` },
    { key: 'role', label: 'Role', render: (k) => html`<span class=${`badge role-${k.role}`}>${k.role}</span>${k.scopes.length ? html` <span class="muted">${k.scopes.join(', ')}</span>` : null}` },
    { key: 'created_at', label: 'Created', render: (k) => formatTime(k.created_at) },
    { key: 'last_used_at', label: 'Last used', render: (k) => formatTime(k.last_used_at) },
    { key: 'state', label: '', render: (k) => (k.revoked_at
      ? html`<span class="badge bad" title=${formatTime(k.revoked_at)}>revoked</span>`
      : html`<${ConfirmButton} class="btn small danger" testid="key-revoke" disabled=${k.id === mine}
          confirmLabel="Revoke for good?" onConfirm=${() => revoke(k)}>Revoke</${ConfirmButton}>`) },
  ];
  const rows = (keys.data || []).slice().sort((a, b) => Boolean(a.revoked_at) - Boolean(b.revoked_at));
  return html`<div data-testid="keys-view">
    <${PageHeader} title="API keys" subtitle="A key acts for your tenant with its role. The console, scripts and carriers all use keys." />
    ${created ? html`<${Created} created=${created} onDone=${() => setCreated(null)} />` : null}
    <${CreateForm} onCreated=${(k) => { setCreated(k); keys.reload(); }} />
    <${ErrorBox} error=${error || keys.error} />
    ${keys.data === undefined ? html`<${Loading} />` : html`<${Table} columns=${columns} rows=${rows} testid="keys" empty="No keys." />`}
  </div>`;
}
