// The calls views' own stylesheet (views/calls.css), linked once when one of them first renders: it keeps the
// waveform, timeline and waterfall styles next to the views that use them.
export function ensureCallStyles() {
  if (document.getElementById('parley-calls-css')) return;
  const link = document.createElement('link');
  link.id = 'parley-calls-css';
  link.rel = 'stylesheet';
  link.href = '/console/views/calls.css';
  document.head.appendChild(link);
}

/** Query params as a plain object, whether the router passes an object or URLSearchParams. */
export function queryObject(query) {
  if (!query) return {};
  if (query instanceof URLSearchParams) return Object.fromEntries(query.entries());
  return { ...query };
}

/** Saves a Blob under `name` through a temporary object URL (no new window, no key in any URL). */
export function saveBlob(blob, name) {
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
