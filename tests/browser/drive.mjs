#!/usr/bin/env node
// Drives Debian's /usr/bin/chromium (through playwright-core; no browser is ever downloaded)
// against a running Strata cluster: publishes the fake camera with the node's /publish page,
// plays it back with the /play page on another node, and plays a second, already-live stream.
// Used by tests/tests/netns_browser.rs; see README.md next to this file.
//
//   node drive.mjs --publish URL --play URL [--low URL] [--fixture URL --fixture-size 640x360]
//                  [--frames 30] [--timeout-ms 40000] [--min-publish-width W] [--hold]
//                  [--sample-ms 200]
//
// --publish    the /publish/{stream} page to open first (fake camera over WHIP)
// --play       the /play/{stream} page for the same stream; must decode more than --frames
//              frames at the resolution the publish page reports it sends
// --low        a /play/{stream}?layer=low page for the same stream (the publish page sends
//              simulcast); must decode more than --frames frames at 1/4 of the top layer's size
// --min-publish-width  wait until the publisher sends at least W pixels wide before any
//              player opens: Chromium starts simulcast on its lowest layer and adds the
//              others as its bandwidth estimate of the publishing path grows, which takes
//              longer on a loaded machine
// --fixture    a /play/{stream} page for a stream published by someone else; must decode more
//              than --frames frames at --fixture-size
// --timeout-ms deadline for each page to reach its condition
// --hold       after printing the result, keep the browser (and so the sessions) open until
//              stdin closes, so the caller can inspect the cluster while media flows; meanwhile
//              stdin takes commands, one a line:
//   limited-play URL HOST:PORT
//              opens URL (a /play/{stream} page) as the page `limited`, its media through a
//              proxy at HOST:PORT: the node's answer to the page's WHEP POST is intercepted and
//              its candidates replaced by HOST:PORT (the page itself is unchanged). Prints
//              `{"limited":{url,session,node,answerCandidate}}` once the POST is answered, then
//              every --sample-ms (default 200) one line `{"sample":{page,...}}` for each of the
//              `play` and `limited` pages: the video inbound-rtp counters from getStats()
//              (frames decoded, frame size, freezeCount, totalFreezesDuration, PLI/NACK counts,
//              loss) and the selected ICE pair, so the caller can follow layer switches and
//              freezes over time.
//
// stdout gets one line first: a JSON object with `ok` and the figures of every page (then,
// with --hold, the lines of the commands above). Progress goes to stderr. Exit status 0 on success, 1 on a failed check, 2 on bad usage, 3 when the
// browser or playwright-core is missing. On failure every open page's screenshot and console
// log are saved in a temporary directory whose paths are in the JSON (`artifacts`) and on
// stderr. STRATA_BROWSER_SHOTS=DIR also saves screenshots of the playing pages on success.

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { openLimited as openLimitedPage, sampleLoop as sampleLoopOf } from './limited.mjs';

const CHROMIUM = '/usr/bin/chromium';
// Flags checked with Debian bookworm's chromium, headless, inside a network namespace.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-quic',
];
const SETUP_HINT = 'run scripts/setup.sh --browser';

const log = (...a) => console.error('drive:', ...a);

function usage(msg) {
  console.error(`drive.mjs: ${msg}`);
  console.error('usage: node drive.mjs --publish URL --play URL [--fixture URL --fixture-size WxH] [--frames N] [--timeout-ms MS] [--hold]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { frames: 30, timeoutMs: 40000, hold: false, fixtureSize: '640x360', sampleMs: 200 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    switch (a) {
      case '--publish': o.publish = val(); break;
      case '--play': o.play = val(); break;
      case '--low': o.low = val(); break;
      case '--fixture': o.fixture = val(); break;
      case '--fixture-size': o.fixtureSize = val(); break;
      case '--frames': o.frames = Number(val()); break;
      case '--timeout-ms': o.timeoutMs = Number(val()); break;
      case '--min-publish-width': o.minPublishWidth = Number(val()); break;
      case '--hold': o.hold = true; break;
      case '--sample-ms': o.sampleMs = Number(val()); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!o.publish || !o.play) usage('--publish and --play are required');
  const m = /^(\d+)x(\d+)$/.exec(o.fixtureSize);
  if (!m) usage('--fixture-size must be WIDTHxHEIGHT');
  o.fixtureWidth = Number(m[1]);
  o.fixtureHeight = Number(m[2]);
  if (!(o.frames >= 0) || !(o.timeoutMs > 0) || !(o.sampleMs >= 20)) usage('bad --frames, --timeout-ms or --sample-ms');
  if (o.minPublishWidth !== undefined && !(o.minPublishWidth > 0)) usage('bad --min-publish-width');
  return o;
}

const opts = parseArgs(process.argv.slice(2));

// Missing tools are a setup problem: say so plainly, with a distinct exit status.
function missing(what) {
  console.log(JSON.stringify({ ok: false, error: `${what}; ${SETUP_HINT}` }));
  console.error(`drive.mjs: ${what}; ${SETUP_HINT}`);
  process.exit(3);
}
if (!existsSync(CHROMIUM)) missing(`${CHROMIUM} not found`);
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  missing(`playwright-core not installed in tests/browser (${e.code || e.message})`);
}

const work = mkdtempSync(join(tmpdir(), 'strata-browser-'));
const started = Date.now();
const result = { ok: false };
const pages = []; // { name, page, console: [] }
let context = null;

function now() { return Date.now() - started; }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `prepare(page)` runs before the page loads (e.g. to intercept its requests).
async function openPage(name, url, prepare) {
  const page = await context.newPage();
  if (prepare) await prepare(page);
  const entry = { name, page, console: [] };
  pages.push(entry);
  const line = (s) => entry.console.push(`${(now() / 1000).toFixed(3)} ${s}`);
  page.on('console', (m) => line(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => line(`[pageerror] ${e.stack || e.message}`));
  page.on('requestfailed', (r) => line(`[requestfailed] ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.request().method() !== 'GET') line(`[response] ${r.request().method()} ${r.url()} ${r.status()}`);
  });
  page.on('crash', () => line('[crash] page crashed'));
  const t0 = Date.now();
  const resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: opts.timeoutMs });
  if (!resp || !resp.ok()) throw new Error(`${name}: GET ${url} -> ${resp ? resp.status() : 'no response'}`);
  return { entry, t0 };
}

const snapshot = (page) =>
  page.evaluate(() => ({
    ...(window.strataStats || {}),
    status: document.getElementById('status')?.textContent || '',
  }));

// Polls the page's stats until `cond(stats)` holds; fails at the deadline with the last stats.
async function waitStats(name, page, what, cond, onPoll) {
  const deadline = Date.now() + opts.timeoutMs;
  let last = null;
  for (;;) {
    last = await snapshot(page);
    if (onPoll) onPoll(last);
    if (cond(last)) return last;
    if (Date.now() >= deadline) {
      throw new Error(`${name}: no ${what} within ${opts.timeoutMs} ms; last stats ${JSON.stringify(last)}`);
    }
    await sleep(100);
  }
}

// Counters of the page's video RTP stream that the page does not show (loss, NACKs, freezes,
// CPU adaptation): `inbound-rtp` on a player, `outbound-rtp` on the publisher.
const videoRtp = (page, type) =>
  page.evaluate(async (type) => {
    const pc = window.strataPc;
    if (!pc) return null;
    const report = await pc.getStats();
    let v = null, pair = null;
    report.forEach((r) => {
      if (r.type === type && r.kind === 'video') v = r;
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    });
    if (!v) return null;
    const cand = (id) => { const c = id && report.get(id); return c ? `${c.candidateType} ${c.protocol} ${c.address}:${c.port}` : null; };
    const ice = pair ? { local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId) } : null;
    const keys = ['packetsReceived', 'packetsLost', 'packetsSent', 'retransmittedPacketsSent', 'nackCount',
      'pliCount', 'firCount', 'keyFramesDecoded', 'keyFramesEncoded', 'framesDropped', 'freezeCount',
      'totalFreezesDuration', 'qualityLimitationReason', 'decoderImplementation', 'encoderImplementation'];
    return { ...Object.fromEntries(keys.filter((k) => k in v).map((k) => [k, v[k]])), ice };
  }, type);

// Opens a /play page and waits for `frames` decoded frames at the size `want()` returns.
async function play(name, url, want) {
  log(`${name}: opening ${url}`);
  const { entry, t0 } = await openPage(name, url);
  let firstSeenMs = null;
  const s = await waitStats(name, entry.page, `more than ${opts.frames} decoded frames at the expected size`, (st) => {
    const w = want();
    return st.framesDecoded > opts.frames && st.frameWidth === w.width && st.frameHeight === w.height;
  }, (st) => {
    if (firstSeenMs === null && st.firstFrameMs !== null && st.firstFrameMs !== undefined) firstSeenMs = Date.now() - t0;
  });
  const w = want();
  const r = {
    url,
    node: s.node,
    framesDecoded: s.framesDecoded,
    width: s.frameWidth,
    height: s.frameHeight,
    expectedWidth: w.width,
    expectedHeight: w.height,
    firstFrameMs: s.firstFrameMs,
    pageOpenToFirstFrameMs: firstSeenMs,
    pageOpenToCheckMs: Date.now() - t0,
    framesPerSecond: s.framesPerSecond,
    packetsLost: s.packetsLost,
    audioPacketsReceived: s.audioPacketsReceived,
    reconnects: s.reconnects,
    state: s.state,
    video: await videoRtp(entry.page, 'inbound-rtp'),
  };
  log(`${name}: ok ${JSON.stringify(r)}`);
  return r;
}

async function saveArtifacts(onlyPlaying) {
  const dir = process.env.STRATA_BROWSER_SHOTS && onlyPlaying ? process.env.STRATA_BROWSER_SHOTS : join(work, 'artifacts');
  mkdirSync(dir, { recursive: true });
  const out = {};
  for (const { name, page, console: lines } of pages) {
    const item = {};
    try {
      item.screenshot = join(dir, `${name}.png`);
      await page.screenshot({ path: item.screenshot, timeout: 10000 });
    } catch (e) {
      item.screenshot = null;
      item.screenshotError = e.message.split('\n')[0];
    }
    if (!onlyPlaying) {
      item.console = join(dir, `${name}.console.log`);
      writeFileSync(item.console, lines.join('\n') + '\n');
    }
    out[name] = item;
  }
  return out;
}

let exitCode = 1;
try {
  const profile = join(work, 'profile'); // a fresh --user-data-dir
  log(`launching ${CHROMIUM} (profile ${profile})`);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 640 },
    timeout: opts.timeoutMs,
  });
  result.browser = context.browser()?.version() ?? null;
  // The persistent context opens one blank tab; it is not needed.
  for (const p of context.pages()) await p.close();

  // 1. Publish the fake camera.
  log(`publish: opening ${opts.publish}`);
  const pub = await openPage('publish', opts.publish);
  let ps = await waitStats('publish', pub.entry.page, 'connected session sending frames',
    (st) => st.state === 'connected' && st.framesEncoded > 0 && st.frameWidth > 0);
  result.publish = {
    url: opts.publish,
    node: ps.node,
    pageOpenToSendingMs: Date.now() - pub.t0,
    width: ps.frameWidth,
    height: ps.frameHeight,
  };
  log(`publish: ok ${JSON.stringify(result.publish)}`);
  if (opts.minPublishWidth) {
    ps = await waitStats('publish', pub.entry.page, `frames at least ${opts.minPublishWidth} px wide`,
      (st) => st.frameWidth >= opts.minPublishWidth);
    result.publish.rampedMs = Date.now() - pub.t0;
    log(`publish: sending ${ps.frameWidth}x${ps.frameHeight} after ${result.publish.rampedMs} ms`);
  }
  // What the publisher sends now (it may adapt its resolution under CPU load; then the
  // player must follow, so the expectation is re-read at every poll).
  let sent = { width: ps.frameWidth, height: ps.frameHeight };
  const sentNow = () => sent;
  const pubPoll = setInterval(() => {
    snapshot(pub.entry.page).then((st) => {
      ps = st;
      if (st.frameWidth > 0) sent = { width: st.frameWidth, height: st.frameHeight };
    }).catch(() => {});
  }, 500);

  // 2. Play it on another node (and its low layer, if asked).
  // The low layer is the top one scaled down by 4 (the encoder rounds down).
  const lowNow = () => ({ width: Math.floor(sent.width / 4), height: Math.floor(sent.height / 4) });
  try {
    result.play = await play('play', opts.play, sentNow);
    if (opts.low) result.low = await play('low', opts.low, lowNow);
  } finally {
    clearInterval(pubPoll);
  }
  result.publish.framesEncoded = ps.framesEncoded;
  result.publish.finalWidth = ps.frameWidth;
  result.publish.finalHeight = ps.frameHeight;
  result.publish.reconnects = ps.reconnects;
  result.publish.video = await videoRtp(pub.entry.page, 'outbound-rtp');

  // 3. Play the stream published by the test (the committed fixture).
  if (opts.fixture) {
    result.fixture = await play('fixture', opts.fixture, () => ({ width: opts.fixtureWidth, height: opts.fixtureHeight }));
  }

  if (process.env.STRATA_BROWSER_SHOTS) result.screenshots = await saveArtifacts(true);
  result.ok = true;
  exitCode = 0;
} catch (e) {
  result.error = e.message.split('\n')[0];
  log(`FAILED: ${e.stack || e.message}`);
  try {
    result.artifacts = await saveArtifacts(false);
    for (const [name, a] of Object.entries(result.artifacts)) {
      log(`${name}: screenshot ${a.screenshot ?? '(none: ' + a.screenshotError + ')'}, console log ${a.console}`);
    }
  } catch (e2) {
    log(`saving artifacts failed: ${e2.message}`);
  }
}
result.elapsedMs = now();
console.log(JSON.stringify(result));

if (exitCode === 0 && opts.hold) {
  log('holding the sessions open until stdin closes (commands: limited-play URL HOST:PORT)');
  const sampler = { stop: false, done: null };
  // The caller may stop reading before it closes stdin: then stop sampling, quietly.
  process.stdout.on('error', () => { sampler.stop = true; });
  const emit = (o) => { if (!sampler.stop) console.log(JSON.stringify(o)); };
  for await (const line of createInterface({ input: process.stdin })) {
    const [cmd, ...args] = line.trim().split(/\s+/);
    if (!cmd) continue;
    try {
      if (cmd !== 'limited-play' || args.length !== 2) throw new Error(`unknown command: ${line}`);
      emit({ limited: await openLimitedPage(openPage, opts.timeoutMs, args[0], args[1]) });
      sampler.done ??= sampleLoopOf(pages, ['play', 'limited'], opts.sampleMs, now, emit, sampler);
    } catch (e) {
      log(`command failed: ${e.stack || e.message}`);
      emit({ error: e.message.split('\n')[0] });
    }
  }
  sampler.stop = true;
  await sampler.done;
}
if (context) await context.close().catch(() => {});
// The profile is throwaway; artifacts of a failure are kept for inspection.
if (exitCode === 0) rmSync(work, { recursive: true, force: true });
else rmSync(join(work, 'profile'), { recursive: true, force: true });
process.exit(exitCode);
