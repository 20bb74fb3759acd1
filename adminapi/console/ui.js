// Small DOM and API helpers. Every text goes in through textContent (never
// innerHTML), so nothing an API returns can run as markup.

export const session = { role: null, csrf: null, tokenId: null, gateway: null };

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.param = e.param;
  }
}

// A call to the admin API with the session cookie; writes carry the
// anti-forgery token. A 401 means the session ended: back to sign-in.
export async function api(method, path, body) {
  const headers = { 'Accept': 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = session.csrf || '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (r.status === 401 && path !== '/v1/admin/console/session') {
    window.dispatchEvent(new CustomEvent('sb-signed-out'));
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const canWrite = () => session.role === 'admin';

export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function table(columns, rows, opts = {}) {
  const head = h('tr', {}, columns.map(c => h('th', { class: c.num ? 'num' : null, scope: 'col' }, c.label)));
  const body = rows.map(r => {
    const tr = h('tr', opts.onRow ? { class: 'clickable', tabindex: '0' } : {},
      columns.map(c => {
        const v = c.render ? c.render(r) : r[c.key];
        return h('td', { class: c.num ? 'num' : null }, v === null || v === undefined ? '—' : v);
      }));
    if (opts.onRow) {
      tr.addEventListener('click', () => opts.onRow(r));
      tr.addEventListener('keydown', e => { if (e.key === 'Enter') opts.onRow(r); });
    }
    return tr;
  });
  if (!rows.length) body.push(h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, opts.empty || 'Nothing yet.')));
  return h('div', { class: 'tablewrap' }, h('table', { 'data-table': opts.name || null }, h('thead', {}, head), h('tbody', {}, body)));
}

export const fmt = {
  int: n => (n === null || n === undefined) ? '—' : Number(n).toLocaleString('en-US'),
  usd: n => (n === null || n === undefined) ? '—' : `$${Number(n).toFixed(n !== 0 && Math.abs(n) < 0.01 ? 6 : 2)}`,
  ms: n => (n === null || n === undefined) ? '—' : `${Number(n) < 10 ? Number(n).toFixed(2) : Math.round(Number(n)).toLocaleString('en-US')} ms`,
  pct: n => (n === null || n === undefined) ? '—' : `${(Number(n) * 100).toFixed(1)} %`,
  time: ms => (ms === null || ms === undefined) ? '—' : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
  secs: s => (s === null || s === undefined) ? '—' : new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ') + 'Z',
};

export function badge(text, cls) { return h('span', { class: `badge ${cls || text}` }, text); }

// Show an API error next to the field it names (`param`), or under the form.
export function showError(form, err) {
  form.querySelectorAll('.field-error').forEach(e => e.remove());
  const msg = err instanceof ApiError ? err.message : String(err);
  let anchor = null;
  if (err && err.param) {
    const base = String(err.param).split(/[.[]/)[0];
    anchor = form.querySelector(`[data-param="${CSS.escape(err.param)}"]`) || form.querySelector(`[data-param="${CSS.escape(base)}"]`);
  }
  const note = h('span', { class: 'field-error', role: 'alert', 'data-error-for': err && err.param ? err.param : '' }, msg);
  if (anchor) anchor.closest('label')?.append(note) ?? anchor.after(note);
  else form.append(note);
}

export function clearErrors(form) { form.querySelectorAll('.field-error').forEach(e => e.remove()); }

export function toast(text) {
  let t = document.getElementById('toast');
  if (!t) { t = h('div', { id: 'toast', role: 'status' }); document.body.append(t); }
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.remove(), 4000);
}

// A secret shown once, with a copy button.
export function secretBox(title, secret, extra) {
  const code = h('code', { 'data-secret': '' }, secret);
  const copy = h('button', { type: 'button', onclick: async () => {
    try { await navigator.clipboard.writeText(secret); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy'; }
  } }, 'Copy');
  return h('div', { class: 'secret', role: 'alert' },
    h('div', {}, h('strong', {}, title), ' — shown once: store it now; it cannot be shown again.'),
    h('div', { class: 'row' }, code, copy), extra || null);
}

export function confirmReason(text) {
  const r = window.prompt(text);
  return r === null ? null : r.trim();
}
