// The console's only way to the server: the public /v1 API with the signed-in user's key as a bearer header.
// The key lives in sessionStorage (gone when the tab closes, never in localStorage or a URL).
export const KEY_STORAGE = 'parley.key';

export class ApiError extends Error {
  /** status: HTTP status (0: no answer); detail: the API's detail; fields: {"a.b": msg} from a 422's detail[] */
  constructor(status, detail, fields = {}) {
    super(typeof detail === 'string' ? detail : ApiError.summary(status, fields));
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
    this.fields = fields;
  }

  static summary(status, fields) {
    const entries = Object.entries(fields);
    if (!entries.length) return `request failed (${status})`;
    return entries.map(([k, v]) => (k ? `${k}: ${v}` : v)).join('; ');
  }
}

/** A 422's detail[] as {"llm.provider": "message"}; the leading "body" of a loc is dropped. */
export function fieldErrors(detail) {
  const out = {};
  if (!Array.isArray(detail)) return out;
  for (const d of detail) {
    if (!d || typeof d !== 'object') continue;
    const loc = Array.isArray(d.loc) ? d.loc.slice(d.loc[0] === 'body' ? 1 : 0) : [];
    const k = loc.join('.');
    out[k] = out[k] ? `${out[k]}; ${d.msg}` : String(d.msg ?? 'invalid');
  }
  return out;
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function url(path, params) {
  const base = path.startsWith('/') ? path : `/v1/${path}`;
  const u = new URL(base, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => u.searchParams.append(k, x));
    else u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

function withAuth(init = {}) {
  const headers = new Headers(init.headers || {});
  const key = getKey();
  if (key && !headers.has('authorization')) headers.set('authorization', `Bearer ${key}`);
  return { ...init, headers };
}

async function failure(resp) {
  let detail = resp.statusText || `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    if (body && 'detail' in body) detail = body.detail;
  } catch { /* not JSON */ }
  if (resp.status === 401) window.dispatchEvent(new CustomEvent('parley:unauthorized'));
  return new ApiError(resp.status, detail, resp.status === 422 ? fieldErrors(detail) : {});
}

/** fetch() with the key; the Response as is (streams, downloads, headers such as x-total-count). */
async function raw(path, init = {}) {
  try {
    return await fetch(path.startsWith('/') ? path : `/v1/${path}`, withAuth(init));
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'the server did not answer (is parley serve running?)');
  }
}

async function request(method, path, { params, body, signal } = {}) {
  const init = { method, signal, headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await raw(url(path, params), init);
  if (!resp.ok) throw await failure(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get('content-type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

export const api = {
  get: (path, params, opts = {}) => request('GET', path, { ...opts, params }),
  post: (path, body, opts = {}) => request('POST', path, { ...opts, body }),
  put: (path, body, opts = {}) => request('PUT', path, { ...opts, body }),
  patch: (path, body, opts = {}) => request('PATCH', path, { ...opts, body }),
  del: (path, opts = {}) => request('DELETE', path, opts),
  raw: (path, init = {}) => raw(path, init),
  url,
  /** A page of a list and the total the API counted (header x-total-count; null when it sends none). */
  async page(path, params, opts = {}) {
    const resp = await raw(url(path, params), { signal: opts.signal });
    if (!resp.ok) throw await failure(resp);
    const total = resp.headers.get('x-total-count');
    return { items: await resp.json(), total: total === null ? null : Number(total) };
  },
};
