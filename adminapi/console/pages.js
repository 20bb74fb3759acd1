// The console's pages. Each takes the page element and returns a cleanup
// function (timers). Every page's data comes from one or two API calls.
import uPlot from '/console/vendor/uplot/uPlot.esm.js';
import { h, api, qs, table, fmt, badge, showError, clearErrors, toast, secretBox, canWrite, ApiError, session } from '/console/ui.js';

const A = '/v1/admin';
const COLORS = ['#0b62d6', '#e8590c', '#2b8a3e', '#c2255c', '#7048e8', '#0c8599', '#a61e4d', '#5c940d'];

function lines(text) { return text.split(/[\n,]/).map(s => s.trim()).filter(Boolean); }
function num(v) { return v === '' || v === null || v === undefined ? undefined : Number(v); }

// ---------------------------------------------------------------- overview

export function overview(page) {
  let windowSel = sessionStorage.getItem('sb-window') || 'hour';
  let split = sessionStorage.getItem('sb-split') || 'model';
  const cards = h('div', { class: 'cards', id: 'kpis' });
  const charts = h('div', { class: 'charts' });
  const targets = h('div');
  const status = h('span', { class: 'muted', id: 'ov-updated' });
  const wsel = h('select', { id: 'ov-window', 'aria-label': 'Window', onchange: e => { windowSel = e.target.value; sessionStorage.setItem('sb-window', windowSel); load(); } },
    [['hour', 'Last hour'], ['day', 'Last day'], ['month', 'Last 30 days']].map(([v, t]) => h('option', { value: v, selected: v === windowSel }, t)));
  const ssel = h('select', { id: 'ov-split', 'aria-label': 'Split by', onchange: e => { split = e.target.value; sessionStorage.setItem('sb-split', split); load(); } },
    ['model', 'route', 'target', 'org'].map(v => h('option', { value: v, selected: v === split }, `by ${v}`)));
  page.append(h('h1', {}, 'Overview'), h('div', { class: 'row' }, wsel, ssel, status), cards, charts, targets);
  const plots = new Map();
  // A chart, made once per set of series and then only given new data (no flicker on refresh).
  function chart(title, id, series, data, fmtY) {
    const key = `${title}|${series.join('\u0000')}`;
    const old = plots.get(id);
    if (old && old.key === key) { old.plot.setData(data); return; }
    if (old) { old.plot.destroy(); old.wrap.remove(); }
    const box = h('div', { class: 'chart', id });
    const wrap = h('div', { 'data-chart': id }, h('h2', {}, title), box);
    const order = ['chart-requests', 'chart-latency', 'chart-errors', 'chart-spend', 'chart-tokens'];
    const next = [...charts.children].find(c => order.indexOf(c.dataset.chart) > order.indexOf(id));
    charts.insertBefore(wrap, next || null);
    const width = Math.max(260, Math.min(box.clientWidth || 600, 900));
    const opts = {
      width, height: 220,
      series: [{}, ...series.map((s, i) => ({ label: s, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: true, size: 4 }, value: (u, v) => v === null ? '—' : fmtY(v) }))],
      axes: [{ stroke: getComputedStyle(document.body).color }, { stroke: getComputedStyle(document.body).color, size: 70, values: (u, vals) => vals.map(v => fmtY(v)) }],
      scales: { x: { time: true } },
    };
    plots.set(id, { key, wrap, plot: new uPlot(opts, data, box) });
  }
  async function load() {
    let o;
    try { o = await api('GET', `${A}/console/overview${qs({ window: windowSel, split })}`); }
    catch (e) { status.textContent = `Could not load: ${e.message}`; return; }
    const t = o.totals;
    cards.replaceChildren(...[
      ['Requests / min', t.requests_per_minute.toFixed(2), 'rpm'], ['Requests', fmt.int(t.requests), 'requests'],
      ['Error rate', fmt.pct(t.error_rate), 'error-rate'], ['p50 latency', fmt.ms(t.p50_ms), 'p50'], ['p99 latency', fmt.ms(t.p99_ms), 'p99'],
      ['Tokens', fmt.int(t.total_tokens), 'tokens'], ['Spend', fmt.usd(t.cost_usd), 'spend'],
    ].map(([k, v, id]) => h('div', { class: 'card', 'data-kpi': id }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v))));
    const xs = o.series.map(p => p.t);
    const names = o.splits.map(s => s.name || '(none)');
    chart(`Requests per ${o.bucket_seconds >= 3600 ? `${o.bucket_seconds / 3600} h` : `${o.bucket_seconds / 60} min`}, by ${o.split}`, 'chart-requests', names.length ? names : ['requests'],
      [xs, ...(o.splits.length ? o.splits.map(s => s.requests) : [o.series.map(p => p.requests)])], v => fmt.int(v));
    chart('Latency (ms)', 'chart-latency', ['p50', 'p99'], [xs, o.series.map(p => p.p50_ms), o.series.map(p => p.p99_ms)], v => v === null ? '—' : (Number(v) < 10 ? Number(v).toFixed(1) : Math.round(Number(v)).toLocaleString('en-US')));
    chart('Errors', 'chart-errors', ['errors'], [xs, o.series.map(p => p.errors)], v => fmt.int(v));
    chart(`Spend (USD), by ${o.split}`, 'chart-spend', names.length ? names : ['spend'],
      [xs, ...(o.splits.length ? o.splits.map(s => s.cost_usd) : [o.series.map(p => p.cost_usd)])], v => `$${Number(v).toFixed(4)}`);
    chart(`Tokens, by ${o.split}`, 'chart-tokens', names.length ? names : ['tokens'],
      [xs, ...(o.splits.length ? o.splits.map(s => s.total_tokens) : [o.series.map(p => p.total_tokens)])], v => fmt.int(v));
    const slow = [...o.targets].filter(x => x.p99_ms !== null).sort((a, b) => b.p99_ms - a.p99_ms).slice(0, 5);
    const failing = [...o.targets].filter(x => x.errors > 0).sort((a, b) => b.error_rate - a.error_rate).slice(0, 5);
    const cols = [{ label: 'Target', key: 'target', render: r => r.target || '(none answered)' }, { label: 'Requests', key: 'requests', num: true, render: r => fmt.int(r.requests) },
      { label: 'Errors', num: true, render: r => fmt.int(r.errors) }, { label: 'Error rate', num: true, render: r => fmt.pct(r.error_rate) },
      { label: 'p50', num: true, render: r => fmt.ms(r.p50_ms) }, { label: 'p99', num: true, render: r => fmt.ms(r.p99_ms) }];
    targets.replaceChildren(h('h2', {}, 'Slowest targets (p99)'), table(cols, slow, { name: 'slowest', empty: 'No requests in this window.' }),
      h('h2', {}, 'Most failing targets'), table(cols, failing, { name: 'failing', empty: 'No errors in this window.' }));
    status.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every 5 s`;
  }
  load();
  const timer = setInterval(load, 5000);
  return () => { clearInterval(timer); plots.forEach(p => p.plot.destroy()); };
}

// ---------------------------------------------------------------- usage

export function usage(page) {
  const f = h('form', { class: 'row', id: 'usage-filters' },
    ...[['from', 'From (YYYY-MM-DD or Unix s)'], ['to', 'To'], ['org', 'Org'], ['key', 'Key id'], ['model', 'Model'], ['route', 'Route'], ['target', 'Target']]
      .map(([n, l]) => h('label', {}, l, h('input', { name: n, 'data-param': n, size: n === 'from' || n === 'to' ? 16 : 10 }))),
    h('label', {}, 'Group by', h('select', { name: 'group_by', 'data-param': 'group_by' }, ['model', 'route', 'target', 'org', 'key', 'org,model', 'route,target'].map(v => h('option', { value: v }, v)))),
    h('label', {}, 'Per', h('select', { name: 'granularity', 'data-param': 'granularity' }, ['total', 'day', 'hour', 'minute'].map(v => h('option', { value: v }, v)))),
    h('button', { type: 'submit', class: 'primary' }, 'Apply'));
  const csv = h('a', { id: 'usage-csv', href: '#', download: 'usage.csv' }, 'Download CSV');
  const grouped = h('div', { id: 'usage-grouped' });
  const log = h('div', { id: 'usage-log' });
  const details = h('div', { id: 'request-details' });
  const more = h('button', { type: 'button', hidden: true }, 'Older requests');
  page.append(h('h1', {}, 'Usage'), f, h('div', { class: 'row' }, csv), grouped, h('h2', {}, 'Request log'), details, log, more);
  let cursor = null; let rows = [];
  function params() {
    const d = Object.fromEntries(new FormData(f).entries());
    return d;
  }
  async function load(append) {
    clearErrors(f);
    const p = params();
    // Empty times: the last 24 hours, widened to whole hours (reports then read the hourly rollups).
    const hourNow = Math.floor(Date.now() / 3600000) * 3600;
    const filters = { from: p.from || String(hourNow - 23 * 3600), to: p.to || String(hourNow + 3600), org: p.org, key: p.key, model: p.model, route: p.route, target: p.target };
    csv.href = `${A}/usage${qs({ ...filters, group_by: p.group_by, granularity: p.granularity, format: 'csv' })}`;
    try {
      const [rep, reqs] = await Promise.all([
        append ? null : api('GET', `${A}/usage${qs({ ...filters, group_by: p.group_by, granularity: p.granularity })}`),
        api('GET', `${A}/requests${qs({ ...filters, limit: 50, ...(append && cursor ? { before: cursor.ts_ms, before_id: cursor.id } : {}) })}`),
      ]);
      if (rep) {
        const dims = rep.group_by;
        grouped.replaceChildren(table([
          ...(rep.granularity !== 'total' ? [{ label: 'Period', key: 'period' }] : []),
          ...dims.map(d => ({ label: d, key: d })),
          { label: 'Requests', num: true, render: r => fmt.int(r.requests) }, { label: 'Errors', num: true, render: r => fmt.int(r.errors) },
          { label: 'Tokens', num: true, render: r => fmt.int(r.total_tokens) }, { label: 'Cost', num: true, render: r => fmt.usd(r.cost_usd) },
          { label: 'Avg latency', num: true, render: r => fmt.ms(r.avg_latency_ms) },
        ], rep.data, { name: 'usage', empty: 'No usage in this range.' }));
      }
      rows = append ? rows.concat(reqs.data) : reqs.data;
      cursor = reqs.data.length ? reqs.data[reqs.data.length - 1] : null;
      more.hidden = reqs.data.length < 50;
      log.replaceChildren(table([
        { label: 'Time', render: r => r.time }, { label: 'Status', render: r => badge(String(r.status), r.status < 400 ? 'ok' : 'error') },
        { label: 'Org', key: 'org' }, { label: 'Key', key: 'key' }, { label: 'Model', key: 'model' }, { label: 'Target', key: 'target' },
        { label: 'Tokens', num: true, render: r => fmt.int(r.total_tokens) }, { label: 'Cost', num: true, render: r => fmt.usd(r.cost_usd) },
        { label: 'Latency', num: true, render: r => fmt.ms(r.latency_ms) }, { label: 'Request id', key: 'request_id' },
      ], rows, { name: 'requests', empty: 'No requests in this range.', onRow: r => {
        details.replaceChildren(h('h2', {}, `Request ${r.request_id}`), h('dl', { class: 'details' },
          Object.entries(r).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])));
        details.scrollIntoView({ block: 'nearest' });
      } }));
    } catch (e) { showError(f, e); }
  }
  f.addEventListener('submit', e => { e.preventDefault(); load(false); });
  more.addEventListener('click', () => load(true));
  load(false);
  return () => {};
}

// ---------------------------------------------------------------- keys

export function keys(page) {
  const shown = h('div', { id: 'key-secret' });
  const list = h('div');
  const limits = h('div', { id: 'key-limits' });
  page.append(h('h1', {}, 'API keys'), shown);
  let orgs = [];
  const form = h('form', { class: 'row', id: 'key-create' },
    h('label', {}, 'Org', h('select', { name: 'org', 'data-param': 'org', required: true })),
    h('label', {}, 'Name', h('input', { name: 'name', 'data-param': 'name', required: true })),
    h('label', {}, 'Allowed models (comma; * = all)', h('input', { name: 'models', 'data-param': 'models', value: '*' })),
    h('label', {}, 'Expires (date, UTC)', h('input', { name: 'expires', type: 'date', 'data-param': 'expires_at' })),
    h('button', { type: 'submit', class: 'primary' }, 'Create key'));
  const orgForm = h('form', { class: 'row', id: 'org-create' },
    h('label', {}, 'New org', h('input', { name: 'name', 'data-param': 'name', required: true })), h('button', { type: 'submit' }, 'Create org'));
  if (canWrite()) page.append(form, orgForm);
  page.append(list, limits);
  async function load() {
    const [k, o] = await Promise.all([api('GET', `${A}/keys?limit=1000`), api('GET', `${A}/orgs?limit=1000`)]);
    orgs = o.data;
    const sel = form.querySelector('select[name=org]');
    sel.replaceChildren(...orgs.map(x => h('option', { value: x.name }, x.name)));
    list.replaceChildren(table([
      { label: 'Name', key: 'name' }, { label: 'Org', key: 'org' }, { label: 'Key', key: 'hint' }, { label: 'Id', key: 'id' },
      { label: 'Models', render: r => r.models.join(', ') }, { label: 'Expires', render: r => r.expires_at ? fmt.secs(r.expires_at) : 'never' },
      { label: 'State', render: r => badge(r.enabled ? 'enabled' : 'disabled', r.enabled ? 'ok' : 'disabled') },
      { label: '', render: r => h('span', { class: 'row' },
        h('button', { type: 'button', 'data-details': r.name, onclick: () => showLimits(r) }, 'Details'),
        canWrite() && r.enabled ? h('button', { type: 'button', class: 'danger', 'data-action': 'revoke', onclick: () => act(r, 'revoke') }, 'Revoke') : null,
        canWrite() && !r.enabled ? h('button', { type: 'button', 'data-action': 'enable', onclick: () => act(r, 'enable') }, 'Enable') : null,
        canWrite() ? h('button', { type: 'button', 'data-action': 'rotate', onclick: () => act(r, 'rotate') }, 'Rotate') : null) },
    ], k.data, { name: 'keys', empty: 'No keys yet.' }));
  }
  async function act(r, what) {
    try {
      if (what === 'revoke') await api('POST', `${A}/keys/${encodeURIComponent(r.id)}/revoke`);
      if (what === 'enable') await api('PATCH', `${A}/keys/${encodeURIComponent(r.id)}`, { enabled: true });
      if (what === 'rotate') {
        const out = await api('POST', `${A}/keys/${encodeURIComponent(r.id)}/rotate`);
        shown.replaceChildren(secretBox(`New secret of key ${out.name}`, out.key_secret));
      }
      toast(`Key ${r.name}: ${what} done`);
      await load();
    } catch (e) { toast(`${what} failed: ${e.message}`); }
  }
  async function showLimits(r) {
    try {
      const l = await api('GET', `${A}/keys/${encodeURIComponent(r.id)}/limits`);
      const rate = (x) => x ? `${fmt.int(x.remaining)} of ${fmt.int(x.limit)} left (full in ${Math.ceil(x.reset_ms / 1000)} s)` : 'no limit';
      const lf = h('form', { class: 'row', id: 'limits-form' },
        h('label', {}, 'Requests / min', h('input', { name: 'rpm', type: 'number', min: 1, 'data-param': 'rpm', value: l.limits.rpm ?? '' })),
        h('label', {}, 'Tokens / min', h('input', { name: 'tpm', type: 'number', min: 1, 'data-param': 'tpm', value: l.limits.tpm ?? '' })),
        h('label', {}, 'Daily USD cap', h('input', { name: 'day_usd', type: 'number', step: 'any', min: 0, 'data-param': 'quotas', value: (l.limits.quotas || []).find(q => q.period === 'day')?.max_usd ?? '' })),
        h('label', {}, 'Monthly USD cap', h('input', { name: 'month_usd', type: 'number', step: 'any', min: 0, 'data-param': 'quotas', value: (l.limits.quotas || []).find(q => q.period === 'month')?.max_usd ?? '' })),
        h('button', { type: 'submit' }, 'Save limits'));
      lf.addEventListener('submit', async e => {
        e.preventDefault(); clearErrors(lf);
        const d = Object.fromEntries(new FormData(lf).entries());
        const quotas = [];
        if (d.day_usd !== '') quotas.push({ period: 'day', max_usd: Number(d.day_usd) });
        if (d.month_usd !== '') quotas.push({ period: 'month', max_usd: Number(d.month_usd) });
        try { await api('PUT', `${A}/keys/${encodeURIComponent(r.id)}/limits`, { rpm: num(d.rpm), tpm: num(d.tpm), quotas }); toast('Limits saved'); showLimits(r); }
        catch (err) { showError(lf, err); }
      });
      const ef = h('form', { class: 'row', id: 'key-edit' },
        h('label', {}, 'Allowed models (comma; * = all)', h('input', { name: 'models', 'data-param': 'models', value: r.models.join(', ') })),
        h('label', {}, 'Expires (date, UTC; empty = never)', h('input', { name: 'expires', type: 'date', 'data-param': 'expires_at', value: r.expires_at ? new Date(r.expires_at * 1000).toISOString().slice(0, 10) : '' })),
        h('button', { type: 'submit' }, 'Save key'));
      ef.addEventListener('submit', async e => {
        e.preventDefault(); clearErrors(ef);
        const d = Object.fromEntries(new FormData(ef).entries());
        const body = { models: lines(d.models || '*'), expires_at: d.expires ? Math.floor(Date.parse(`${d.expires}T00:00:00Z`) / 1000) : null };
        try { const k = await api('PATCH', `${A}/keys/${encodeURIComponent(r.id)}`, body); toast(`Key ${k.name} saved`); await load(); showLimits(k); }
        catch (err) { showError(ef, err); }
      });
      limits.replaceChildren(h('h2', {}, `Key ${r.name}`), canWrite() ? ef : null, h('h2', {}, 'Limits and quotas'),
        h('dl', { class: 'details' }, h('dt', {}, 'Requests'), h('dd', {}, rate(l.requests)), h('dt', {}, 'Tokens'), h('dd', {}, rate(l.tokens)),
          ...l.quotas.flatMap(q => [h('dt', {}, `Quota (${q.period})`), h('dd', {}, `${fmt.usd(q.used_usd)} used` + (q.max_usd !== null ? `, ${fmt.usd(q.remaining_usd)} of ${fmt.usd(q.max_usd)} left` : '') + `; resets ${q.resets_at}`)])),
        canWrite() ? lf : null);
    } catch (e) { toast(`Limits: ${e.message}`); }
  }
  form.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(form);
    const d = Object.fromEntries(new FormData(form).entries());
    const body = { org: d.org, name: d.name.trim(), models: lines(d.models || '*') };
    if (d.expires) body.expires_at = Math.floor(Date.parse(`${d.expires}T00:00:00Z`) / 1000);
    try {
      const out = await api('POST', `${A}/keys`, body);
      shown.replaceChildren(secretBox(`Key ${out.name} (${out.id})`, out.key_secret));
      form.reset(); await load();
    } catch (err) { showError(form, err); }
  });
  orgForm.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(orgForm);
    try { await api('POST', `${A}/orgs`, { name: new FormData(orgForm).get('name') }); orgForm.reset(); await load(); }
    catch (err) { showError(orgForm, err); }
  });
  load().catch(e => toast(e.message));
  return () => {};
}

// ---------------------------------------------------------------- providers and routes

export function providers(page) {
  const plist = h('div'); const rlist = h('div');
  const pform = h('form', { class: 'row', id: 'provider-create' },
    h('label', {}, 'Name', h('input', { name: 'name', 'data-param': 'name', required: true })),
    h('label', {}, 'Base URL', h('input', { name: 'base_url', 'data-param': 'base_url', required: true, size: 30, placeholder: 'https://api.openai.com/v1' })),
    h('label', {}, 'API key', h('input', { name: 'api_key', type: 'password', 'data-param': 'api_keys', autocomplete: 'off' })),
    h('label', {}, 'Prices: model:prompt:completion per Mtok (one per line)', h('textarea', { name: 'models', rows: 2, cols: 30, 'data-param': 'models' })),
    h('button', { type: 'submit', class: 'primary' }, 'Add provider'));
  const rform = h('form', { class: 'row', id: 'route-create' },
    h('label', {}, 'Model name', h('input', { name: 'name', 'data-param': 'name', required: true })),
    h('label', {}, 'Strategy', h('select', { name: 'strategy', 'data-param': 'strategy' }, ['priority', 'weighted', 'round_robin', 'least_latency', 'cheapest', 'least_busy'].map(v => h('option', { value: v }, v)))),
    h('label', {}, 'Targets: provider[:model] or nodes:MODEL (one per line)', h('textarea', { name: 'targets', rows: 2, cols: 30, 'data-param': 'targets', required: true })),
    h('label', {}, 'Max attempts', h('input', { name: 'max_attempts', type: 'number', 'data-param': 'retry.max_attempts', size: 4 })),
    h('label', {}, 'Fail over on (comma)', h('input', { name: 'failover_on', 'data-param': 'failover_on', placeholder: 'connect, 5xx, 429, timeout' })),
    h('label', {}, 'Cache', h('select', { name: 'cache', 'data-param': 'cache' }, ['off', 'deterministic', 'always'].map(v => h('option', { value: v }, v)))),
    h('button', { type: 'submit', class: 'primary' }, 'Add route'));
  page.append(h('h1', {}, 'Providers'), canWrite() ? pform : null, plist, h('h1', {}, 'Routes'), canWrite() ? rform : null, rlist);
  async function load() {
    const [p, r, t] = await Promise.all([api('GET', `${A}/providers?limit=1000`), api('GET', `${A}/routes?limit=1000`), api('GET', `${A}/targets?limit=1000`)]);
    const health = Object.fromEntries(t.data.map(x => [x.name, x]));
    const names = Object.fromEntries(p.data.map(x => [x.id, x.name]));
    plist.replaceChildren(table([
      { label: 'Name', key: 'name' }, { label: 'Base URL', key: 'base_url' },
      { label: 'Keys', render: r => r.api_keys.length ? r.api_keys.join(' ') : 'none' },
      { label: 'Prices (USD / Mtok)', render: r => r.models.map(m => `${m.name} ${m.prompt_per_mtok ?? '?'}/${m.completion_per_mtok ?? '?'}`).join('; ') || '—' },
      { label: 'Circuit', render: r => health[r.name] ? badge(health[r.name].state) : h('span', { class: 'muted' }, 'no traffic') },
      { label: 'TTFB', num: true, render: r => health[r.name] ? fmt.ms(health[r.name].ewma_ttfb_ms) : '—' },
      { label: 'Errors', num: true, render: r => health[r.name] ? fmt.pct(health[r.name].error_rate) : '—' },
      { label: 'In flight', num: true, render: r => health[r.name] ? health[r.name].in_flight : '—' },
      { label: '', render: r => canWrite() ? h('span', { class: 'row' },
        h('input', { 'aria-label': `New key for ${r.name}`, type: 'password', placeholder: 'add a key', size: 12, 'data-addkey': r.name }),
        h('button', { type: 'button', onclick: e => addKey(r, e.target.previousSibling) }, 'Add key'),
        r.api_keys.length ? h('button', { type: 'button', onclick: () => patchProvider(r, { api_keys: null }, 'keys removed') }, 'Remove keys') : null,
        h('button', { type: 'button', class: 'danger', onclick: () => del('providers', r) }, 'Delete')) : null },
    ], p.data, { name: 'providers' }));
    rlist.replaceChildren(table([
      { label: 'Model', key: 'name' }, { label: 'Strategy', key: 'strategy' },
      { label: 'Targets', render: r => r.targets.map(t => t.nodes ? `nodes:${t.nodes}` : (names[t.upstream || t.provider] || t.upstream || t.provider) + (t.model ? `:${t.model}` : '') + (t.weight ? ` ×${t.weight}` : '')).join(' → ') },
      { label: 'Retries', render: r => Object.entries(r.retry || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(', ') || 'default' },
      { label: 'Fail over on', render: r => (r.failover_on || []).join(', ') || 'default' },
      { label: 'Cache', render: r => r.cache ? (r.cache.mode || 'off') : 'off' },
      { label: '', render: r => canWrite() ? h('button', { type: 'button', class: 'danger', onclick: () => del('routes', r) }, 'Delete') : null },
    ], r.data, { name: 'routes' }));
  }
  async function patchProvider(r, body, what) {
    try { await api('PATCH', `${A}/providers/${encodeURIComponent(r.id)}`, body); toast(`${r.name}: ${what}`); await load(); }
    catch (e) { toast(`${r.name}: ${e.message}`); }
  }
  async function addKey(r, input) {
    const k = input.value.trim(); if (!k) return;
    // Keys are write-only: the list replaces the stored one, so it is sent whole;
    // the stored ones cannot be read back, so adding keeps none of them.
    if (r.api_keys.length && !window.confirm(`Replace ${r.name}'s ${r.api_keys.length} stored key(s)? Stored keys cannot be read back to keep them.`)) return;
    await patchProvider(r, { api_keys: [k] }, 'key set');
  }
  async function del(kind, r) {
    if (!window.confirm(`Delete ${r.name}?`)) return;
    try { await api('DELETE', `${A}/${kind}/${encodeURIComponent(r.id)}`); await load(); } catch (e) { toast(e.message); }
  }
  pform.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(pform);
    const d = Object.fromEntries(new FormData(pform).entries());
    const models = lines(d.models || '').map(l => { const [name, p, c] = l.split(':'); return { name, prompt_per_mtok: num(p), completion_per_mtok: num(c) }; });
    try { await api('POST', `${A}/providers`, { name: d.name.trim(), base_url: d.base_url.trim(), api_keys: d.api_key ? [d.api_key] : [], models }); pform.reset(); await load(); }
    catch (err) { showError(pform, err); }
  });
  rform.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(rform);
    const d = Object.fromEntries(new FormData(rform).entries());
    const targets = lines(d.targets).map(t => {
      const [a, b] = t.split(':');
      return a === 'nodes' ? { nodes: b } : (b ? { provider: a, model: b } : { provider: a });
    });
    const body = { name: d.name.trim(), strategy: d.strategy, targets, cache: { mode: d.cache } };
    if (d.max_attempts) body.retry = { max_attempts: Number(d.max_attempts) };
    if (d.failover_on) body.failover_on = lines(d.failover_on);
    try { await api('POST', `${A}/routes`, body); rform.reset(); await load(); }
    catch (err) { showError(rform, err); }
  });
  load().catch(e => toast(e.message));
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- nodes

export function nodes(page) {
  const shown = h('div', { id: 'enroll-secret' });
  const nlist = h('div'); const tlist = h('div');
  const tform = h('form', { class: 'row', id: 'enroll-create' },
    h('label', {}, 'Org', h('select', { name: 'org', 'data-param': 'org', required: true })),
    h('label', {}, 'Name (optional)', h('input', { name: 'name', 'data-param': 'name' })),
    h('label', {}, 'Valid for (hours)', h('input', { name: 'hours', type: 'number', min: 1, value: 24, 'data-param': 'expires_in_s', size: 4 })),
    h('label', {}, 'Uses', h('input', { name: 'uses', type: 'number', min: 1, value: 1, 'data-param': 'max_uses', size: 4 })),
    h('button', { type: 'submit', class: 'primary' }, 'Create enrollment token'));
  page.append(h('h1', {}, 'Nodes'), nlist, h('h2', {}, 'Enrollment tokens'), canWrite() ? tform : null, shown, tlist);
  async function load() {
    const [n, t] = await Promise.all([api('GET', `${A}/nodes?limit=1000`), api('GET', `${A}/enrollment-tokens?limit=1000`)]);
    nlist.replaceChildren(table([
      { label: 'Name', key: 'name' }, { label: 'Org', key: 'org' },
      { label: 'Status', render: r => h('span', { 'data-node-status': r.name }, badge(r.enabled ? r.status : 'disabled', r.enabled ? r.status : 'disabled')) },
      { label: 'Routable', render: r => r.routable ? 'yes' : 'no' },
      { label: 'Models', render: r => (r.models || []).map(m => m.name || m.id || JSON.stringify(m)).join(', ') },
      { label: 'Capacity', num: true, key: 'capacity' }, { label: 'In flight', num: true, key: 'in_flight' },
      { label: 'Load', num: true, render: r => r.load === null || r.load === undefined ? '—' : Number(r.load).toFixed(2) },
      { label: 'Reach', key: 'reach' }, { label: 'Mode', key: 'mode' }, { label: 'Shared', render: r => r.shared ? 'yes' : 'no' },
      { label: 'Last heartbeat', render: r => fmt.time(r.last_heartbeat_ms) },
      { label: 'Note', render: r => r.disabled_reason || r.message || '' },
      { label: '', render: r => canWrite() ? h('span', { class: 'row' },
        h('input', { 'aria-label': `Reason for ${r.name}`, placeholder: 'reason', size: 10, 'data-reason': r.name }),
        h('button', { type: 'button', 'data-action': r.enabled ? 'disable' : 'enable', onclick: e => update(r, { enabled: !r.enabled }, e.target) }, r.enabled ? 'Disable' : 'Enable'),
        h('button', { type: 'button', onclick: e => update(r, { shared: !r.shared }, e.target) }, r.shared ? 'Unshare' : 'Share'),
        h('button', { type: 'button', class: 'danger', onclick: () => remove(r) }, 'Remove')) : null },
    ], n.data, { name: 'nodes', empty: 'No nodes enrolled. Create an enrollment token below and run the command it shows on your machine.' }));
    tlist.replaceChildren(table([
      { label: 'Id', key: 'id' }, { label: 'Name', key: 'name' }, { label: 'Org', key: 'org' }, { label: 'Uses', render: r => `${r.uses} / ${r.max_uses}` },
      { label: 'Expires', render: r => fmt.secs(r.expires_at) }, { label: 'State', render: r => r.revoked_at ? badge('revoked', 'disabled') : badge('active', 'ok') },
      { label: '', render: r => canWrite() && !r.revoked_at ? h('button', { type: 'button', class: 'danger', onclick: () => revokeToken(r) }, 'Revoke') : null },
    ], t.data, { name: 'enrollment-tokens', empty: 'No enrollment tokens.' }));
  }
  async function update(r, body, button) {
    const reason = button.parentElement.querySelector('input')?.value.trim();
    if (reason) body.reason = reason;
    try { await api('PATCH', `${A}/nodes/${encodeURIComponent(r.id)}`, body); toast(`Node ${r.name} updated`); await load(); } catch (e) { toast(e.message); }
  }
  async function remove(r) {
    if (!window.confirm(`Remove node ${r.name}? Its agent must enroll again.`)) return;
    try { await api('DELETE', `${A}/nodes/${encodeURIComponent(r.id)}`); await load(); } catch (e) { toast(e.message); }
  }
  async function revokeToken(r) {
    try { await api('POST', `${A}/enrollment-tokens/${encodeURIComponent(r.id)}/revoke`); await load(); } catch (e) { toast(e.message); }
  }
  tform.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(tform);
    const d = Object.fromEntries(new FormData(tform).entries());
    const body = { org: d.org, expires_in_s: Math.round(Number(d.hours || 24) * 3600), max_uses: Number(d.uses || 1) };
    if (d.name) body.name = d.name;
    try {
      const out = await api('POST', `${A}/enrollment-tokens`, body);
      const cmd = `switchboard node --admin ${location.origin} --enroll ${out.secret} --local http://127.0.0.1:8000 --connect ${session.gateway || 'GATEWAY_URL'}`;
      shown.replaceChildren(secretBox(`Enrollment token ${out.id}`, out.secret,
        h('div', {}, h('div', { class: 'muted' }, 'On the machine to enroll (set --local to your llama.cpp / vLLM / Ollama server, --connect to the gateway, or --listen for direct mode):'), h('pre', { id: 'enroll-command' }, cmd))));
      await load();
    } catch (err) { showError(tform, err); }
  });
  api('GET', `${A}/orgs?limit=1000`).then(o => tform.querySelector('select[name=org]').replaceChildren(...o.data.map(x => h('option', { value: x.name }, x.name)))).catch(() => {});
  load().catch(e => toast(e.message));
  const timer = setInterval(() => load().catch(() => {}), 3000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- audit

export function audit(page) {
  const f = h('form', { class: 'row', id: 'audit-filters' },
    h('label', {}, 'Resource', h('select', { name: 'resource', 'data-param': 'resource' }, ['', 'key', 'org', 'provider', 'route', 'token', 'node', 'enrollment_token', 'limits'].map(v => h('option', { value: v }, v || 'any')))),
    h('label', {}, 'Resource id', h('input', { name: 'resource_id', 'data-param': 'resource_id' })),
    h('label', {}, 'Actor (token id or seed)', h('input', { name: 'actor', 'data-param': 'actor' })),
    h('label', {}, 'Since (date)', h('input', { name: 'since', type: 'date', 'data-param': 'since' })),
    h('button', { type: 'submit', class: 'primary' }, 'Apply'));
  const list = h('div'); const more = h('button', { type: 'button', hidden: true }, 'More');
  page.append(h('h1', {}, 'Audit log'), f, list, more);
  let offset = 0; let rows = [];
  async function load(append) {
    clearErrors(f);
    const d = Object.fromEntries(new FormData(f).entries());
    const since = d.since ? Date.parse(`${d.since}T00:00:00Z`) : undefined;
    try {
      const out = await api('GET', `${A}/audit${qs({ resource: d.resource, resource_id: d.resource_id, actor: d.actor, since, order: 'desc', limit: 200, offset: append ? offset : 0 })}`);
      rows = append ? rows.concat(out.data) : out.data;
      offset = out.next_offset ?? offset;
      more.hidden = out.next_offset === null;
      list.replaceChildren(table([
        { label: 'When', render: r => fmt.time(r.at) }, { label: 'Actor', key: 'actor' }, { label: 'Action', key: 'action' },
        { label: 'Resource', key: 'resource' }, { label: 'Id', key: 'resource_id' },
        { label: 'Change', render: r => h('code', {}, JSON.stringify(r.change).slice(0, 300)) },
      ], rows, { name: 'audit', empty: 'No entries match.' }));
    } catch (e) { showError(f, e); }
  }
  f.addEventListener('submit', e => { e.preventDefault(); load(false); });
  more.addEventListener('click', () => load(true));
  load(false);
  return () => {};
}

// ---------------------------------------------------------------- playground

export function playground(page) {
  const f = h('form', { id: 'pg-form' },
    h('div', { class: 'row' },
      h('label', {}, 'Model (route)', h('select', { name: 'model', id: 'pg-model', 'data-param': 'model', required: true })),
      canWrite() ? h('label', {}, 'Org (a key is minted for this session)', h('select', { name: 'org', id: 'pg-org', 'data-param': 'org' })) : null,
      h('label', {}, canWrite() ? 'or a client key you hold' : 'Client key (sk-…)', h('input', { name: 'api_key', id: 'pg-key', type: 'password', autocomplete: 'off', 'data-param': 'api_key', required: !canWrite() })),
      h('label', {}, 'Max tokens', h('input', { name: 'max_tokens', type: 'number', min: 1, size: 5, 'data-param': 'max_tokens' }))),
    h('label', { style: null }, 'System', h('textarea', { name: 'system', rows: 2, cols: 80 })),
    h('label', {}, 'Message', h('textarea', { name: 'message', id: 'pg-message', rows: 4, cols: 80, required: true, 'data-param': 'messages' })),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary', id: 'pg-send' }, 'Send'), h('span', { class: 'muted', id: 'pg-state' })));
  const out = h('pre', { id: 'pg-output', 'aria-live': 'polite' });
  const stats = h('div', { id: 'pg-stats' });
  page.append(h('h1', {}, 'Playground'), h('p', { class: 'muted' }, 'The chat goes through the data plane like any client request: same routing, limits, accounting and request log.'), f, out, stats);
  Promise.all([api('GET', `${A}/routes?limit=1000`), canWrite() ? api('GET', `${A}/orgs?limit=1000`) : Promise.resolve({ data: [] })]).then(([r, o]) => {
    f.querySelector('#pg-model').replaceChildren(...r.data.map(x => h('option', { value: x.name }, x.name)));
    const os = f.querySelector('#pg-org'); if (os) os.replaceChildren(...o.data.map(x => h('option', { value: x.name }, x.name)));
  }).catch(e => toast(e.message));
  let controller = null;
  f.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(f);
    const d = Object.fromEntries(new FormData(f).entries());
    const messages = [];
    if (d.system && d.system.trim()) messages.push({ role: 'system', content: d.system });
    messages.push({ role: 'user', content: d.message });
    const body = { model: d.model, messages };
    if (d.api_key) body.api_key = d.api_key; else body.org = d.org;
    if (d.max_tokens) body.max_tokens = Number(d.max_tokens);
    out.textContent = ''; stats.replaceChildren();
    const state = f.querySelector('#pg-state');
    state.textContent = 'Sending…';
    controller = new AbortController();
    const t0 = performance.now(); let tFirst = null; let usage = null; let chunks = 0;
    try {
      const r = await fetch(`${A}/console/playground/chat`, {
        method: 'POST', credentials: 'same-origin', signal: controller.signal,
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf || '' }, body: JSON.stringify(body),
      });
      if (!r.ok || !(r.headers.get('content-type') || '').includes('event-stream')) {
        let data = null; try { data = await r.json(); } catch { /* not JSON */ }
        throw new ApiError(r.status, data);
      }
      const target = r.headers.get('x-switchboard-target'); const attempts = r.headers.get('x-switchboard-attempts');
      const requestId = r.headers.get('x-request-id');
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = '';
      state.textContent = 'Streaming…';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1);
          if (!line.startsWith('data:')) continue;
          const payload = line.slice(5).trim();
          if (payload === '[DONE]') continue;
          let ev; try { ev = JSON.parse(payload); } catch { continue; }
          if (ev.error) throw new ApiError(502, ev);
          const delta = ev.choices && ev.choices[0] && ev.choices[0].delta && ev.choices[0].delta.content;
          if (delta) { if (tFirst === null) tFirst = performance.now(); out.append(document.createTextNode(delta)); chunks++; out.dataset.chunks = String(chunks); }
          if (ev.usage) usage = ev.usage;
        }
      }
      const total = performance.now() - t0;
      state.textContent = 'Done';
      const dl = h('dl', { class: 'details' },
        h('dt', {}, 'Target'), h('dd', { 'data-stat': 'target' }, target || '—'), h('dt', {}, 'Attempts'), h('dd', { 'data-stat': 'attempts' }, attempts || '—'),
        h('dt', {}, 'Request id'), h('dd', { 'data-stat': 'request_id' }, requestId || '—'),
        h('dt', {}, 'Latency (browser)'), h('dd', {}, fmt.ms(total)), h('dt', {}, 'TTFT (browser)'), h('dd', {}, tFirst === null ? '—' : fmt.ms(tFirst - t0)),
        h('dt', {}, 'Tokens'), h('dd', { 'data-stat': 'tokens' }, usage ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens}` : '—'));
      stats.replaceChildren(dl);
      // The accounted record: cost, gateway latency and TTFT as the request log has them.
      if (requestId) {
        for (let k = 0; k < 20; k++) {
          const rec = await api('GET', `${A}/requests${qs({ request_id: requestId, limit: 1 })}`);
          if (rec.data.length) {
            const x = rec.data[0];
            dl.append(h('dt', {}, 'Cost'), h('dd', { 'data-stat': 'cost' }, fmt.usd(x.cost_usd)), h('dt', {}, 'Latency (gateway)'), h('dd', { 'data-stat': 'latency' }, fmt.ms(x.latency_ms)),
              h('dt', {}, 'TTFT (gateway)'), h('dd', { 'data-stat': 'ttft' }, fmt.ms(x.ttft_ms)), h('dt', {}, 'Status'), h('dd', {}, `${x.status} ${x.outcome}`));
            break;
          }
          await new Promise(res => setTimeout(res, 250));
        }
      }
    } catch (err) {
      state.textContent = 'Failed';
      showError(f, err);
    }
  });
  return () => { if (controller) controller.abort(); };
}
