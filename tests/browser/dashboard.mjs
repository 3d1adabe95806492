#!/usr/bin/env node
// Drives Debian's /usr/bin/chromium (through playwright-core; no browser is ever downloaded)
// against the control plane's dashboard. Used by tests/tests/netns_dashboard.rs.
//
//   node dashboard.mjs --url URL --nodes a,b,c --stream S --tree p>c,p>c2,...
//                      [--escaped NODE] [--draining NODE] [--stream2 S2]
//                      [--screenshot PATH] [--timeout-ms 30000]
//
// 1. Opens URL and waits until the page shows a row for every node of --nodes, a card for
//    stream --stream whose tree has the main origin (first parent of --tree) at the root and
//    every `parent>child` edge of --tree.
// 2. With --escaped NODE: checks that NODE's free-text fields (URL, version), which the test
//    filled with markup, reached the page as text: no element was created from them and no
//    script ran.
// 3. Prints a line `{"phase":"ready",...}` and, when --draining or --stream2 is given, waits
//    until the page shows NODE as draining and a card for S2 (the caller changes the cluster
//    after reading the ready line; the page must follow by itself).
// 4. Takes a full-page screenshot (--screenshot) and prints one final JSON line with `ok`.
//
// Exit status 0 on success, 1 on a failed check, 2 on bad usage, 3 when the browser or
// playwright-core is missing. Progress goes to stderr.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SETUP_HINT = 'run scripts/setup.sh --browser';

const log = (...a) => console.error('dashboard:', ...a);

function usage(msg) {
  console.error(`dashboard.mjs: ${msg}`);
  console.error('usage: node dashboard.mjs --url URL --nodes a,b --stream S --tree p>c,... [--escaped NODE] [--draining NODE] [--stream2 S2] [--screenshot PATH] [--timeout-ms MS]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { timeoutMs: 30000, nodes: [], tree: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    switch (a) {
      case '--url': o.url = val(); break;
      case '--nodes': o.nodes = val().split(',').filter(Boolean); break;
      case '--stream': o.stream = val(); break;
      case '--tree':
        o.tree = val().split(',').filter(Boolean).map((e) => {
          const [p, c] = e.split('>');
          if (!p || !c) usage(`bad tree edge ${e}`);
          return [p, c];
        });
        break;
      case '--escaped': o.escaped = val(); break;
      case '--draining': o.draining = val(); break;
      case '--stream2': o.stream2 = val(); break;
      case '--screenshot': o.screenshot = val(); break;
      case '--timeout-ms': o.timeoutMs = Number(val()); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!o.url || !o.stream || o.nodes.length === 0 || o.tree.length === 0) {
    usage('--url, --nodes, --stream and --tree are required');
  }
  if (!(o.timeoutMs > 0)) usage('bad --timeout-ms');
  return o;
}

const opts = parseArgs(process.argv.slice(2));

function missing(what) {
  console.log(JSON.stringify({ ok: false, error: `${what}; ${SETUP_HINT}` }));
  console.error(`dashboard.mjs: ${what}; ${SETUP_HINT}`);
  process.exit(3);
}
if (!existsSync(CHROMIUM)) missing(`${CHROMIUM} not found`);
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  missing(`playwright-core not installed in tests/browser (${e.code || e.message})`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const started = Date.now();
const consoleLines = [];

// Polls `probe` (evaluated in the page with `arg`) until it returns { ok: true, ... }.
async function waitFor(page, what, probe, arg) {
  const deadline = Date.now() + opts.timeoutMs;
  let last = null;
  for (;;) {
    last = await page.evaluate(probe, arg);
    if (last && last.ok) return last;
    if (Date.now() >= deadline) {
      throw new Error(`no ${what} within ${opts.timeoutMs} ms; last: ${JSON.stringify(last)}`);
    }
    await sleep(100);
  }
}

// What the page shows of the expected nodes and tree.
function probeTopology({ nodes, stream, tree }) {
  const rows = nodes.filter((n) => document.querySelector(`tr[data-node="${CSS.escape(n)}"]`));
  const card = document.querySelector(`[data-stream="${CSS.escape(stream)}"]`);
  const missingEdges = [];
  if (card) {
    for (const [p, c] of tree) {
      const sel = `li[data-tree-node="${CSS.escape(p)}"] > ul > li[data-tree-node="${CSS.escape(c)}"]`;
      if (!card.querySelector(sel)) missingEdges.push(`${p}>${c}`);
    }
  }
  const root = card && card.querySelector('.tree > ul > li');
  const rootOk = !!root && root.dataset.treeNode === tree[0][0] && root.dataset.role === 'main_origin';
  const dash = window.strataDashboard || {};
  return {
    ok: rows.length === nodes.length && !!card && missingEdges.length === 0 && rootOk,
    rows: rows.length,
    card: !!card,
    rootOk,
    missingEdges,
    updates: dash.updates || 0,
    error: dash.error || null,
    status: document.getElementById('status')?.textContent || '',
  };
}

// The test node's URL and version carry markup; it must show up as text only.
function probeEscaped(node) {
  const row = document.querySelector(`tr[data-node="${CSS.escape(node)}"]`);
  const title = row?.querySelector('td.id')?.title || '';
  const injected = document.querySelectorAll('main img, main b, main script, main iframe').length;
  return {
    ok: title.includes('<img') && title.includes('<b>') && injected === 0 && window.__xss === undefined,
    title,
    injected,
    xss: window.__xss === undefined ? null : window.__xss,
  };
}

function probeChanges({ draining, stream2 }) {
  const row = draining ? document.querySelector(`tr[data-node="${CSS.escape(draining)}"]`) : null;
  const drainingShown = !draining || (!!row && row.classList.contains('draining') &&
    row.textContent.includes('draining'));
  const s2 = !stream2 || !!document.querySelector(`[data-stream="${CSS.escape(stream2)}"]`);
  return { ok: drainingShown && s2, drainingShown, stream2Shown: s2 };
}

const result = { ok: false };
let context = null;
let page = null;
const work = mkdtempSync(join(tmpdir(), 'strata-dashboard-'));
let exitCode = 1;
try {
  context = await chromium.launchPersistentContext(join(work, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
    colorScheme: 'light',
    timeout: opts.timeoutMs,
  });
  result.browser = context.browser()?.version() ?? null;
  for (const p of context.pages()) await p.close();
  page = await context.newPage();
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
  log(`opening ${opts.url}`);
  const resp = await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: opts.timeoutMs });
  if (!resp || !resp.ok()) throw new Error(`GET ${opts.url} -> ${resp ? resp.status() : 'no response'}`);

  const shown = await waitFor(page, 'nodes and stream tree', probeTopology,
    { nodes: opts.nodes, stream: opts.stream, tree: opts.tree });
  result.firstRenderMs = Date.now() - started;
  result.status = shown.status;
  log(`topology shown: ${JSON.stringify(shown)}`);

  if (opts.escaped) {
    result.escaped = await waitFor(page, 'escaped free text', probeEscaped, opts.escaped);
    log(`escaping ok: ${JSON.stringify(result.escaped)}`);
  }

  console.log(JSON.stringify({ phase: 'ready', ...shown }));
  if (opts.draining || opts.stream2) {
    const t0 = Date.now();
    result.changes = await waitFor(page, 'the cluster changes', probeChanges,
      { draining: opts.draining, stream2: opts.stream2 });
    result.changes.followedMs = Date.now() - t0;
    log(`changes shown: ${JSON.stringify(result.changes)}`);
  }
  result.updates = await page.evaluate(() => window.strataDashboard.updates);
  result.pageErrors = consoleLines.filter((l) => l.startsWith('[pageerror]') || l.startsWith('[error]'));
  if (result.pageErrors.length) throw new Error(`page errors: ${result.pageErrors.join(' | ')}`);
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 10000 });
    result.screenshot = opts.screenshot;
  }
  result.ok = true;
  exitCode = 0;
} catch (e) {
  result.error = e.message.split('\n')[0];
  result.console = consoleLines.slice(-20);
  log(`FAILED: ${e.stack || e.message}`);
  if (page && opts.screenshot) {
    try {
      await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 10000 });
      result.screenshot = opts.screenshot;
    } catch (e2) {
      log(`screenshot failed: ${e2.message}`);
    }
  }
}
result.elapsedMs = Date.now() - started;
console.log(JSON.stringify(result));
if (context) await context.close().catch(() => {});
rmSync(work, { recursive: true, force: true });
process.exit(exitCode);
