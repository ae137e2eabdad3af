// Sign in through the OIDC issuer's login: Authorization Code with PKCE (S256), state and nonce, run in the browser
// as a public client (no secret). GET /v1/console/config says whether it is offered (parley/api/console_oidc.py).
//
// Start: discovery (<issuer>/.well-known/openid-configuration), then the issuer's login page with a fresh state,
// nonce and code challenge; the verifier, state and nonce wait in this tab's sessionStorage. Back at
// /console/oidc/callback: the code leaves the address at once, the state must be the one this tab sent, the code is
// exchanged at the token endpoint (with the verifier), the ID token's nonce must be ours. The token the API's
// audience check accepts (the access token when its aud is PARLEY_OIDC_AUDIENCE, else the ID token when it is)
// is kept like an API key (parley.key) and sent as the bearer; the API verifies it (parley/api/auth.py). At its
// exp the console signs out, saying why.
import { ApiError, KEY_STORAGE } from './api.js';
import { me, signOut, NOTICE_STORAGE } from './session.js';

const PENDING = 'parley.oidc.pending'; // {state, nonce, verifier, tokenEndpoint, issuer, clientId, audience, next, back, at}
const EXPIRES = 'parley.oidc.expires'; // the kept token's exp, in ms
const ISSUER = 'parley.oidc.issuer'; // set while signed in through the issuer
const PENDING_MAX_MS = 15 * 60 * 1000; // a login left open longer than this starts again
const BACK = ['/', '/console/'];
let config = null;
let expiryTimer = null;

/** GET /v1/console/config (once): {oidc: {issuer, client_id, scopes, audience, redirect_path} | null}. */
export function consoleConfig() {
  if (!config) {
    config = fetch('/v1/console/config').then((r) => (r.ok ? r.json() : { oidc: null }), () => ({ oidc: null }));
  }
  return config;
}

/** 'login.example.com' for the button's "Sign in with …". */
export function issuerHost(oidc) {
  try { return new URL(oidc.issuer).host; } catch { return oidc.issuer; }
}

/** Whether this page is the issuer sending the browser back (the callback path of console_oidc.py). */
export function isCallback() {
  return location.pathname === '/console/oidc/callback';
}

/** Signed in through the issuer (not with an API key). */
export function oidcSession() {
  return sessionStorage.getItem(ISSUER) !== null;
}

const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));
const sameIssuer = (a, b) => String(a || '').replace(/\/+$/, '') === String(b || '').replace(/\/+$/, '');

async function challengeOf(verifier) {
  if (!crypto.subtle) throw new ApiError(0, 'signing in through the issuer needs HTTPS (or 127.0.0.1): this page cannot hash the PKCE verifier');
  return b64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
}

/** A JWT's claims, unverified (the API verifies the signature): only to pick the token and check the nonce. */
export function claimsOf(token) {
  const part = typeof token === 'string' ? token.split('.')[1] : null;
  if (!part) return null;
  try {
    const bin = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch { return null; }
}

const audiences = (claims) => (Array.isArray(claims?.aud) ? claims.aud : [claims?.aud]);

async function discover(oidc) {
  const where = `${oidc.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let meta;
  try {
    const r = await fetch(where);
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    meta = await r.json();
  } catch {
    throw new ApiError(0, `the identity provider at ${issuerHost(oidc)} cannot be reached (its discovery document did not load)`);
  }
  if (!sameIssuer(meta.issuer, oidc.issuer)) throw new ApiError(0, 'the identity provider\'s discovery document is for another issuer');
  const origin = new URL(oidc.issuer).origin;
  for (const name of ['authorization_endpoint', 'token_endpoint']) {
    let u;
    try { u = new URL(meta[name]); } catch { throw new ApiError(0, `the identity provider names no ${name}`); }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ApiError(0, `the identity provider's ${name} is not a web address`);
    if (name === 'token_endpoint' && u.origin !== origin) {
      throw new ApiError(0, `the identity provider's token endpoint (${u.origin}) is not on the issuer's origin, which is all the console may reach`);
    }
  }
  return meta;
}

/** Go to the issuer's login page; ``next`` is the console route to open once signed in. */
export async function startSignIn(oidc, next) {
  const meta = await discover(oidc);
  const verifier = random(32);
  const pending = {
    state: random(16), nonce: random(16), verifier, tokenEndpoint: meta.token_endpoint, issuer: oidc.issuer,
    clientId: oidc.client_id, audience: oidc.audience, next, back: BACK.includes(location.pathname) ? location.pathname : '/', at: Date.now(),
  };
  const login = new URL(meta.authorization_endpoint);
  const params = {
    response_type: 'code', client_id: oidc.client_id, redirect_uri: location.origin + oidc.redirect_path,
    scope: oidc.scopes, state: pending.state, nonce: pending.nonce,
    code_challenge: await challengeOf(verifier), code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) login.searchParams.set(k, v);
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  location.assign(login.href);
}

function takePending() {
  const raw = sessionStorage.getItem(PENDING);
  sessionStorage.removeItem(PENDING); // one answer per login: a replayed callback finds nothing
  try { return raw ? JSON.parse(raw) : null; } catch { return null; }
}

async function exchange(pending, code, redirectUri) {
  const body = new URLSearchParams({
    grant_type: 'authorization_code', code, redirect_uri: redirectUri,
    client_id: pending.clientId, code_verifier: pending.verifier,
  });
  let r;
  try {
    r = await fetch(pending.tokenEndpoint, { method: 'POST', body, headers: { accept: 'application/json' } });
  } catch {
    throw new ApiError(0, `the identity provider at ${new URL(pending.issuer).host} cannot be reached (the token exchange failed)`);
  }
  const tokens = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, `the identity provider refused the sign-in code: ${tokens.error_description || tokens.error || `HTTP ${r.status}`}`);
  return tokens;
}

/** The token to send as the bearer: the one whose aud is the API's audience (parley/api/auth.py checks it). */
function pickToken(pending, tokens) {
  const id = claimsOf(tokens.id_token);
  if (!id) throw new ApiError(0, 'the identity provider returned no ID token (is "openid" among PARLEY_OIDC_SCOPES?)');
  if (id.nonce !== pending.nonce) throw new ApiError(0, 'the ID token\'s nonce is not this sign-in\'s, so it was refused: sign in again');
  if (!sameIssuer(id.iss, pending.issuer) || !audiences(id).includes(pending.clientId)) {
    throw new ApiError(0, 'the ID token is not from this issuer for this console, so it was refused');
  }
  for (const token of [tokens.access_token, tokens.id_token]) {
    const claims = claimsOf(token);
    if (claims && audiences(claims).includes(pending.audience)) return { token, claims };
  }
  throw new ApiError(0, `neither the access token nor the ID token is for this API (audience ${pending.audience})`);
}

function fail(back, message) {
  sessionStorage.setItem(NOTICE_STORAGE, message);
  history.replaceState(null, '', `${back}#/signin`);
}

/** The callback: check, exchange, keep the token, then show ``next`` (or the sign-in page with what went wrong).
 * Always resolves: its outcome is the address it leaves (the code is out of it before anything else). */
export async function finishSignIn() {
  const params = new URLSearchParams(location.search);
  const redirectUri = location.origin + location.pathname; // as sent to the login page
  const pending = takePending();
  const back = pending && BACK.includes(pending.back) ? pending.back : '/';
  history.replaceState(null, '', back); // the code and state leave the address (and the history) at once
  if (params.get('error')) return fail(back, `The identity provider did not sign you in: ${params.get('error_description') || params.get('error')}.`);
  if (!pending || Date.now() - pending.at > PENDING_MAX_MS) return fail(back, 'This sign-in was not started in this tab, or too long ago: sign in again.');
  if (!params.get('state') || params.get('state') !== pending.state) {
    return fail(back, 'The sign-in answer does not match the request this tab made (state mismatch), so it was refused: sign in again.');
  }
  if (!params.get('code')) return fail(back, 'The identity provider sent no sign-in code.');
  try {
    const { token, claims } = pickToken(pending, await exchange(pending, params.get('code'), redirectUri));
    sessionStorage.setItem(KEY_STORAGE, token);
    sessionStorage.setItem(ISSUER, pending.issuer);
    if (typeof claims.exp === 'number') sessionStorage.setItem(EXPIRES, String(claims.exp * 1000));
    await me();
  } catch (e) {
    for (const k of [KEY_STORAGE, ISSUER, EXPIRES]) sessionStorage.removeItem(k);
    const why = e.status === 401 || e.status === 403 ? `the API refused the issuer's token: ${e.message}` : e.message;
    return fail(back, `Signing in through the identity provider failed: ${why}.`);
  }
  history.replaceState(null, '', `${back}#${pending.next || '/agents'}`);
  watchExpiry();
  return undefined;
}

/** Sign out, saying so, when the kept token's exp passes (the API would refuse it from then on). */
export function watchExpiry() {
  clearTimeout(expiryTimer);
  const at = Number(sessionStorage.getItem(EXPIRES));
  if (!at || !oidcSession()) return;
  expiryTimer = setTimeout(() => { if (oidcSession()) signOut(expiredNotice()); }, Math.max(0, at - Date.now()));
}

/** What the sign-in page says when an issuer's token stops working (undefined for an API key: nothing to add). */
export function expiredNotice() {
  return oidcSession() ? 'Your sign-in through the identity provider has expired: sign in again.' : undefined;
}
