// The dashboards' single page: a hash router over the pages, the navigation a role may see, and the
// sign-in form (served at /signin from the same bundle, so the CSP needs no inline script anywhere).
import './app.css';
import { html, render } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { AccountsPage } from './accounts.js';
import { FunnelPage } from './funnel.js';
import { type Account, api, currentRoute, ErrorNote, setCsrf } from './lib.js';
import { LivePage } from './live.js';
import { NotebooksPage } from './notebooks.js';
import { OffersPage } from './offers.js';
import { SalesPage } from './sales.js';
import { ShoppersPage } from './shoppers.js';

const PAGES = [
  { path: 'live', title: 'Live sale', roles: ['marketer', 'analyst', 'admin'], page: LivePage },
  { path: 'funnel', title: 'Funnel', roles: ['marketer', 'analyst', 'admin'], page: FunnelPage },
  { path: 'shoppers', title: 'Shoppers', roles: ['marketer', 'analyst', 'admin'], page: ShoppersPage },
  { path: 'offers', title: 'Offers', roles: ['marketer', 'analyst', 'admin'], page: OffersPage },
  { path: 'sales', title: 'Sales', roles: ['marketer', 'analyst', 'admin'], page: SalesPage },
  { path: 'notebooks', title: 'SQL notebooks', roles: ['analyst', 'admin'], page: NotebooksPage },
  { path: 'accounts', title: 'Accounts', roles: ['admin'], page: AccountsPage },
] as const;

function App() {
  const [account, setAccount] = useState<Account | null>(null);
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    api<{ account: Account }>('GET', '/api/me').then((r) => setAccount(r.account));
    const onHash = () => setRoute(currentRoute());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  if (!account) return html`<p class="loading">Loading…</p>`;
  const allowed = PAGES.filter((p) => (p.roles as readonly string[]).includes(account.role));
  const active = allowed.find((p) => p.path === route.path) ?? allowed[0]!;
  const Page = active.page;
  const signOut = async () => {
    await api('POST', '/api/signout', {});
    location.href = '/signin';
  };
  return html`<div class="app">
    <nav>
      <strong class="brand">Flash sale</strong>
      ${allowed.map((p) => html`<a href=${`#/${p.path}`} class=${p === active ? 'active' : ''} data-nav=${p.path}>${p.title}</a>`)}
      <span class="who" data-account=${account.email}>${account.name} · ${account.role}</span>
      <button class="small" onClick=${signOut} data-action="sign-out">Sign out</button>
    </nav>
    <main data-page=${active.path}>
      <h1>${active.title}</h1>
      <${Page} account=${account} query=${route.query} key=${active.path} />
    </main>
  </div>`;
}

function SignIn() {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    setBusy(true);
    setError(null);
    try {
      const result = await api<{ csrf: string }>('POST', '/api/signin', { email: form.get('email'), password: form.get('password') });
      setCsrf(result.csrf);
      const next = new URLSearchParams(location.search).get('next');
      // Only a path on this site: an open redirect would hand the session's first page to anyone.
      location.href = next?.startsWith('/') && !next.startsWith('//') ? next : '/';
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return html`<form class="signin" onSubmit=${submit}>
    <h1>Flash sale dashboards</h1>
    <label>Email <input name="email" type="email" autocomplete="username" required /></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
    <button type="submit" disabled=${busy} data-action="sign-in">Sign in</button>
    <${ErrorNote} error=${error} />
  </form>`;
}

const root = document.getElementById('root')!;
render(location.pathname.startsWith('/signin') ? html`<${SignIn} />` : html`<${App} />`, root);
