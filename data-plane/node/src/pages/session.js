// Shared by /play and /publish: the page's address, one WHIP or WHEP session at a time (POST
// the offer, apply the answer, DELETE the resource, reconnect on failure), and the stats table.
//
// cfg: {
//   page, resource     'play'/'whep' or 'publish'/'whip': /[prefix/]{page}/{s} -> /[prefix/]{resource}/{s}
//   mediaLabel         text before the media node's name ('media from', 'ingest on')
//   query(params)      query string for the POST ('' or '?…')
//   stats              the page's window.strataStats (gets state, node, reconnects, bitrateKbps)
//   active()           whether a session should run now (the publisher's Start/Stop)
//   prepare(conn)      adds the transceivers to a new connection
//   beforePost()       optional: status line before the POST
//   refused(resp)      optional: for a non-201 answer the page handles itself, the ms after
//                      which to try again; null for the generic error and retry rule
//   answered(conn, my, t0)  optional: after the answer is applied (t0: just before the POST)
//   connected()        optional: the connection reached 'connected'
//   rows               [label, () => text] rows of the stats table
//   poll(conn)         async: fills stats from conn.getStats(), returns the bytes counted
//                      for the bitrate, or null if the stats could not be read
// }
function strataSession(cfg) {
  const $ = (id) => document.getElementById(id);
  const segs = location.pathname.split('/').filter(Boolean);
  const rawName = segs.length ? segs[segs.length - 1] : '';
  let stream = rawName;
  try { stream = decodeURIComponent(rawName); } catch (_) { /* keep the raw segment */ }
  const prefix = segs.length > 2 ? '/' + segs.slice(0, -2).join('/') : '';
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const endpoint = prefix + '/' + cfg.resource + '/' + encodeURIComponent(stream) + cfg.query(params);
  const stats = cfg.stats;
  window.strataStats = stats;
  window.strataPc = null;

  document.title = 'Strata — ' + cfg.page + ' ' + stream;
  $('title').textContent = document.title;

  let pageNode = location.host, mediaNode = '';
  function showNode() {
    $('node').textContent = 'page served by ' + pageNode + (mediaNode ? ' · ' + cfg.mediaLabel + ' ' + mediaNode : '');
  }
  showNode();
  fetch(location.href, { method: 'HEAD', cache: 'no-store' })
    .then((r) => { const n = r.headers.get('X-Strata-Node'); if (n) { pageNode = n; showNode(); } })
    .catch(() => {});

  function setStatus(msg, isError) { $('status').textContent = msg; $('status').className = isError ? 'error' : ''; }

  function authHeaders(extra) {
    const h = Object.assign({}, extra);
    if (token) h.Authorization = 'Bearer ' + token;
    return h;
  }

  function waitGathering(conn, ms) {
    if (conn.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      let timer = null;
      const done = () => { clearTimeout(timer); conn.removeEventListener('icegatheringstatechange', check); resolve(); };
      const check = () => { if (conn.iceGatheringState === 'complete') done(); };
      timer = setTimeout(done, ms);
      conn.addEventListener('icegatheringstatechange', check);
    });
  }

  // The session: `gen` numbers connection attempts, so that an answer to an older one is dropped.
  const s = { pc: null, resourceUrl: null, gen: 0, leaving: false };
  let retryTimer = null, watchdog = null, prevBytes = 0, prevTs = 0;
  const live = () => cfg.active() && !s.leaving;

  function sendDelete(url, keepalive) {
    if (url) fetch(url, { method: 'DELETE', headers: authHeaders(), keepalive: !!keepalive }).catch(() => {});
  }

  function teardown() {
    clearTimeout(watchdog); watchdog = null;
    if (s.pc) { s.pc.close(); s.pc = null; }
    sendDelete(s.resourceUrl, s.leaving);
    s.resourceUrl = null;
  }

  function scheduleConnect(ms) {
    clearTimeout(retryTimer);
    retryTimer = live() ? setTimeout(connect, ms) : null;
  }

  function reconnect(why) {
    if (!live()) return;
    stats.reconnects++;
    setStatus(why + ', reconnecting…', true);
    teardown();
    scheduleConnect(1000);
  }

  // Reconnect if `conn` is not connected when the timer fires.
  function armWatchdog(conn, ms, why) {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      watchdog = null;
      if (conn === s.pc && conn.connectionState !== 'connected') reconnect(why);
    }, ms);
  }

  function onState(conn) {
    if (conn !== s.pc) return;
    const st = (stats.state = conn.connectionState);
    if (st === 'connected') { clearTimeout(watchdog); watchdog = null; if (cfg.connected) cfg.connected(); }
    else if (st === 'failed') reconnect('connection failed');
    else if (st === 'disconnected' && !watchdog) armWatchdog(conn, 3000, 'connection lost');
  }

  async function exchange(conn, my) {
    await conn.setLocalDescription(await conn.createOffer());
    await waitGathering(conn, 2000);
    if (my !== s.gen) return;
    if (cfg.beforePost) cfg.beforePost();
    const t0 = performance.now();
    const resp = await fetch(endpoint, {
      method: 'POST',
      headers: authHeaders({ 'Content-Type': 'application/sdp' }),
      body: conn.localDescription.sdp,
    });
    const body = await resp.text();
    const loc = resp.headers.get('Location');
    const url = loc ? new URL(loc, resp.url).href : null;
    if (my !== s.gen) { if (resp.status === 201) sendDelete(url, true); conn.close(); return; }
    if (resp.status !== 201) {
      const retry = cfg.refused ? cfg.refused(resp) : null;
      if (retry !== null) { teardown(); scheduleConnect(retry); return; }
      setStatus('HTTP ' + resp.status + ': ' + body.slice(0, 500), true);
      teardown();
      if (resp.status >= 500 || resp.status === 429) scheduleConnect(5000);
      return;
    }
    s.resourceUrl = url;
    mediaNode = resp.headers.get('X-Strata-Node') || new URL(resp.url).host;
    stats.node = mediaNode;
    showNode();
    await conn.setRemoteDescription({ type: 'answer', sdp: body });
    if (my !== s.gen) return;
    if (cfg.answered) cfg.answered(conn, my, t0);
    if (conn.connectionState !== 'connected') armWatchdog(conn, 10000, 'connection timed out');
  }

  async function connect() {
    clearTimeout(retryTimer); retryTimer = null;
    teardown();
    if (!cfg.active()) return;
    const my = ++s.gen;
    const conn = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
    s.pc = conn;
    window.strataPc = conn;
    stats.state = conn.connectionState;
    prevBytes = 0; prevTs = 0;
    conn.onconnectionstatechange = () => onState(conn);
    cfg.prepare(conn);
    try {
      await exchange(conn, my);
    } catch (err) {
      if (my !== s.gen) return;
      console.error(err);
      setStatus('error: ' + (err && err.message ? err.message : String(err)), true);
      teardown();
      scheduleConnect(5000);
    }
  }

  // Ends the session for good (the publisher's Stop, leaving the page).
  function close() {
    s.gen++;
    clearTimeout(retryTimer); retryTimer = null;
    teardown();
  }

  const fmt = (n, d) => (typeof n === 'number' && isFinite(n) ? n.toFixed(d || 0) : '–');
  const cells = cfg.rows.map(([label]) => {
    const tr = document.createElement('tr'), k = document.createElement('td'), v = document.createElement('td');
    k.textContent = label;
    tr.append(k, v);
    $('stats').append(tr);
    return v;
  });
  function render() { cfg.rows.forEach(([, get], i) => { cells[i].textContent = get(); }); }

  async function pollStats() {
    const conn = s.pc;
    if (!conn) {
      if (s.leaving) stats.state = 'closed'; else if (cfg.active()) stats.state = 'idle';
      render();
      return;
    }
    let bytes;
    try { bytes = await cfg.poll(conn); } catch (_) { return; }
    if (conn !== s.pc || bytes === null) return;
    const now = performance.now();
    stats.bitrateKbps = prevTs && bytes >= prevBytes ? Math.round(((bytes - prevBytes) * 8) / (now - prevTs)) : 0;
    prevBytes = bytes; prevTs = now;
    stats.state = conn.connectionState;
    render();
  }

  return {
    $, params, stream, s, fmt, setStatus, authHeaders, connect, close,
    start() {
      setInterval(pollStats, 1000);
      render();
      addEventListener('pagehide', () => { s.leaving = true; close(); if (cfg.leave) cfg.leave(); });
      addEventListener('pageshow', (e) => {
        if (!e.persisted) return;
        s.leaving = false;
        if (cfg.back) cfg.back(); else connect();
      });
    },
  };
}
