// Preact + hooks + htm (one vendored ES module, no build step) and the small widgets every view shares.
import {
  html, render, useState, useEffect, useLayoutEffect, useRef, useMemo, useCallback,
} from '../vendor/htm/preact/standalone.module.js';

export { html, render, useState, useEffect, useLayoutEffect, useRef, useMemo, useCallback };

/** Load something async and keep {data, error, loading, reload}; a newer load wins over a slower older one. */
export function useAsync(fn, deps = []) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true });
  const seq = useRef(0);
  const load = useCallback(() => {
    const mine = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    Promise.resolve()
      .then(fn)
      .then(
        (data) => mine === seq.current && setState({ data, error: null, loading: false }),
        (error) => mine === seq.current && setState((s) => ({ data: s.data, error, loading: false })),
      );
  }, deps);
  useEffect(() => { load(); }, [load]);
  return { ...state, reload: load, setData: (data) => setState((s) => ({ ...s, data })) };
}

/** An error as a readable box; 422 field errors listed by field. */
export function ErrorBox({ error, testid = 'error' }) {
  if (!error) return null;
  const fields = Object.entries(error.fields || {});
  return html`<div class="error-box" role="alert" data-testid=${testid}>
    <strong>${error.status === 403 ? 'Not allowed' : error.status === 404 ? 'Not found' : 'Something went wrong'}</strong>
    ${fields.length
      ? html`<ul>${fields.map(([k, v]) => html`<li><code>${k || '(document)'}</code> ${v}</li>`)}</ul>`
      : html`<p>${error.message || String(error)}</p>`}
  </div>`;
}

/** A labelled form field with its error under it (error: a string, or absent). */
export function Field({ label, error, hint, id, children, testid }) {
  return html`<div class=${`field${error ? ' has-error' : ''}`} data-testid=${testid}>
    <label for=${id}>${label}</label>
    ${children}
    ${error ? html`<div class="field-error" role="alert">${error}</div>` : hint ? html`<div class="hint">${hint}</div>` : null}
  </div>`;
}

/** columns: [{key, label, render?(row), class?}]; rows: objects. onRow(row): the row is a link-like button. */
export function Table({ columns, rows, empty = 'Nothing here yet.', rowKey = (r) => r.id, onRow, testid = 'table' }) {
  if (!rows || rows.length === 0) return html`<div class="empty" data-testid=${`${testid}-empty`}>${empty}</div>`;
  const open = (row, e) => {
    if (!onRow) return;
    if (e.type === 'keydown' && e.key !== 'Enter') return;
    if (e.target.closest('button, a, input, select')) return;
    onRow(row);
  };
  return html`<div class="table-wrap"><table class=${onRow ? 'clickable' : ''} data-testid=${testid}>
    <thead><tr>${columns.map((c) => html`<th class=${c.class || ''} scope="col">${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row) => html`<tr key=${rowKey(row)} tabindex=${onRow ? 0 : undefined}
        onClick=${(e) => open(row, e)} onKeyDown=${(e) => open(row, e)} data-testid=${`${testid}-row`}>
      ${columns.map((c) => html`<td class=${c.class || ''} data-label=${c.label}>${c.render ? c.render(row) : row[c.key]}</td>`)}
    </tr>`)}</tbody>
  </table></div>`;
}

/** Previous / next over offset+limit; total may be null (then "next" is offered while a page comes back full). */
export function Pager({ offset, limit, total, count, onChange }) {
  const hasNext = total === null || total === undefined ? count >= limit : offset + limit < total;
  const last = total === null || total === undefined ? offset + count : Math.min(offset + limit, total);
  return html`<nav class="pager" aria-label="pages">
    <button class="btn" disabled=${offset <= 0} onClick=${() => onChange(Math.max(0, offset - limit))} data-testid="pager-prev">← Previous</button>
    <span class="muted">${count ? `${offset + 1}–${last}` : '0'}${total !== null && total !== undefined ? ` of ${total}` : ''}</span>
    <button class="btn" disabled=${!hasNext} onClick=${() => onChange(offset + limit)} data-testid="pager-next">Next →</button>
  </nav>`;
}

/** A button that asks once more before acting (no modal: the second click confirms, Escape or blur cancels). */
export function ConfirmButton({ onConfirm, children, confirmLabel = 'Confirm', class: cls = 'btn danger', testid, disabled }) {
  const [armed, setArmed] = useState(false);
  const [busy, setBusy] = useState(false);
  const click = async () => {
    if (!armed) { setArmed(true); return; }
    setBusy(true);
    try { await onConfirm(); } finally { setBusy(false); setArmed(false); }
  };
  return html`<button class=${`${cls}${armed ? ' armed' : ''}`} disabled=${disabled || busy} data-testid=${testid}
    onClick=${click} onBlur=${() => setArmed(false)} onKeyDown=${(e) => e.key === 'Escape' && setArmed(false)}>
    ${armed ? confirmLabel : children}</button>`;
}

export function Loading({ label = 'Loading…' }) {
  return html`<div class="loading" aria-live="polite"><span class="spinner" aria-hidden="true"></span>${label}</div>`;
}

export function PageHeader({ title, subtitle, children }) {
  useEffect(() => { document.title = `${title} · Parley`; }, [title]);
  return html`<header class="page-header">
    <div><h1>${title}</h1>${subtitle ? html`<p class="muted">${subtitle}</p>` : null}</div>
    <div class="actions">${children}</div>
  </header>`;
}

/** Copy text to the clipboard; falls back to selecting a hidden textarea where the Clipboard API is refused. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const t = document.createElement('textarea');
    t.value = text;
    t.setAttribute('readonly', '');
    t.style.position = 'fixed';
    t.style.opacity = '0';
    document.body.appendChild(t);
    t.select();
    const ok = document.execCommand('copy');
    t.remove();
    return ok;
  }
}

/** 75 → "1:15", 3725 → "1:02:05"; null → "–". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

/** Seconds as "840 ms" / "1.24 s" (latencies). */
export function formatLatency(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
/** An ISO time in the browser's locale and zone; "–" for none. */
export function formatTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : dateFmt.format(d);
}

/** Link to a hash route: href keeps middle-click and keyboard working. */
export function Link({ to, children, class: cls, testid }) {
  return html`<a href=${`#${to}`} class=${cls} data-testid=${testid}>${children}</a>`;
}

export function navigate(to) {
  location.hash = `#${to}`;
}
