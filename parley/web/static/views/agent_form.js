// The agent's common fields as a form. It edits the same document as the YAML tab (the YAML is rewritten from
// the form's changes, so its comments go); everything else stays as written in the YAML.
import { html, Field } from '../lib/ui.js';

const PROVIDERS = {
  stt: ['whisper', 'sarvam', 'canned'],
  llm: ['llama', 'openai', 'azure', 'langchain', 'canned'],
  tts: ['piper', 'espeak', 'sarvam', 'tone'],
};

function get(doc, path) {
  return path.split('.').reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), doc);
}

/** A copy of ``doc`` with ``path`` set (an empty value removes an optional key, so defaults apply). */
export function setPath(doc, path, value) {
  const out = structuredClone(doc);
  const keys = path.split('.');
  let o = out;
  for (const k of keys.slice(0, -1)) {
    if (!o[k] || typeof o[k] !== 'object') o[k] = {};
    o = o[k];
  }
  const last = keys[keys.length - 1];
  if (value === undefined) delete o[last];
  else o[last] = value;
  return out;
}

const FIELDS = [
  { path: 'name', label: 'Name', hint: 'Unique in your tenant; calls and numbers refer to it.' },
  { path: 'description', label: 'Description', optional: true },
  { path: 'language', label: 'Language', hint: 'BCP 47, e.g. en, de, en-GB.', optional: true },
  { path: 'greeting', label: 'Greeting', hint: 'Said when the call starts (empty: the caller speaks first).', rows: 2, optional: true },
  { path: 'system_prompt', label: 'System prompt', rows: 8 },
];

function errorFor(fields, path) {
  const direct = fields[path];
  if (direct) return direct;
  const nested = Object.entries(fields).find(([k]) => k.startsWith(`${path}.`));
  return nested ? `${nested[0]}: ${nested[1]}` : undefined;
}

function TextField({ f, doc, fields, readOnly, onChange }) {
  const id = `f-${f.path.replace(/\./g, '-')}`;
  const value = get(doc, f.path) ?? '';
  const change = (e) => onChange(f.path, e.target.value === '' && f.optional ? undefined : e.target.value);
  const common = {
    id, value, readOnly, onInput: change, 'data-testid': `form-${f.path}`,
    'aria-invalid': errorFor(fields, f.path) ? 'true' : 'false',
  };
  return html`<${Field} id=${id} label=${f.label} hint=${f.hint} error=${errorFor(fields, f.path)}>
    ${f.rows ? html`<textarea rows=${f.rows} ...${common}></textarea>` : html`<input type="text" ...${common} />`}
  <//>`;
}

function ProviderField({ stage, doc, fields, readOnly, onChange }) {
  const path = `${stage}.provider`;
  const id = `f-${stage}-provider`;
  return html`<${Field} id=${id} label=${`${stage.toUpperCase()} provider`} error=${errorFor(fields, stage)}>
    <input id=${id} type="text" list=${`${id}-list`} value=${get(doc, path) ?? ''} readOnly=${readOnly}
      data-testid=${`form-${path}`} onInput=${(e) => onChange(path, e.target.value || undefined)} />
    <datalist id=${`${id}-list`}>${PROVIDERS[stage].map((p) => html`<option value=${p} />`)}</datalist>
  <//>`;
}

export function AgentForm({ doc, fields, readOnly, onChange, parseError }) {
  if (!doc) {
    return html`<div class="card notice" data-testid="form-unavailable">
      <p>The YAML does not parse, so the form cannot show it.</p><p class="muted">${parseError}</p></div>`;
  }
  const interruptions = get(doc, 'interruptions.enabled');
  return html`<div class="card" data-testid="agent-form">
    ${FIELDS.slice(0, 3).map((f) => html`<${TextField} f=${f} doc=${doc} fields=${fields} readOnly=${readOnly} onChange=${onChange} />`)}
    ${FIELDS.slice(3).map((f) => html`<${TextField} f=${f} doc=${doc} fields=${fields} readOnly=${readOnly} onChange=${onChange} />`)}
    <div class="form-row">
      ${['stt', 'llm', 'tts'].map((s) => html`<${ProviderField} stage=${s} doc=${doc} fields=${fields} readOnly=${readOnly} onChange=${onChange} />`)}
    </div>
    <div class="form-row">
      <${Field} id="f-llm-model" label="LLM model" hint="llm.options.model" error=${fields['llm.options.model']}>
        <input id="f-llm-model" type="text" value=${get(doc, 'llm.options.model') ?? ''} readOnly=${readOnly}
          data-testid="form-llm.options.model" onInput=${(e) => onChange('llm.options.model', e.target.value || undefined)} />
      <//>
      <${Field} id="f-history" label="History turns" hint="Turns the LLM sees" error=${fields.max_history_turns}>
        <input id="f-history" type="number" min="0" max="100" value=${get(doc, 'max_history_turns') ?? ''} readOnly=${readOnly}
          onInput=${(e) => onChange('max_history_turns', e.target.value === '' ? undefined : Number(e.target.value))} />
      <//>
      <div class="field">
        <label for="f-barge">Barge-in</label>
        <label class="inline"><input id="f-barge" type="checkbox" style="width:auto;min-height:0" disabled=${readOnly}
          checked=${interruptions !== false} onChange=${(e) => onChange('interruptions.enabled', e.target.checked)} />
          The caller can interrupt the agent</label>
      </div>
    </div>
    <p class="hint">Everything else (voice activity, turn timing, tools, flows, knowledge, analysis…) is in the YAML tab.</p>
  </div>`;
}
