// The safety net the browser tests here run under (dashboard.mjs, sso.mjs): Debian's Chromium
// driven by playwright-core, one fresh context, a deadline for the whole run, and a failed run on
// any console error, page error, failed request or 4xx/5xx answer from the servers under test,
// except the refusals a test provokes on purpose (each must then happen, once).

import path from 'node:path';
import { chromium } from 'playwright-core';

export class CheckFailed extends Error {}

export function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

export function log(message) {
  console.log(`[browser] ${message}`);
}

export function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The page's path and query. */
export function pathOf(page) {
  const url = new URL(page.url());
  return url.pathname + url.search;
}

/** A dashboard page must be styled: the stylesheet loaded and applied. Returns the header's background. */
export async function checkStyled(page) {
  const background = await page.evaluate(() => {
    const header = document.querySelector('header') || document.body;
    return getComputedStyle(header).backgroundColor;
  });
  const sheets = await page.evaluate(() => [...document.styleSheets].map((s) => s.href));
  check(sheets.some((href) => href && href.endsWith('/dashboard/assets/dashboard.css')),
    `${pathOf(page)}: the stylesheet is not loaded (${JSON.stringify(sheets)})`);
  return background;
}

/**
 * `visit(page, target)`: GETs the dashboard page `baseUrl + target`, checks it answered 200 at that
 * very path and is styled (the header is dark).
 */
export function visitor(baseUrl) {
  return async (page, target) => {
    const response = await page.goto(baseUrl + target);
    check(response, `${target}: no response`);
    check(pathOf(page) === target, `${target}: ended up at ${pathOf(page)}`);
    check(response.status() === 200, `${target}: HTTP ${response.status()}`);
    const background = await checkStyled(page);
    check(background === 'rgb(23, 32, 46)', `${target}: the header is not styled (background ${background})`);
    return response;
  };
}

/** A provoked refusal's URL: the exact URL, or a RegExp for one not known in advance. */
function urlMatches(expected, url) {
  return expected instanceof RegExp ? expected.test(url) : expected === url;
}

/**
 * Everything that went wrong in the browser, reported (and failed on) at the end. `servers`: the
 * URL prefixes whose 4xx/5xx answers are failures (the service's, the provider's).
 */
export class Watch {
  constructor(servers) {
    this.servers = servers;
    this.problems = [];
    this.provoked = [];
  }

  /** Allows one refusal (method, URL or RegExp, status), which must then happen. */
  provoke(method, url, status) {
    this.provoked.push({ method, url, status, seen: false, consoled: false });
  }

  attach(page) {
    const { problems, provoked } = this;
    page.on('console', (msg) => {
      const where = msg.location();
      // The browser logs a provoked refusal as a failed resource load: that one is expected.
      const known = provoked.find((p) => p.seen && !p.consoled && where.url && urlMatches(p.url, where.url)
        && msg.text().includes(`status of ${p.status}`));
      if (known) {
        known.consoled = true;
        return;
      }
      if (msg.type() === 'error') {
        problems.push(`console error on ${page.url()}: ${msg.text()}${where.url ? ` (${where.url}:${where.lineNumber})` : ''}`);
      }
    });
    page.on('pageerror', (error) => problems.push(`page error on ${page.url()}: ${error.message}`));
    page.on('requestfailed', (request) => {
      problems.push(`request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
    });
    page.on('response', (response) => {
      const known = provoked.find((p) => !p.seen && urlMatches(p.url, response.url())
        && p.method === response.request().method() && p.status === response.status());
      if (known) {
        known.seen = true;
        return;
      }
      if (response.status() >= 400 && this.servers.some((server) => response.url().startsWith(server))) {
        problems.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
      }
    });
  }

  /** The problems, with every provoked refusal that never came. */
  report() {
    for (const missed of this.provoked.filter((p) => !p.seen)) {
      this.problems.push(`the provoked refusal never came: HTTP ${missed.status} for ${missed.method} ${missed.url}`);
    }
    return this.problems;
  }
}

/** `screenshot(page, name)` writing `<prefix>NN-<name>.png` into `dir`, numbered in order. */
export function screenshots(dir, prefix = '') {
  let shot = 0;
  return async (page, name) => {
    shot += 1;
    const file = path.join(dir, `${prefix}${String(shot).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    log(`screenshot ${path.basename(file)}`);
  };
}

/**
 * Runs `test(page)` in a fresh context of a new Chromium under `watch`, abandoned after
 * `timeoutMs`; on failure the page is screenshotted to `failureShot`. Returns the exit status:
 * 0 when every check passed and the browser reported no problem, 1 otherwise.
 */
export async function runInChromium({ executablePath, target, artifactsDir, failureShot, timeoutMs, watch, test }) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // CI runs as root, where Chromium's sandbox cannot start; /dev/shm may be small in containers.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const started = Date.now();
  let failure = null;
  let page = null;
  try {
    log(`Chromium ${browser.version()} against ${target}; screenshots in ${artifactsDir}`);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    watch.attach(page);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckFailed(`the run took longer than ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      await Promise.race([test(page), timeout]);
    } finally {
      clearTimeout(timer);
    }
  } catch (error) {
    failure = error;
    if (page) {
      await page.screenshot({ path: failureShot, fullPage: true }).catch(() => {});
    }
  } finally {
    await browser.close().catch(() => {});
  }
  if (failure) {
    const where = failure instanceof CheckFailed ? failure.message : failure.stack || String(failure);
    console.error(`[browser] FAILED${page ? ` at ${page.url()}` : ''}: ${where}`);
    console.error(`[browser] see ${failureShot}`);
  }
  const problems = watch.report();
  for (const problem of problems) console.error(`[browser] ${problem}`);
  if (problems.length > 0) {
    console.error(`[browser] FAILED: ${problems.length} browser error(s) above (console, page errors, failed or 4xx/5xx requests)`);
  }
  if (failure || problems.length > 0) return 1;
  log(`all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
