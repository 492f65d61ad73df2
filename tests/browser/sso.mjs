// Single sign-on in a real browser (Debian's Chromium driven by playwright-core), run by
// scripts/browser-tests.sh against a live API and worker and tests/oidc/provider.mjs, a real
// OpenID provider whose own login and logout pages the browser goes through:
//
//   ada (group statement-admin) signs in → admin, and the audit trail records it → she signs out,
//   at the provider too → the sign-in page stays put (no silent sign-in any more);
//   val (statement-viewer) signs in at the provider's login page again → viewer: no key form, no
//   key or job buttons → signs out;
//   mal (only finance) signs in at the provider → 403: the account has no role here.
//
// The provider (127.0.0.1) and the dashboard (BASE_URL, 127.0.0.2 in the script) are different
// sites, as in production: the provider's redirects back are cross-site navigations, which do not
// carry the SameSite=Strict session cookie (hosts that differ only by port are the same site).
//
// Like dashboard.mjs, every page is screenshotted into ARTIFACTS_DIR (sso-NN-*.png), and the run
// fails on any console error, page error, failed request or 4xx/5xx answer from the service or the
// provider. The provider's pages import a web font from the internet: those requests (and any other
// to a third server) are answered empty here, and one from a dashboard page is a failure.
//
// Environment: BASE_URL (the dashboard, http://HOST:PORT), OIDC_ISSUER_URL, OIDC_PROVIDER_NAME,
// ACCOUNTS_JSON (the provider's accounts: ada, val and mal), FAILED_EXPORT (the reference of an
// export whose job failed, so the queue page has a job with buttons), ARTIFACTS_DIR (default
// <repo>/target/browser-artifacts), CHROMIUM (default /usr/bin/chromium).
// Exit status 0 when every check passed, 1 with the reason otherwise.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CheckFailed, Watch, check, checkStyled, escapeRegExp, log, pathOf, runInChromium, screenshots, visitor,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE_URL = (process.env.BASE_URL || '').replace(/\/+$/, '');
const ISSUER = (process.env.OIDC_ISSUER_URL || '').replace(/\/+$/, '');
const PROVIDER_NAME = process.env.OIDC_PROVIDER_NAME || '';
const ACCOUNTS = JSON.parse(process.env.ACCOUNTS_JSON || '{}');
const FAILED_EXPORT = process.env.FAILED_EXPORT || '';
const ARTIFACTS_DIR = path.resolve(process.env.ARTIFACTS_DIR || path.join(here, '..', '..', 'target', 'browser-artifacts'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** The whole run is abandoned after this long (a hung browser must not hang CI). */
const RUN_TIMEOUT_MS = 120_000;

const SIGN_IN = '/dashboard/sign-in';
const CALLBACK = '/dashboard/sign-in/callback';
/** The dashboard role each test account's groups give it. */
const ROLES = { ada: 'admin', val: 'viewer' };

/** Both servers' 4xx/5xx answers are failures, except the refusals provoked below. */
const watch = new Watch([BASE_URL, ISSUER]);
const screenshot = screenshots(ARTIFACTS_DIR, 'sso-');
const visit = visitor(BASE_URL);

/** How an account is shown on the dashboard: `Name <email>`. */
function label(login) {
  const { name, email } = ACCOUNTS[login];
  return `${name} <${email}>`;
}

function origin(url) {
  return new URL(url).origin;
}

/** The page's URL without its query (codes and states are noise in a report). */
function bare(url) {
  const parsed = new URL(url);
  return parsed.origin + parsed.pathname;
}

/**
 * Records the page's main-frame navigations from now on (status and URL, redirects included),
 * for a failure report that says where the browser went.
 */
function trail(page) {
  const steps = [];
  const onResponse = (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
      steps.push(`${response.status()} ${request.method()} ${bare(response.url())}`);
    }
  };
  page.on('response', onResponse);
  return {
    steps,
    stop: () => page.off('response', onResponse),
    toString: () => steps.join(' → '),
  };
}

/** The context's cookies for the dashboard, as `name (SameSite)` (values are secrets). */
async function cookieReport(page) {
  const cookies = await page.context().cookies(BASE_URL);
  return cookies.map((c) => `${c.name}${c.value ? '' : ' (empty)'} (SameSite=${c.sameSite})`).join(', ') || 'none';
}

/** Whether the browser holds a non-empty cookie of that name for the dashboard. */
async function holds(page, name) {
  const cookies = await page.context().cookies(BASE_URL);
  return cookies.some((c) => c.name === name && c.value !== '');
}

/** On the sign-in page: the single sign-on link, and the key form (break-glass is on here). */
async function checkSignInPage(page) {
  check(pathOf(page) === SIGN_IN, `expected the sign-in page, at ${pathOf(page)}`);
  await checkStyled(page);
  const sso = page.locator('a#sso');
  check(await sso.count() === 1, 'the sign-in page has no #sso link');
  const text = (await sso.textContent()).trim();
  check(text === `Sign in with ${PROVIDER_NAME}`, `the #sso link says "${text}", expected "Sign in with ${PROVIDER_NAME}"`);
  check(await page.locator('#api_key').isVisible(), 'the sign-in page has no key form (DASHBOARD_ADMIN_KEY_SIGN_IN=true)');
}

/**
 * From the sign-in page, through the provider's login page as `login` (any password), back to the
 * service; returns the navigation trail. The provider must ask: no session of its own is left.
 */
async function signInAtProvider(page, login) {
  const steps = trail(page);
  await page.locator('a#sso').click();
  await page.waitForURL((url) => url.origin === ISSUER);
  await page.waitForLoadState('load');
  const form = page.locator('form', { has: page.locator('input[name="login"]') });
  check(await form.count() === 1, `no login form at the provider for ${login} (${bare(page.url())}): ${steps}`);
  await screenshot(page, `provider-login-${login}`);
  await form.locator('input[name="login"]').fill(login);
  await form.locator('input[name="password"]').fill('any password');
  await form.locator('button[type="submit"]').click();
  await page.waitForURL((url) => url.origin === BASE_URL);
  await page.waitForLoadState('load');
  return steps;
}

/**
 * After the provider sent the browser back: the callback's page moves on to /dashboard by itself
 * (meta refresh), where the new session cookie (SameSite=Strict) must go along.
 */
async function arriveSignedIn(page, login, steps) {
  await page.waitForURL((url) => url.origin === BASE_URL && url.pathname !== CALLBACK);
  await page.waitForLoadState('load');
  steps.stop();
  check(steps.steps.some((s) => s === `200 GET ${BASE_URL}${CALLBACK}`), `the callback did not answer 200: ${steps}`);
  if (pathOf(page) !== '/dashboard') {
    throw new CheckFailed(`${login} signed in at the provider, but Chromium did not reach /dashboard signed in `
      + `(at ${pathOf(page)}): ${steps}; cookies for the dashboard: ${await cookieReport(page)}`);
  }
  check(await page.locator('h1', { hasText: 'Overview' }).isVisible(), `${login}: no Overview heading`);
  await checkStyled(page);
  const who = (await page.locator('header #who').textContent()).trim();
  check(who === label(login), `${login}: #who shows "${who}", expected "${label(login)}"`);
  const role = (await page.locator('header #session-role').textContent()).trim();
  check(role === ROLES[login], `${login}: #session-role shows "${role}", expected "${ROLES[login]}"`);
  check(await page.locator('header .who .bad').count() === 0, `${login}: a person's session is marked break-glass`);
  check(await holds(page, 'stmt_sso'), `${login}: no stmt_sso hint cookie after a single sign-on`);
  log(`${login} signed in as ${role}: ${steps}`);
}

/**
 * The header's Sign out → the provider's logout confirmation (a form) → confirmed → back on the
 * sign-in page, which stays: the hint cookie is gone, so it does not start a silent sign-in.
 */
async function signOut(page, login) {
  const steps = trail(page);
  let silent = 0;
  const onRequest = (request) => {
    if (request.url().startsWith(`${BASE_URL}/dashboard/sign-in/sso`)) silent += 1;
  };
  await page.getByRole('button', { name: 'Sign out' }).click();
  try {
    await page.waitForURL((url) => url.origin === ISSUER);
  } catch {
    throw new CheckFailed(`${login}: Sign out did not reach the provider's logout page (still at ${bare(page.url())}; `
      + `navigations: ${steps.steps.length ? steps : 'none'}; cookies for the dashboard: ${await cookieReport(page)}); `
      + 'the browser errors below say why');
  }
  await page.waitForLoadState('load');
  const confirm = page.getByRole('button', { name: 'Yes, sign me out' });
  check(await confirm.count() === 1, `${login}: the provider's logout page has no "Yes, sign me out" button: ${steps}`);
  await screenshot(page, `provider-logout-${login}`);
  page.on('request', onRequest);
  await confirm.click();
  await page.waitForURL(`${BASE_URL}${SIGN_IN}`);
  await page.waitForLoadState('load');
  steps.stop();
  await checkSignInPage(page);
  check(!(await holds(page, 'stmt_session')), `${login}: the session cookie survived sign-out`);
  check(!(await holds(page, 'stmt_sso')), `${login}: the stmt_sso hint cookie survived sign-out`);
  // Typed in again (a same-site navigation, which would carry a Strict hint cookie): it stays too.
  await page.goto(BASE_URL + SIGN_IN);
  await checkSignInPage(page);
  page.off('request', onRequest);
  check(silent === 0, `${login}: the sign-in page started a silent sign-in after sign-out`);
  await page.goto(`${BASE_URL}/dashboard`);
  check(pathOf(page) === SIGN_IN, `${login}: /dashboard after sign-out is at ${pathOf(page)}, expected ${SIGN_IN}`);
  log(`${login} signed out at the dashboard and the provider: ${steps}`);
}

/** The key list and job table: whether the admin's and operator's buttons are there. */
async function buttons(page, names) {
  let count = 0;
  for (const name of names) count += await page.getByRole('button', { name, exact: true }).count();
  return count;
}

/** The failed job's row on the queue page. */
function failedJobRow(page) {
  return page.locator('tbody tr').filter({ has: page.locator(`a[href="/dashboard/exports/${FAILED_EXPORT}"]`) });
}

async function run(page) {
  // Nothing here loads from a third server; the provider's pages try to (a web font).
  await page.context().route((url) => url.origin !== BASE_URL && url.origin !== ISSUER, async (route) => {
    const from = route.request().frame().url();
    if (from.startsWith(BASE_URL)) watch.problems.push(`a dashboard page loads ${route.request().url()}`);
    await route.fulfill({ status: 204 });
  });

  // 1. Without a session, the dashboard sends us to the sign-in page: single sign-on and the key form.
  await page.goto(`${BASE_URL}/dashboard`);
  await page.waitForLoadState('load');
  await checkSignInPage(page);
  await screenshot(page, 'sign-in');

  // 2. ada, through the provider's login page, back as admin.
  let steps = await signInAtProvider(page, 'ada');
  await arriveSignedIn(page, 'ada', steps);
  await screenshot(page, 'overview-ada');

  // 3. The audit trail: her sign-in, newest first.
  await visit(page, '/dashboard/audit');
  const signIns = page.locator('#audit tbody tr').filter({ has: page.locator('td.mono', { hasText: /^sign_in$/ }) });
  check(await signIns.count() >= 1, 'the audit page lists no sign_in');
  const cells = (await signIns.first().locator('td').allTextContents()).map((c) => c.trim());
  // #, Time, Actor, Action, Target, Outcome, Client, Details
  check(cells[2].startsWith(label('ada')), `the newest sign_in's actor is "${cells[2]}", expected ${label('ada')}`);
  check(cells[5] === 'success', `the newest sign_in's outcome is "${cells[5]}", expected success`);
  check(cells[7].includes('"method":"sso"'), `the newest sign_in's details are ${cells[7]}, expected method sso`);
  await screenshot(page, 'audit-ada');

  // What an admin has and a viewer must not: the key form and buttons, the job buttons.
  await visit(page, '/admin/api-keys');
  check(await page.locator('h2', { hasText: 'Create a key' }).count() === 1, 'ada (admin): no "Create a key" form');
  check(await buttons(page, ['Deactivate', 'Reactivate', 'Delete']) > 0, 'ada (admin): no key buttons');
  await visit(page, '/dashboard/queue');
  check(await failedJobRow(page).count() === 1, `ada: the queue page does not list the failed export ${FAILED_EXPORT}`);
  check(await failedJobRow(page).getByRole('button', { name: 'Retry now' }).count() === 1,
    'ada (admin): the failed job has no "Retry now" button');
  await screenshot(page, 'queue-ada');

  // 4. Sign out, at the provider too; the sign-in page stays.
  await signOut(page, 'ada');
  await screenshot(page, 'signed-out-ada');

  // 5. val: the provider asks again; a viewer reads, and is offered nothing to change.
  steps = await signInAtProvider(page, 'val');
  await arriveSignedIn(page, 'val', steps);
  await visit(page, '/admin/api-keys');
  check(await page.locator('tbody tr').filter({ hasText: 'browser-tests' }).count() === 1, 'val: the key list does not show the keys');
  check(await page.locator('h2', { hasText: 'Create a key' }).count() === 0, 'val (viewer): /admin/api-keys shows "Create a key"');
  check(await page.locator('form[action="/admin/api-keys"]').count() === 0, 'val (viewer): /admin/api-keys has the key form');
  check(await buttons(page, ['Deactivate', 'Reactivate', 'Delete']) === 0, 'val (viewer): /admin/api-keys shows key buttons');
  await screenshot(page, 'api-keys-val');
  await visit(page, '/dashboard/queue');
  check(await failedJobRow(page).count() === 1, `val: the queue page does not list the failed export ${FAILED_EXPORT}`);
  check(await buttons(page, ['Retry now', 'Cancel']) === 0, 'val (viewer): the queue page shows Retry or Cancel buttons');
  await screenshot(page, 'queue-val');
  await signOut(page, 'val');

  // 6. mal: the provider signs mal in, but no group of mal's is a dashboard role: 403.
  watch.provoke('GET', new RegExp(`^${escapeRegExp(BASE_URL + CALLBACK)}\\?`), 403);
  steps = await signInAtProvider(page, 'mal');
  steps.stop();
  check(pathOf(page).startsWith(`${CALLBACK}?`), `mal: at ${pathOf(page)}, expected the callback's 403 page: ${steps}`);
  check(steps.steps.at(-1) === `403 GET ${BASE_URL}${CALLBACK}`, `mal: the callback did not answer 403: ${steps}`);
  check(await page.locator('h1', { hasText: 'Forbidden' }).isVisible(), 'mal: the 403 page has no Forbidden heading');
  const text = await page.locator('main').textContent();
  check(text.includes('Your account has no role on this dashboard'), `mal: the 403 page says ${JSON.stringify(text.trim())}`);
  check(!(await holds(page, 'stmt_session')) && !(await holds(page, 'stmt_sso')), 'mal: a refused sign-in left a session or hint cookie');
  await screenshot(page, 'no-role-mal');
  log(`mal refused (403, no role): ${steps}`);
}

async function main() {
  const missing = ['BASE_URL', 'OIDC_ISSUER_URL', 'OIDC_PROVIDER_NAME', 'ACCOUNTS_JSON', 'FAILED_EXPORT']
    .filter((name) => !process.env[name]);
  if (missing.length > 0) {
    console.error(`[browser] ${missing.join(', ')} must be set (scripts/browser-tests.sh sets them)`);
    return 2;
  }
  for (const login of ['ada', 'val', 'mal']) {
    if (!ACCOUNTS[login]) {
      console.error(`[browser] ACCOUNTS_JSON has no account ${login}`);
      return 2;
    }
  }
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  return runInChromium({
    executablePath: CHROMIUM,
    target: `${BASE_URL} (single sign-on at ${ISSUER})`,
    artifactsDir: ARTIFACTS_DIR,
    failureShot: path.join(ARTIFACTS_DIR, 'sso-failure.png'),
    timeoutMs: RUN_TIMEOUT_MS,
    watch,
    test: run,
  });
}

process.exitCode = await main();
