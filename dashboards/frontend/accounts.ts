// Accounts (admin only): who may sign in, with which role.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { type Account, api, ErrorNote, Table } from './lib.js';

export function AccountsPage() {
  const [accounts, setAccounts] = useState<Account[]>([]);
  const [error, setError] = useState<unknown>(null);
  const load = () => api<{ accounts: Account[] }>('GET', '/api/admin/accounts').then((r) => setAccounts(r.accounts), setError);
  useEffect(() => {
    load();
  }, []);
  const create = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    try {
      await api('POST', '/api/admin/accounts', Object.fromEntries(form.entries()));
      (event.target as HTMLFormElement).reset();
      load();
    } catch (e) {
      setError(e);
    }
  };
  return html`<div>
    <${ErrorNote} error=${error} />
    <form class="card inline" onSubmit=${create} data-form="create-account">
      <label>Email <input name="email" type="email" required /></label>
      <label>Name <input name="name" required /></label>
      <label>Role <select name="role"><option>marketer</option><option>analyst</option><option>admin</option></select></label>
      <label>Password <input name="password" type="password" minlength="12" required /></label>
      <button type="submit">Add account</button>
    </form>
    <section class="card"><${Table} id="accounts" rows=${accounts} columns=${['id', 'email', 'name', 'role']} /></section>
  </div>`;
}
