// Who is signed in: the key in sessionStorage and what GET /v1/me says it may do. Views ask can(scope) to
// decide which controls to offer; the API still decides what is allowed (a forced request gets its 403).
import { api, ApiError, getKey, KEY_STORAGE } from './api.js';

const RANK = { viewer: 0, editor: 1, admin: 2 };
// the role each Parley scope needs (parley/api/deps.py)
const NEEDS = {
  'agents:read': 'viewer', 'agents:write': 'editor', 'calls:read': 'viewer',
  'calls:write': 'editor', keys: 'admin', talk: 'viewer',
};
let cached = null; // {promise, value}
/** A line for the sign-in page to show once (why the last session ended); kept past forget(). */
export const NOTICE_STORAGE = 'parley.notice';

export function signedIn() {
  return Boolean(getKey());
}

/** Keep the key for this tab and check it against the API; a key the API refuses is forgotten again. */
export async function signIn(key) {
  const trimmed = (key || '').trim();
  if (!trimmed) throw new ApiError(400, 'enter an API key');
  sessionStorage.setItem(KEY_STORAGE, trimmed);
  cached = null;
  try {
    return await me();
  } catch (e) {
    forget();
    throw e.status === 401 ? new ApiError(401, 'that key was not accepted') : e;
  }
}

function forget() {
  cached = null;
  for (let i = sessionStorage.length - 1; i >= 0; i--) {
    const k = sessionStorage.key(i);
    if (k && k.startsWith('parley.')) sessionStorage.removeItem(k); // the key and any drafts kept for it
  }
}

/** Forget the key (and the drafts kept with it) and go to the sign-in page, saying ``notice`` there (a string). */
export function signOut(notice) {
  forget();
  if (typeof notice === 'string' && notice) sessionStorage.setItem(NOTICE_STORAGE, notice); // not a click's event
  window.dispatchEvent(new CustomEvent('parley:signedout'));
  location.hash = '#/signin';
}

/** GET /v1/me, once per sign-in. */
export function me() {
  if (!cached) {
    const promise = api.get('me').then((value) => {
      if (cached && cached.promise === promise) cached.value = value;
      return value;
    });
    cached = { promise, value: null };
    promise.catch(() => { if (cached && cached.promise === promise) cached = null; });
  }
  return cached.promise;
}

/** The /v1/me answer already loaded (null before). */
export function current() {
  return cached ? cached.value : null;
}

/** Whether the signed-in credential holds ``scope`` (its role allows it and its scopes, if limited, include it). */
export function can(scope) {
  const who = current();
  if (!who) return false;
  const needs = NEEDS[scope];
  if (needs && (RANK[who.role] ?? -1) < RANK[needs]) return false;
  const limited = (who.scopes || []).filter((s) => s in NEEDS);
  return limited.length === 0 || limited.includes(scope);
}
