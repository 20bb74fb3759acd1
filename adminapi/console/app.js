// The console's shell: sign-in, navigation (#/page), sign-out.
import { api, session, ApiError } from '/console/ui.js';
import * as pages from '/console/pages.js';

const $ = id => document.getElementById(id);
let cleanup = () => {};

function showSignIn(message) {
  cleanup(); cleanup = () => {};
  session.role = session.csrf = session.tokenId = null;
  $('top').hidden = true;
  $('page').replaceChildren();
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('token').focus();
}

function route() {
  const name = (location.hash.replace(/^#\//, '') || 'overview').split('?')[0];
  const render = pages[name] || pages.overview;
  cleanup();
  const page = $('page');
  page.replaceChildren();
  page.dataset.page = pages[name] ? name : 'overview';
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${page.dataset.page}`) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  cleanup = render(page) || (() => {});
  $('main').focus({ preventScroll: true });
}

function signedIn(info) {
  session.role = info.role; session.csrf = info.csrf_token; session.tokenId = info.token_id;
  session.gateway = info.gateway_url ? info.gateway_url.replace('{host}', location.hostname) : null;
  $('signin').hidden = true;
  $('top').hidden = false;
  $('who').textContent = `${info.token_id} (${info.role === 'admin' ? 'admin' : 'read-only'})`;
  document.body.dataset.role = info.role;
  route();
}

$('signin-form').addEventListener('submit', async e => {
  e.preventDefault();
  const input = $('token');
  const token = input.value;
  input.value = '';
  try {
    signedIn(await api('POST', '/v1/admin/console/session', { token }));
  } catch (err) {
    $('signin-error').textContent = err instanceof ApiError && err.status === 401 ? 'That token is not valid (unknown or revoked).' : `Sign-in failed: ${err.message}`;
  }
});

$('signout').addEventListener('click', async () => {
  try { await api('DELETE', '/v1/admin/console/session'); } catch { /* signed out anyway */ }
  showSignIn('Signed out.');
});

window.addEventListener('hashchange', () => { if (session.role) route(); });
window.addEventListener('sb-signed-out', () => showSignIn('Your session ended; sign in again.'));

api('GET', '/v1/admin/console/session').then(signedIn, () => showSignIn(''));
