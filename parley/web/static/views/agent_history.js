// An agent's versions: the list (newest first, paged from the API's oldest-first history), a diff between any
// two versions (computed by the API), and restore (a new version holding the old document).
import { html, useState, useEffect, ErrorBox, Loading, ConfirmButton, formatTime, useAsync } from '../lib/ui.js';
import { api } from '../lib/api.js';
import { DiffView } from '../lib/yaml-editor.js';

const PAGE = 50;
const MOST = 200; // the API's page limit: older versions are still in the compare menus

function VersionSelect({ id, label, value, max, onChange }) {
  const options = [];
  for (let v = max; v >= 1; v--) options.push(v);
  return html`<div class="field"><label for=${id}>${label}</label>
    <select id=${id} value=${value} data-testid=${id} onChange=${(e) => onChange(Number(e.target.value))}>
      ${options.map((v) => html`<option value=${v}>version ${v}</option>`)}
    </select></div>`;
}

export function History({ agent, canEdit, dirty, onRestored }) {
  const latest = agent.version;
  const [shown, setShown] = useState(PAGE);
  const offset = Math.max(0, latest - shown);
  const versions = useAsync(
    () => api.get(`agents/${agent.id}/versions`, { limit: Math.min(200, latest - offset), offset }),
    [agent.id, latest, offset],
  );
  const [from, setFrom] = useState(Math.max(1, latest - 1));
  const [to, setTo] = useState(latest);
  const [diff, setDiff] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { setFrom(Math.max(1, latest - 1)); setTo(latest); setDiff(null); }, [latest]);

  const compare = async (a = from, b = to) => {
    setBusy(true);
    setError(null);
    try {
      setDiff(await api.get(`agents/${agent.id}/versions/diff`, { from: a, to: b }));
    } catch (e) { setError(e); } finally { setBusy(false); }
  };
  useEffect(() => { if (latest > 1) compare(Math.max(1, latest - 1), latest); }, [agent.id, latest]);

  const restore = async (v) => {
    setError(null);
    try {
      const updated = await api.post(`agents/${agent.id}/versions/${v}/restore`);
      onRestored(updated, v);
    } catch (e) { setError(e); }
  };

  const rows = (versions.data || []).slice().reverse();
  return html`<div class="stack" data-testid="history">
    <${ErrorBox} error=${error} />
    <section class="card">
      <h2>Compare versions</h2>
      ${latest < 2 ? html`<p class="muted">There is one version so far; each save adds one.</p>` : html`
        <div class="toolbar">
          <${VersionSelect} id="diff-from" label="From" value=${from} max=${latest} onChange=${setFrom} />
          <${VersionSelect} id="diff-to" label="To" value=${to} max=${latest} onChange=${setTo} />
          <button class="btn primary" disabled=${busy} onClick=${() => compare()} data-testid="diff-show">Show changes</button>
        </div>
        ${diff ? html`<p class="muted">Changes from version ${diff.from} to version ${diff.to}:</p><${DiffView} diff=${diff.diff} />` : busy ? html`<${Loading} />` : null}`}
    </section>
    <section class="card">
      <h2>Versions</h2>
      ${versions.error ? html`<${ErrorBox} error=${versions.error} />` : null}
      ${!versions.data && versions.loading ? html`<${Loading} />` : html`<ul class="versions" data-testid="versions">
        ${rows.map((v) => html`<li key=${v.version} data-testid=${`version-${v.version}`}>
          <span class="v">v${v.version}</span>
          <span class="when">${formatTime(v.created_at)}</span>
          ${v.version === latest ? html`<span class="badge ok">current</span>` : html`
            <button class="btn small" onClick=${() => { setFrom(v.version); setTo(latest); compare(v.version, latest); }}
              data-testid=${`compare-${v.version}`}>Compare with current</button>
            ${canEdit ? html`<${ConfirmButton} class="btn small" testid=${`restore-${v.version}`}
              confirmLabel=${dirty ? 'Discard edits and restore?' : `Restore v${v.version}?`}
              onConfirm=${() => restore(v.version)}>Restore</${ConfirmButton}>` : null}`}
        </li>`)}
      </ul>`}
      ${offset > 0 && shown < MOST ? html`<button class="btn" onClick=${() => setShown(Math.min(MOST, shown + PAGE))} data-testid="versions-older">Older versions</button>` : null}
    </section>
  </div>`;
}
