// Sign in with an API key: kept in this tab's sessionStorage and sent as a bearer header, never put in a URL.
// Where OIDC is configured, or through the issuer's login (lib/oidc.js), whose token is kept and sent the same way.
import { html, useState, useRef, useEffect, ErrorBox } from '../lib/ui.js';
import { signIn, signedIn, NOTICE_STORAGE } from '../lib/session.js';
import { consoleConfig, issuerHost, startSignIn } from '../lib/oidc.js';

function destination(query) {
  const next = query.next || '';
  return next.startsWith('/') && !next.startsWith('/signin') ? next : '/agents';
}

export default function SignIn({ query }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [notice] = useState(() => sessionStorage.getItem(NOTICE_STORAGE));
  const [oidc, setOidc] = useState(null);
  const input = useRef(null);
  useEffect(() => {
    document.title = 'Sign in · Parley';
    sessionStorage.removeItem(NOTICE_STORAGE); // said once
    if (signedIn()) location.replace(`#${destination(query)}`);
    else if (input.current) input.current.focus();
    let live = true;
    consoleConfig().then((c) => live && setOidc(c.oidc || null));
    return () => { live = false; };
  }, []);

  const viaIssuer = async () => {
    setBusy(true);
    setError(null);
    try {
      await startSignIn(oidc, destination(query)); // leaves the page for the issuer's login
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(key);
      setKey('');
      location.hash = `#${destination(query)}`;
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  return html`<section class="signin">
    <div class="brand"><span class="logo" aria-hidden="true"></span>Parley</div>
    <form class="card" onSubmit=${submit} data-testid="signin-form">
      <h1>Sign in</h1>
      <p class="muted">${oidc ? 'Sign in through your identity provider, or use an API key of your tenant. Either' : 'Use an API key of your tenant. It'} stays in this browser tab only and is forgotten when you sign out or close the tab.</p>
      ${notice ? html`<div class="error-box" role="alert" data-testid="signin-notice"><p>${notice}</p></div>` : null}
      <${ErrorBox} error=${error} testid="signin-error" />
      ${oidc ? html`<button class="btn primary" type="button" onClick=${viaIssuer} disabled=${busy} data-testid="signin-oidc"
          style="width:100%">Sign in with ${issuerHost(oidc)}</button>
        <p class="muted" style="text-align:center;margin:.75rem 0">or with an API key</p>` : null}
      <div class="field">
        <label for="key">API key</label>
        <input id="key" ref=${input} type="password" autocomplete="off" spellcheck="false" placeholder="pk_…"
          value=${key} onInput=${(e) => setKey(e.target.value)} data-testid="signin-key" required />
      </div>
      <button class="btn primary" type="submit" disabled=${busy || !key.trim()} data-testid="signin-submit" style="width:100%">
        ${busy ? 'Signing in…' : 'Sign in'}</button>
      <details>
        <summary>No key yet?</summary>
        <p>On the machine that runs Parley, create the first admin key:</p>
        <pre>parley admin create-key --tenant demo --role admin --name console</pre>
        <p>The secret is printed once. The API itself is documented at <a href="/docs">/docs</a>.</p>
      </details>
    </form>
  </section>`;
}
