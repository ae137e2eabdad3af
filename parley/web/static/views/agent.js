// One agent: edit it as a form or as YAML (validated live against the API's own schema), save as a new version,
// see its history with diffs and restore; or start a new one from a template (#/agents/new?template=…).
// The unsaved draft is kept in sessionStorage: 'parley.draft.<agent id>' holds the document as JSON (what the talk
// view sends as a draft), 'parley.yaml.<agent id>' the YAML as typed (comments kept) to come back to.
import {
  html, useState, useEffect, useMemo, useRef, ErrorBox, Loading, PageHeader, ConfirmButton, formatTime, navigate,
} from '../lib/ui.js';
import { api, ApiError } from '../lib/api.js';
import { can } from '../lib/session.js';
import { YamlEditor, parseYaml, toYaml, locateLine, goToLine } from '../lib/yaml-editor.js';
import { AgentForm, setPath } from './agent_form.js';
import { History } from './agent_history.js';

const VALIDATE_MS = 400;
const BLANK = `kind: agent
name: My agent
description: ""
language: en
greeting: "Hello, how can I help?"
system_prompt: |
  You are a helpful voice assistant on a phone call.
  Answer in one or two short sentences.
stt:
  provider: whisper
llm:
  provider: llama
tts:
  provider: piper
  fallback: espeak
`;

async function templateText(name) {
  if (name === 'receptionist') return (await api.get('/console/templates/receptionist.json')).yaml;
  return BLANK;
}

const draftKeys = (id) => [`parley.draft.${id}`, `parley.yaml.${id}`];
function keepDraft(id, doc, text) {
  const [d, y] = draftKeys(id);
  sessionStorage.setItem(d, JSON.stringify(doc));
  sessionStorage.setItem(y, text);
}
function dropDraft(id) {
  draftKeys(id).forEach((k) => sessionStorage.removeItem(k));
}

/** Live validation: parse now, ask POST /v1/agents/validate ~400 ms after the last change. */
function useValidation(text, parsed, enabled) {
  const [state, setState] = useState({ status: 'idle', fields: {} });
  useEffect(() => {
    if (!enabled) return undefined;
    if (!parsed.ok) { setState({ status: 'invalid', fields: { '': parsed.message }, yaml: true }); return undefined; }
    setState((s) => ({ ...s, status: 'checking' }));
    const abort = new AbortController();
    const timer = setTimeout(async () => {
      try {
        await api.post('agents/validate', parsed.doc, { signal: abort.signal });
        setState({ status: 'valid', fields: {} });
      } catch (e) {
        if (e.name === 'AbortError') return;
        if (e.status === 422) setState({ status: 'invalid', fields: e.fields });
        else setState({ status: 'unknown', fields: {}, error: e });
      }
    }, VALIDATE_MS);
    return () => { clearTimeout(timer); abort.abort(); };
  }, [text, enabled]);
  return state;
}

function Problems({ validation, text, editor, onShowYaml }) {
  const { status, fields, yaml, error } = validation;
  const entries = Object.entries(fields);
  const label = {
    idle: 'Not checked yet', checking: 'Checking…', valid: 'Valid: the API accepts this document',
    invalid: `${entries.length} problem${entries.length === 1 ? '' : 's'}`, unknown: 'Could not check',
  }[status];
  const dot = { valid: 'ok', invalid: 'bad', checking: 'busy' }[status] || '';
  const jump = (loc) => {
    onShowYaml();
    const line = yaml ? validation.line ?? 0 : locateLine(text, loc ? loc.split('.') : []);
    setTimeout(() => goToLine(editor.current, line), 0);
  };
  return html`<section class="card" aria-live="polite">
    <h3>Check</h3>
    <div class="validity" data-testid="validity" data-status=${status}><span class=${`dot ${dot}`}></span>${label}</div>
    ${error ? html`<p class="muted">${error.message}</p>` : null}
    ${entries.length ? html`<ul class="problems" data-testid="problems">${entries.map(([loc, msg]) => html`<li
        data-testid="field-error" data-loc=${loc}>
      <a href="#" onClick=${(e) => { e.preventDefault(); jump(loc); }}><code>${loc || (yaml ? 'YAML' : 'document')}</code></a> ${msg}</li>`)}</ul>` : null}
  </section>`;
}

function Details({ agent, canEdit }) {
  if (!agent) return null;
  return html`<section class="card">
    <h3>Details</h3>
    <dl class="muted" style="margin:0;font-size:.88rem">
      <dt>Id</dt><dd style="margin:0 0 .4rem"><code data-testid="agent-id">${agent.id}</code></dd>
      <dt>Version</dt><dd style="margin:0 0 .4rem" data-testid="agent-version">${agent.version}</dd>
      <dt>Updated</dt><dd style="margin:0">${formatTime(agent.updated_at)}</dd>
    </dl>
    ${canEdit ? null : html`<p class="hint" data-testid="read-only">Read only: your key may not change agents.</p>`}
  </section>`;
}

function useAgent(ref, template) {
  const [agent, setAgent] = useState(null);
  const [text, setText] = useState(null);
  const [saved, setSaved] = useState(null); // the text the editor started from
  const [error, setError] = useState(null);
  const [restoredDraft, setRestoredDraft] = useState(false);
  useEffect(() => {
    let live = true;
    const load = async () => {
      if (ref === 'new') {
        const t = await templateText(template);
        return { agent: null, text: t, saved: '' };
      }
      const a = await api.get(`agents/${encodeURIComponent(ref)}`);
      const base = toYaml(a.document);
      const draft = sessionStorage.getItem(`parley.yaml.${a.id}`);
      return { agent: a, text: draft && draft !== base ? draft : base, saved: base, draft: Boolean(draft && draft !== base) };
    };
    load().then((r) => {
      if (!live) return;
      setAgent(r.agent); setText(r.text); setSaved(r.saved); setRestoredDraft(Boolean(r.draft));
    }, (e) => live && setError(e));
    return () => { live = false; };
  }, [ref, template]);
  return { agent, setAgent, text, setText, saved, setSaved, error, restoredDraft, setRestoredDraft };
}

export default function AgentView({ params, query }) {
  const isNew = params.ref === 'new';
  const canEdit = can('agents:write');
  const st = useAgent(params.ref, query.template || 'blank');
  const [tab, setTab] = useState(isNew ? 'yaml' : 'form');
  const [saveError, setSaveError] = useState(null);
  const [message, setMessage] = useState(null);
  const [busy, setBusy] = useState(false);
  const editor = useRef(null);
  const text = st.text ?? '';
  const parsed = useMemo(() => parseYaml(text), [text]);
  const validation = useValidation(text, parsed, canEdit && st.text !== null);
  const dirty = st.text !== null && text !== st.saved;
  const agentId = st.agent && st.agent.id;

  useEffect(() => {
    if (!agentId || !canEdit) return;
    if (dirty && parsed.ok) keepDraft(agentId, parsed.doc, text);
    else if (!dirty) dropDraft(agentId);
  }, [text, agentId]);

  useEffect(() => {
    // a new agent's draft lives only in this page: closing the tab would lose it
    if (!dirty || !canEdit || (agentId && parsed.ok)) return undefined;
    const warn = (e) => { e.preventDefault(); e.returnValue = ''; };
    window.addEventListener('beforeunload', warn);
    return () => window.removeEventListener('beforeunload', warn);
  }, [dirty, agentId, parsed.ok]);

  if (st.error) return html`<${PageHeader} title="Agent" /><${ErrorBox} error=${st.error} />`;
  if (st.text === null) return html`<${PageHeader} title=${isNew ? 'New agent' : 'Agent'} /><${Loading} />`;

  const fields = { ...validation.fields, ...(saveError && saveError.fields) };
  const invalid = validation.status === 'invalid' || !parsed.ok;
  const onForm = (path, value) => { if (parsed.ok) st.setText(toYaml(setPath(parsed.doc, path, value))); };
  const reloaded = (a, note) => {
    const base = toYaml(a.document);
    dropDraft(a.id);
    st.setAgent(a); st.setSaved(base); st.setText(base); st.setRestoredDraft(false);
    setMessage(note);
  };

  const save = async () => {
    if (!parsed.ok) return;
    setBusy(true); setSaveError(null); setMessage(null);
    try {
      if (isNew) {
        const created = await api.post('agents', parsed.doc);
        navigate(`/agents/${created.id}`);
        return;
      }
      reloaded(await api.put(`agents/${agentId}`, parsed.doc), 'saved');
    } catch (e) {
      setSaveError(e instanceof ApiError ? e : new ApiError(0, String(e)));
    } finally { setBusy(false); }
  };
  const discard = () => { if (agentId) dropDraft(agentId); st.setText(st.saved || text); st.setRestoredDraft(false); setSaveError(null); };
  const remove = async () => {
    try { await api.del(`agents/${agentId}`); dropDraft(agentId); navigate('/agents'); } catch (e) { setSaveError(e); }
  };

  const title = isNew ? 'New agent' : st.agent.name;
  const tabs = [['form', 'Form'], ['yaml', 'YAML'], ...(isNew ? [] : [['history', 'History']])];
  const talkDraft = !isNew && can('talk') && dirty && parsed.ok && validation.status === 'valid';
  return html`<div data-testid="agent-view">
    <${PageHeader} title=${title} subtitle=${isNew ? `From the ${query.template === 'receptionist' ? 'receptionist' : 'blank'} template: save to create version 1.` : `Version ${st.agent.version} · ${st.agent.document.description || 'no description'}`}>
      ${!isNew && can('talk') ? html`<a class="btn" href=${`#/talk/${agentId}`} data-testid="talk">Talk</a>` : null}
      ${talkDraft ? html`<a class="btn" href=${`#/talk/${agentId}?draft=1`} data-testid="talk-draft">Talk to this draft</a>` : null}
      ${!isNew && canEdit ? html`<${ConfirmButton} testid="delete-agent" confirmLabel="Delete for good?" onConfirm=${remove}>Delete</${ConfirmButton}>` : null}
    <//>
    ${st.restoredDraft ? html`<div class="success-box" data-testid="draft-restored">Your unsaved draft was kept. <button class="btn small" onClick=${discard}>Discard it</button></div>` : null}
    ${message === 'saved' ? html`<div class="success-box" role="status" data-testid="saved">Saved as version ${st.agent.version}.</div>` : null}
    ${message && message.restored ? html`<div class="success-box" role="status" data-testid="restored">Version ${message.restored} restored as version ${st.agent.version}.</div>` : null}
    ${saveError && !Object.keys(saveError.fields || {}).length ? html`<${ErrorBox} error=${saveError} testid="save-error" />` : null}
    <div class="tabs" role="tablist">${tabs.map(([id, label]) => html`<button role="tab" aria-selected=${tab === id}
      data-testid=${`tab-${id}`} onClick=${() => setTab(id)}>${label}</button>`)}</div>
    <div class="editor-layout">
      <div>
        ${tab === 'form' ? html`<${AgentForm} doc=${parsed.ok ? parsed.doc : null} parseError=${parsed.message}
            fields=${fields} readOnly=${!canEdit} onChange=${onForm} />` : null}
        ${tab === 'yaml' ? html`<${YamlEditor} value=${text} onChange=${st.setText} readOnly=${!canEdit} editorRef=${editor} invalid=${invalid} />` : null}
        ${tab === 'history' ? html`<${History} agent=${st.agent} canEdit=${canEdit} dirty=${dirty}
            onRestored=${(a, v) => reloaded(a, { restored: v })} />` : null}
      </div>
      <aside class="stack">
        ${canEdit ? html`<${Problems} validation=${{ ...validation, fields, line: parsed.line }} text=${text} editor=${editor} onShowYaml=${() => setTab('yaml')} />` : null}
        <${Details} agent=${st.agent} canEdit=${canEdit} />
      </aside>
    </div>
    ${canEdit && tab !== 'history' ? html`<div class="savebar">
      <span class="status" data-testid="save-status">${dirty ? (invalid ? 'Fix the problems to save' : 'Unsaved changes') : isNew ? '' : 'No changes'}</span>
      ${dirty && !isNew ? html`<button class="btn" onClick=${discard} data-testid="discard">Discard</button>` : null}
      <button class="btn primary" disabled=${busy || invalid || validation.status === 'checking' || (!dirty && !isNew)}
        onClick=${save} data-testid="save">${busy ? 'Saving…' : isNew ? 'Create agent' : 'Save new version'}</button>
    </div>` : null}
  </div>`;
}
