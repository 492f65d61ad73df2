// The operator dashboard in a real browser (Debian's Chromium driven by playwright-core), run by
// scripts/browser-tests.sh against a live API and worker:
//
//   sign in with an admin key → create a client key (shown once, never again) → use it against
//   the API to request an export → watch the export reach COMPLETED on the dashboard → overview,
//   queue and health pages → a schedule created through the API on the schedules pages →
//   deactivate the key and see the API refuse it → sign out.
//
// Every page is screenshotted into ARTIFACTS_DIR, and the run fails on any console error, page
// error, failed request or 4xx/5xx answer from the service.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), ADMIN_KEY (an admin API key), ARTIFACTS_DIR
// (default <repo>/target/browser-artifacts), CHROMIUM (default /usr/bin/chromium).
// Exit status 0 when every check passed, 1 with the reason otherwise.

import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Watch, check, checkStyled, escapeRegExp, log, pathOf, runInChromium, screenshots, visitor,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE_URL = (process.env.BASE_URL || '').replace(/\/+$/, '');
const ADMIN_KEY = process.env.ADMIN_KEY || '';
const ARTIFACTS_DIR = path.resolve(process.env.ARTIFACTS_DIR || path.join(here, '..', '..', 'target', 'browser-artifacts'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** The whole run is abandoned after this long (a hung browser must not hang CI). */
const RUN_TIMEOUT_MS = 180_000;
/** How long the export may take to reach COMPLETED, and how often the page is reloaded meanwhile. */
const EXPORT_TIMEOUT_MS = 60_000;
const POLL_MS = 500;

const EXPORT_REQUEST = {
  account_id: 'ACC-1001',
  table_name: 'bank_transactions',
  date_from: '2024-01-01',
  date_to: '2024-12-31',
};

/** Everything that went wrong in the browser: only the service's own 4xx/5xx answers count. */
const watch = new Watch([BASE_URL]);
const provoke = (method, url, status) => watch.provoke(method, url, status);
const screenshot = screenshots(ARTIFACTS_DIR);
const visit = visitor(BASE_URL);

async function api(method, route, key, body) {
  const response = await fetch(BASE_URL + route, {
    method,
    headers: {
      Authorization: `Bearer ${key}`,
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: the caller checks the status and reports the text.
  }
  return { status: response.status, json, text };
}

async function run(page) {
  // 1. Without a session the dashboard sends us to the sign-in page.
  await page.goto(`${BASE_URL}/dashboard`);
  check(pathOf(page) === '/dashboard/sign-in', `/dashboard without a session: at ${pathOf(page)}, expected /dashboard/sign-in`);
  await checkStyled(page);
  check(await page.locator('#api_key').isVisible(), 'the sign-in page has no api_key field');
  await screenshot(page, 'sign-in');

  // 2. Sign in with the admin key.
  await page.fill('#api_key', ADMIN_KEY);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE_URL}/dashboard`);
  await page.waitForLoadState('load');
  check(await page.locator('h1', { hasText: 'Overview' }).isVisible(), 'after sign-in: no Overview heading');
  check((await page.locator('header .who').textContent()).includes('Signed in as'), 'after sign-in: no "Signed in as"');
  await checkStyled(page);
  await screenshot(page, 'overview-signed-in');

  // 3. Create a client key on /admin/api-keys; it is shown once.
  await visit(page, '/admin/api-keys');
  const name = `browser-test-${Date.now()}`;
  await page.fill('#name', name);
  await page.fill('#description', 'created by tests/browser/dashboard.mjs');
  await page.selectOption('select#role', 'client');
  await page.fill('#accounts', '');
  // A client key's scope is explicit: with neither accounts nor "All accounts" it is refused.
  provoke('POST', `${BASE_URL}/admin/api-keys`, 400);
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.waitForLoadState('load');
  check((await page.content()).includes('needs its scope'), 'a client key without accounts or "All accounts" was not refused');
  check(await page.locator('#new-key').count() === 0, 'a client key without a scope was created');
  await visit(page, '/admin/api-keys');
  await page.fill('#name', name);
  await page.fill('#description', 'created by tests/browser/dashboard.mjs');
  await page.selectOption('select#role', 'client');
  await page.check('#all_accounts');
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.locator('#new-key').waitFor();
  check(await page.locator('code#new-key').count() === 1, 'the new key is not in a code#new-key element');
  const key = (await page.locator('#new-key').textContent()).trim();
  check(key.startsWith('sk_'), `the new key does not start with sk_: ${key.slice(0, 3)}…`);
  check(/^sk_[0-9A-Za-z]{38}$/.test(key), 'the new key is not sk_ followed by 38 base62 characters');
  await writeFile(path.join(ARTIFACTS_DIR, '.created-key'), key, { mode: 0o600 });
  const prefix = key.slice(0, 11);
  log(`created key ${prefix}… (${name})`);
  await screenshot(page, 'api-keys-new-key-shown');

  // ...and never again: a fresh GET of the page has its prefix only.
  await visit(page, '/admin/api-keys');
  let html = await page.content();
  check(!html.includes(key), '/admin/api-keys shows the whole key again after a reload');
  check(html.includes(prefix), `/admin/api-keys does not list the new key's prefix ${prefix}`);
  check(await page.locator('#new-key').count() === 0, '/admin/api-keys still has a #new-key element after a reload');
  const row = page.locator('tbody tr').filter({
    has: page.locator('strong', { hasText: new RegExp(`^${escapeRegExp(name)}$`) }),
  });
  check(await row.count() === 1, `the key list has ${await row.count()} rows named ${name}, expected 1`);
  check((await row.textContent()).includes('active'), 'the new key is not listed as active');
  await screenshot(page, 'api-keys-list');

  // 4. The key works against the API: request an export.
  const created = await api('POST', '/api/export', key, EXPORT_REQUEST);
  check(created.status === 202 || created.status === 200, `POST /api/export with the new key: HTTP ${created.status}: ${created.text}`);
  const reference = created.json?.reference_id;
  check(typeof reference === 'string' && /^[0-9a-f-]{36}$/.test(reference), `POST /api/export answered no reference_id: ${created.text}`);
  log(`export ${reference} requested (HTTP ${created.status})`);

  // 5. Watch it reach COMPLETED on its dashboard page.
  await visit(page, `/dashboard/exports/${reference}`);
  const deadline = Date.now() + EXPORT_TIMEOUT_MS;
  let reloads = 0;
  for (;;) {
    if (await page.locator('span.status.COMPLETED').count() > 0) break;
    const shown = (await page.locator('span.status').first().textContent().catch(() => null))?.trim();
    check(!['FAILED', 'CANCELLED', 'EXPIRED'].includes(shown), `export ${reference} ended ${shown} instead of COMPLETED`);
    check(Date.now() < deadline, `export ${reference} did not reach COMPLETED within ${EXPORT_TIMEOUT_MS / 1000} s (shows ${shown})`);
    await page.waitForTimeout(POLL_MS);
    const response = await page.reload();
    check(response && response.status() === 200, `reloading the export page: HTTP ${response?.status()}`);
    reloads += 1;
  }
  log(`export COMPLETED on the dashboard after ${reloads} reloads`);
  await checkStyled(page);
  html = await page.content();
  check(html.includes(reference), 'the export page does not show its reference');
  const download = page.getByRole('link', { name: /^Download/ });
  check(await download.count() === 1, 'the completed export page has no Download link');
  const href = await download.getAttribute('href');
  check(href && href.includes('/files/') && href.includes('signature='), `the Download link is not a signed file link: ${href}`);
  const file = await fetch(new URL(href, BASE_URL));
  const csv = await file.text();
  check(file.status === 200, `the Download link answered HTTP ${file.status}`);
  check(csv.length > 0 && csv.includes('\r\n'), 'the Download link gave no CSV');
  await screenshot(page, 'export-detail');

  // 6. The overview lists it; the charts are drawn.
  await visit(page, '/dashboard');
  html = await page.content();
  check(html.includes(reference), `the overview does not list export ${reference}`);
  const charts = page.locator('svg.chart');
  check(await charts.count() === 2, `the overview has ${await charts.count()} charts, expected 2`);
  for (let i = 0; i < 2; i += 1) {
    const box = await charts.nth(i).boundingBox();
    check(box && box.width > 300 && box.height > 60, `overview chart ${i + 1} is not visible (${JSON.stringify(box)})`);
  }
  check(await page.locator('svg.chart rect.bar[height]:not([height="0.0"])').count() >= 2, 'the overview charts draw no bar for the export');
  const recent = page.locator('tbody tr').filter({ has: page.locator(`a[href="/dashboard/exports/${reference}"]`) });
  check(await recent.locator('span.status.COMPLETED').count() === 1, 'the overview does not show the export as COMPLETED');
  await screenshot(page, 'overview');

  // 7. Queue and health render.
  await visit(page, '/dashboard/queue');
  check(await page.locator('h1', { hasText: 'Queue & workers' }).isVisible(), 'the queue page has no heading');
  check(await page.locator('h2', { hasText: /^Live workers \([1-9]/ }).count() === 1, 'the queue page shows no live worker');
  await screenshot(page, 'queue');

  await visit(page, '/dashboard/health');
  for (const dependency of ['postgres', 'source', 'storage']) {
    const dependencyRow = page.locator('tbody tr').filter({
      has: page.locator('td', { hasText: new RegExp(`^${dependency}$`) }),
    });
    check(await dependencyRow.count() === 1, `the health page has no row for ${dependency}`);
    const state = (await dependencyRow.locator('td').nth(1).textContent()).trim();
    check(state === 'answering', `the health page says ${dependency} is "${state}"`);
  }
  await screenshot(page, 'health');

  // 7b. A schedule made through the API is on the schedules page and has its own page.
  const scheduleName = `browser schedule ${Date.now()}`;
  const schedule = await api('POST', '/api/schedules', key, {
    name: scheduleName, accounts: ['ACC-1001'], table_name: 'bank_transactions', frequency: 'monthly',
    day_of_month: 31, time_zone: 'Europe/Berlin', starts_on: '2096-02-10',
  });
  check(schedule.status === 201, `POST /api/schedules with the new key: HTTP ${schedule.status}: ${schedule.text}`);
  const scheduleId = schedule.json?.id;
  await visit(page, '/dashboard/schedules');
  check(await page.locator('h1', { hasText: /^Schedules$/ }).isVisible(), 'the schedules page has no heading');
  const scheduleRow = page.locator('#schedules tbody tr').filter({
    has: page.locator(`a[href="/dashboard/schedules/${scheduleId}"]`),
  });
  check(await scheduleRow.count() === 1, `the schedules page does not list schedule ${scheduleId}`);
  const rowText = await scheduleRow.textContent();
  for (const shown of [scheduleName, 'ACC-1001', 'monthly on day 31', 'Europe/Berlin', '2096-01-31 – 2096-02-28', 'active']) {
    check(rowText.includes(shown), `the schedules page's row does not show "${shown}": ${rowText}`);
  }
  await checkStyled(page);
  await screenshot(page, 'schedules');
  await scheduleRow.locator(`a[href="/dashboard/schedules/${scheduleId}"]`).click();
  await page.waitForURL(`${BASE_URL}/dashboard/schedules/${scheduleId}`);
  await page.waitForLoadState('load');
  check(await page.locator('h1', { hasText: scheduleName }).isVisible(), 'the schedule page has no heading with its name');
  check((await page.locator('#next-period').textContent()).trim() === '2096-01-31 – 2096-02-28', 'the schedule page does not show its next period');
  check(await page.locator('#runs').isVisible(), 'the schedule page has no runs table');
  await screenshot(page, 'schedule-detail');

  // None of the pages showed the key again.
  for (const target of ['/dashboard', '/dashboard/queue', '/dashboard/health', `/dashboard/exports/${reference}`, '/dashboard/schedules']) {
    await visit(page, target);
    check(!(await page.content()).includes(key), `${target} shows the created key`);
  }

  // 8. Deactivate the key from its row; the API refuses it from then on.
  await visit(page, '/admin/api-keys');
  await row.getByRole('button', { name: 'Deactivate' }).click();
  await page.waitForURL(`${BASE_URL}/admin/api-keys?notice=deactivate`);
  await page.waitForLoadState('load');
  check(await page.locator('p.notice', { hasText: 'Key deactivated' }).isVisible(), 'no "Key deactivated" notice');
  check(await row.locator('.muted', { hasText: 'deactivated' }).count() === 1, 'the key is not listed as deactivated');
  check(await row.getByRole('button', { name: 'Reactivate' }).count() === 1, 'the deactivated key has no Reactivate button');
  check(!(await page.content()).includes(key), '/admin/api-keys shows the key after deactivation');
  await screenshot(page, 'api-keys-deactivated');
  const refused = await api('POST', '/api/export', key, EXPORT_REQUEST);
  check(refused.status === 401, `POST /api/export with the deactivated key: HTTP ${refused.status}, expected 401`);
  const refusedRead = await api('GET', `/api/export/${reference}`, key);
  check(refusedRead.status === 401, `GET /api/export/{id} with the deactivated key: HTTP ${refusedRead.status}, expected 401`);
  log('the deactivated key is refused by the API (401)');

  // 9. Sign out; the dashboard asks for a sign-in again.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${BASE_URL}/dashboard/sign-in`);
  await page.waitForLoadState('load');
  await page.goto(`${BASE_URL}/dashboard`);
  check(pathOf(page) === '/dashboard/sign-in', `/dashboard after sign-out: at ${pathOf(page)}, expected /dashboard/sign-in`);
  const cookies = await page.context().cookies();
  check(!cookies.some((c) => c.name === 'stmt_session' && c.value !== ''), 'the session cookie survived sign-out');
  log('signed out');
}

async function main() {
  if (!BASE_URL || !ADMIN_KEY) {
    console.error('[browser] BASE_URL and ADMIN_KEY must be set (scripts/browser-tests.sh sets them)');
    return 2;
  }
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  await rm(path.join(ARTIFACTS_DIR, '.created-key'), { force: true });
  return runInChromium({
    executablePath: CHROMIUM,
    target: BASE_URL,
    artifactsDir: ARTIFACTS_DIR,
    failureShot: path.join(ARTIFACTS_DIR, 'failure.png'),
    timeoutMs: RUN_TIMEOUT_MS,
    watch,
    test: run,
  });
}

process.exitCode = await main();
