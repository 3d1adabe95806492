// The limited player of drive.mjs: a /play page whose media goes through a rate-limited proxy,
// and the samples of the pages' video counters over time. See drive.mjs for the commands.

// `sdp` with the candidates of each media section replaced by one host candidate on
// host:port (the proxy); the node is ICE-lite and answers the proxy's address as the player's.
export function rewriteCandidates(sdp, host, port) {
  const out = [];
  let done = false;
  for (const line of sdp.split(/\r?\n/)) {
    if (line === '') continue;
    if (line.startsWith('m=')) done = false;
    if (line.startsWith('a=candidate:')) {
      if (!done) out.push(`a=candidate:1 1 udp 2130706431 ${host} ${port} typ host`);
      done = true;
      continue;
    }
    out.push(line);
  }
  return out.join('\r\n') + '\r\n';
}

// `ip:port` of the first candidate of `sdp`, or null.
export function firstCandidate(sdp) {
  const line = sdp.split(/\r?\n/).find((l) => l.startsWith('a=candidate:'));
  const f = line ? line.split(/\s+/) : [];
  return f.length > 5 ? `${f[4]}:${f[5]}` : null;
}

// Opens `url` as the page `limited` with the node's answers to its WHEP POSTs pointed at
// `via` (HOST:PORT). Resolves with the first answer's session URL, node and candidate.
// `openPage(name, url, prepare)` and `timeoutMs` come from the driver.
export async function openLimited(openPage, timeoutMs, url, via) {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(via);
  if (!m) throw new Error(`limited-play: bad proxy address ${via} (want IPv4:PORT)`);
  let answered;
  const first = new Promise((resolve, reject) => { answered = { resolve, reject }; });
  const prepare = (page) => page.route('**/whep/**', async (route) => {
    const req = route.request();
    if (req.method() !== 'POST') return route.continue();
    try {
      const resp = await route.fetch();
      let body = await resp.text();
      const info = { status: resp.status() };
      if (info.status === 201) {
        info.answerCandidate = firstCandidate(body);
        body = rewriteCandidates(body, m[1], m[2]);
        const loc = resp.headers().location;
        info.session = loc ? new URL(loc, req.url()).href : null;
        info.node = resp.headers()['x-strata-node'] || null;
      }
      await route.fulfill({ response: resp, body });
      answered.resolve(info);
    } catch (e) {
      answered.reject(e);
      await route.abort().catch(() => {});
    }
  });
  const { t0 } = await openPage('limited', url, prepare);
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`limited: no WHEP answer within ${timeoutMs} ms`)), timeoutMs);
  });
  const info = await Promise.race([first, late]).finally(() => clearTimeout(timer));
  if (info.status !== 201) throw new Error(`limited: WHEP POST answered ${info.status}`);
  return { url, via, ...info, pageOpenToAnswerMs: Date.now() - t0 };
}

// What one sample of a page says: the video inbound-rtp counters Chromium keeps (frames,
// size, freezes, PLI/NACK, loss), the stats' own timestamp (`at`, ms), the selected pair, and
// the page's reconnects and the layer the node last told it.
export const sampleVideo = (page) =>
  page.evaluate(async () => {
    const pc = window.strataPc;
    const st = window.strataStats || {};
    const base = { reconnects: st.reconnects ?? null, layer: st.currentLayer ?? null, state: pc ? pc.connectionState : null };
    if (!pc) return base;
    const report = await pc.getStats();
    let v = null, pair = null;
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') v = r;
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    });
    if (!v) return base;
    const remote = pair && report.get(pair.remoteCandidateId);
    const keys = ['framesDecoded', 'frameWidth', 'frameHeight', 'keyFramesDecoded', 'framesDropped',
      'freezeCount', 'totalFreezesDuration', 'pliCount', 'nackCount', 'firCount', 'packetsLost',
      'packetsReceived', 'bytesReceived'];
    return {
      ...base,
      at: v.timestamp,
      ...Object.fromEntries(keys.filter((k) => k in v).map((k) => [k, v[k]])),
      remote: remote ? `${remote.address}:${remote.port}` : null,
    };
  });

// Every `sampleMs`, one `{"sample": {...}}` line per open page of `names`, until `ctl.stop`.
export async function sampleLoop(pages, names, sampleMs, now, emit, ctl) {
  while (!ctl.stop) {
    const t = Date.now();
    for (const name of names) {
      const entry = pages.find((p) => p.name === name);
      if (!entry) continue;
      const s = await sampleVideo(entry.page).catch((e) => ({ sampleError: e.message.split('\n')[0] }));
      emit({ sample: { page: name, t: now(), ...s } });
    }
    await new Promise((r) => setTimeout(r, Math.max(0, sampleMs - (Date.now() - t))));
  }
}
