// The console's shell: a hash router (#/agents/x?draft=1), the navigation bar, sign-in guard, lazy views.
// Each view is views/<name>.js whose default export is a Preact component ({params, query}) => html…; a view whose
// module is not there yet shows "not available yet" instead of breaking the shell.
import { html, render, useState, useEffect, useRef, ErrorBox, Loading } from './lib/ui.js';
import { signedIn, me, current, can, signOut } from './lib/session.js';
import { isCallback, finishSignIn, watchExpiry, expiredNotice } from './lib/oidc.js';

const ROUTES = [
  ['/signin', 'signin'],
  ['/agents', 'agents'],
  ['/agents/:ref', 'agent'],
  ['/talk/:ref', 'talk'],
  ['/calls', 'calls'],
  ['/calls/:id', 'call'],
  ['/live', 'live'],
  ['/analytics', 'analytics'],
  ['/numbers', 'numbers'],
  ['/keys', 'keys'],
];
const NAV = [
  ['/agents', 'Agents', 'agents:read'],
  ['/calls', 'Calls', 'calls:read'],
  ['/live', 'Live', 'calls:read'],
  ['/analytics', 'Analytics', 'calls:read'],
  ['/numbers', 'Numbers', 'agents:read'],
  ['/keys', 'Keys', 'keys'],
];

/** '#/agents/x?draft=1' → {path: '/agents/x', view: 'agent', params: {ref: 'x'}, query: {draft: '1'}} */
export function parseHash(hash) {
  const raw = (hash || '').replace(/^#/, '') || '/agents';
  const [pathPart, queryPart = ''] = raw.split('?');
  const path = pathPart.startsWith('/') ? pathPart : `/${pathPart}`;
  const query = Object.fromEntries(new URLSearchParams(queryPart));
  const parts = path.split('/').filter(Boolean);
  for (const [pattern, view] of ROUTES) {
    const want = pattern.split('/').filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    const ok = want.every((w, i) => {
      if (w.startsWith(':')) { params[w.slice(1)] = decodeURIComponent(parts[i]); return true; }
      return w === parts[i];
    });
    if (ok) return { path, view, params, query };
  }
  return { path, view: null, params: {}, query };
}

const modules = new Map();
function loadView(name) {
  if (!modules.has(name)) {
    modules.set(name, import(`./views/${name}.js`).then(
      (m) => ({ Component: m.default }),
      (error) => { modules.delete(name); return { error }; },
    ));
  }
  return modules.get(name);
}

function NotAvailable({ name, error }) {
  return html`<section class="card notice" data-testid="not-available">
    <h1>Not available yet</h1>
    <p>This part of the console (<code>${name}</code>) is not in this build.</p>
    ${error ? html`<details><summary>Why</summary><pre>${String(error.message || error)}</pre></details>` : null}
  </section>`;
}

function Nav({ route, who }) {
  const [open, setOpen] = useState(false);
  useEffect(() => setOpen(false), [route.path]);
  const active = (to) => route.path === to || route.path.startsWith(`${to}/`)
    || (to === '/agents' && route.path.startsWith('/talk/'));
  return html`<header class="topbar">
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('main').focus(); }}>Skip to content</a>
    <a class="brand" href="#/agents" aria-label="Parley home"><span class="logo" aria-hidden="true"></span>Parley</a>
    <button class="btn ghost menu-toggle" aria-expanded=${open} aria-controls="nav" onClick=${() => setOpen(!open)}
      data-testid="nav-toggle">Menu</button>
    <nav id="nav" class=${open ? 'open' : ''} aria-label="main">
      ${NAV.filter(([, , scope]) => can(scope)).map(([to, label]) => html`<a href=${`#${to}`}
          class=${active(to) ? 'active' : ''} aria-current=${active(to) ? 'page' : undefined}
          data-testid=${`nav-${label.toLowerCase()}`}>${label}</a>`)}
    </nav>
    <div class="who">
      <span class="who-name" title=${who.subject}>${who.key_name || who.subject}</span>
      <span class=${`badge role-${who.role}`} data-testid="role">${who.role}</span>
      <button class="btn ghost" onClick=${signOut} data-testid="signout">Sign out</button>
    </div>
  </header>`;
}

function View({ route }) {
  const [loaded, setLoaded] = useState(null);
  useEffect(() => {
    let live = true;
    setLoaded(null);
    if (route.view) loadView(route.view).then((m) => live && setLoaded({ ...m, name: route.view }));
    return () => { live = false; };
  }, [route.view]);
  if (!route.view) return html`<section class="card notice"><h1>No such page</h1><p><a href="#/agents">Go to agents</a></p></section>`;
  if (!loaded || loaded.name !== route.view) return html`<${Loading} />`;
  if (loaded.error || typeof loaded.Component !== 'function') {
    return html`<${NotAvailable} name=${route.view} error=${loaded.error} />`;
  }
  const C = loaded.Component;
  return html`<${C} key=${route.path} params=${route.params} query=${route.query} />`;
}

function App() {
  const [route, setRoute] = useState(parseHash(location.hash));
  const [who, setWho] = useState(current());
  const [error, setError] = useState(null);
  const main = useRef(null);

  useEffect(() => {
    const onHash = () => setRoute(parseHash(location.hash));
    const onOut = () => { setWho(null); };
    const onUnauthorized = () => { if (signedIn()) signOut(expiredNotice()); };
    window.addEventListener('hashchange', onHash);
    window.addEventListener('parley:signedout', onOut);
    window.addEventListener('parley:unauthorized', onUnauthorized);
    return () => {
      window.removeEventListener('hashchange', onHash);
      window.removeEventListener('parley:signedout', onOut);
      window.removeEventListener('parley:unauthorized', onUnauthorized);
    };
  }, []);

  const needsSignIn = route.view !== 'signin' && !signedIn();
  useEffect(() => {
    if (needsSignIn) {
      const next = route.path === '/agents' ? '' : `?next=${encodeURIComponent(location.hash.slice(1))}`;
      location.replace(`#/signin${next}`);
    } else if (signedIn() && !who) {
      setError(null);
      me().then(setWho, (e) => (e.status === 401 ? signOut(expiredNotice()) : setError(e)));
    }
  }, [route.path, needsSignIn, who]);

  useEffect(() => { if (main.current && document.activeElement === document.body) main.current.focus({ preventScroll: true }); }, [route.path]);

  if (route.view === 'signin') {
    return html`<main id="main" class="signin-main" tabindex="-1" ref=${main}><${View} route=${route} /></main>`;
  }
  let body;
  if (error) body = html`<${ErrorBox} error=${error} />`;
  else if (!who) body = html`<${Loading} label="Signing in…" />`;
  else body = html`<${View} route=${route} />`;
  return html`${who ? html`<${Nav} route=${route} who=${who} />` : null}
    <main id="main" tabindex="-1" ref=${main}>${body}</main>`;
}

const root = document.getElementById('app');
if (isCallback()) { // back from the OIDC issuer's login (lib/oidc.js): finish there, then the app as usual
  render(html`<main id="main" class="signin-main"><${Loading} label="Signing in…" /></main>`, root);
  finishSignIn().catch(() => {}).then(() => render(html`<${App} />`, root));
} else {
  watchExpiry();
  render(html`<${App} />`, root);
}
