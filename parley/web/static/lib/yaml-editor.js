// The YAML editor: a monospace textarea (no editor framework: it must stay small, fast and accessible) where Tab
// indents with spaces, Shift+Tab dedents, and Escape then Tab leaves it (no keyboard trap). locateLine() finds
// the line of a field named by an API error's loc, so a problem can take the cursor to it.
import { html, useRef, useLayoutEffect, useCallback, useState } from './ui.js';
import { load, dump } from '../vendor/js-yaml/dist/js-yaml.mjs';

const INDENT = '  ';

/** YAML text → {ok: true, doc} or {ok: false, message, line} (line 0-based; js-yaml's mark). */
export function parseYaml(text) {
  try {
    const doc = load(text);
    if (doc === null || doc === undefined) return { ok: false, message: 'the document is empty', line: 0 };
    if (typeof doc !== 'object' || Array.isArray(doc)) {
      return { ok: false, message: 'an agent document is a mapping (key: value lines)', line: 0 };
    }
    return { ok: true, doc };
  } catch (e) {
    const line = e.mark ? e.mark.line : 0;
    return { ok: false, message: e.reason ? `${e.reason} (line ${line + 1}, column ${(e.mark?.column ?? 0) + 1})` : String(e.message), line };
  }
}

/** A document as YAML, keys in their order (as the API's version diff shows them). */
export function toYaml(doc) {
  return dump(doc, { sortKeys: false, lineWidth: 100, noRefs: true });
}

const isBlank = (l) => { const t = l.trim(); return !t || t.startsWith('#'); };
const indentOf = (l) => l.length - l.trimStart().length;
const isDash = (l) => /^\s*-(\s|$)/.test(l);
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The 0-based line where ``path`` (["llm", "provider"], ["tools", 0, "name"]) is written; the deepest part found. */
export function locateLine(text, path) {
  const lines = text.split('\n');
  let from = 0;
  let to = lines.length;
  let minCol = 0;
  let best = 0;
  for (const seg of path) {
    let hit = -1;
    if (/^\d+$/.test(String(seg))) {
      let count = -1;
      let dashCol = null;
      for (let i = from; i < to; i++) {
        if (isBlank(lines[i])) continue;
        const col = indentOf(lines[i]);
        if (isDash(lines[i]) && col >= minCol - 2 && (dashCol === null || col === dashCol)) {
          dashCol = col;
          count += 1;
          if (count === Number(seg)) { hit = i; break; }
        }
      }
      if (hit < 0) break;
      let end = hit + 1;
      while (end < to && (isBlank(lines[end]) || indentOf(lines[end]) > dashCol)) end++;
      [from, to, minCol] = [hit, end, dashCol + 2];
    } else {
      const re = new RegExp(`^(\\s*)(- )?["']?${escapeRe(String(seg))}["']?\\s*:(\\s|$)`);
      let col = 0;
      for (let i = from; i < to; i++) {
        const m = re.exec(lines[i]);
        if (!m) continue;
        col = m[1].length + (m[2] ? 2 : 0);
        if (col >= minCol) { hit = i; break; }
      }
      if (hit < 0) break;
      let end = hit + 1;
      while (end < to && (isBlank(lines[end]) || indentOf(lines[end]) > col || (indentOf(lines[end]) === col && isDash(lines[end])))) end++;
      [from, to, minCol] = [hit + 1, end, col + 1];
    }
    best = hit;
  }
  return best;
}

function insert(el, text) {
  // execCommand keeps the browser's undo history; setRangeText where it is not supported
  if (!document.execCommand || !document.execCommand('insertText', false, text)) {
    el.setRangeText(text, el.selectionStart, el.selectionEnd, 'end');
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }
}

function dedent(el) {
  const { value, selectionStart, selectionEnd } = el;
  const start = value.lastIndexOf('\n', selectionStart - 1) + 1;
  const block = value.slice(start, selectionEnd);
  const out = block.replace(/^ {1,2}/gm, '');
  if (out === block) return;
  el.setSelectionRange(start, selectionEnd);
  insert(el, out);
}

/** Move the cursor to a 0-based line and scroll it into view. */
export function goToLine(el, line) {
  if (!el) return;
  const lines = el.value.split('\n');
  const offset = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
  el.focus();
  el.setSelectionRange(offset, offset + (lines[line] || '').length);
  const lineHeight = parseFloat(getComputedStyle(el).lineHeight) || 20;
  el.scrollTop = Math.max(0, line * lineHeight - el.clientHeight / 3);
}

export function YamlEditor({ value, onChange, readOnly, editorRef, label = 'Agent document (YAML)', invalid }) {
  const local = useRef(null);
  const ref = editorRef || local;
  const escaped = useRef(false);
  const [pos, setPos] = useState('Ln 1, Col 1');
  const where = (e) => {
    const el = e.target;
    const before = el.value.slice(0, el.selectionStart);
    const line = before.split('\n').length;
    setPos(`Ln ${line}, Col ${before.length - before.lastIndexOf('\n')}`);
  };
  const onKeyDown = useCallback((e) => {
    if (e.key === 'Escape') { escaped.current = true; return; }
    if (e.key === 'Tab' && !escaped.current && !readOnly) {
      e.preventDefault();
      if (e.shiftKey) dedent(e.target);
      else insert(e.target, INDENT);
    }
    escaped.current = false;
  }, [readOnly]);
  // The textarea is uncontrolled (typing must not re-render it); a value from outside (discard, a form edit, a
  // restore) is copied in, but never one this editor emitted itself: a late copy of an older value would undo
  // typing that arrived in between (one fill can be two input events, text then a line break).
  const emitted = useRef(value);
  useLayoutEffect(() => {
    if (value === emitted.current) return;
    emitted.current = value;
    if (ref.current && ref.current.value !== value) ref.current.value = value;
  }, [value]);
  return html`<div class="field">
    <label for="yaml-editor">${label}</label>
    <textarea id="yaml-editor" class="yaml-editor" ref=${ref} spellcheck="false" autocapitalize="off" autocomplete="off"
      wrap="off" readonly=${readOnly} aria-invalid=${invalid ? 'true' : 'false'} data-testid="yaml-editor"
      aria-describedby="yaml-help" onKeyDown=${onKeyDown} onInput=${(e) => { emitted.current = e.target.value; onChange(e.target.value); where(e); }}
      onKeyUp=${where} onClick=${where} onFocus=${where}
      defaultValue=${value}></textarea>
    <div id="yaml-help" class="hint inline" style="justify-content:space-between">
      <span>${readOnly ? 'Read only.' : 'Tab indents, Shift+Tab dedents; Esc then Tab leaves the editor.'}</span>
      <span class="num" aria-live="off" data-testid="yaml-position">${pos}</span></div>
  </div>`;
}

/** A unified diff, each line coloured by its kind. */
export function DiffView({ diff, testid = 'diff' }) {
  if (!diff) return html`<div class="empty" data-testid=${testid}>The two versions are the same.</div>`;
  const lines = diff.replace(/\n$/, '').split('\n');
  const kind = (l) => (l.startsWith('+++') || l.startsWith('---') ? 'meta'
    : l.startsWith('@@') ? 'hunk' : l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : '');
  return html`<pre class="diff" data-testid=${testid} aria-label="differences">${lines.map((l) => html`<span class=${kind(l)}>${l}</span>`)}</pre>`;
}
