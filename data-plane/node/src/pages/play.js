// GET /play/{stream}: plays over WHEP (the session, address and stats table: session.js).
(() => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const video = document.getElementById('video');
  let page = null;
  const stats = {
    state: 'new', framesDecoded: 0, frameWidth: 0, frameHeight: 0, framesPerSecond: 0,
    packetsLost: 0, jitter: 0, bytesReceived: 0, bitrateKbps: 0,
    audioLevel: 0, audioPacketsReceived: 0, firstFrameMs: null, node: '', reconnects: 0,
    layer: 'auto', currentLayer: null, estimateKbps: null, estimateFrom: null,
  };

  async function inbound(conn) {
    let v = null, a = null;
    const report = await conn.getStats();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') v = r; else if (r.kind === 'audio') a = r;
    });
    return { v, a };
  }

  async function watchFirstFrame(conn, my, t0) {
    while (my === page.s.gen && conn === page.s.pc) {
      let n = 0;
      try { const { v } = await inbound(conn); n = v ? v.framesDecoded || 0 : 0; } catch (_) { return; }
      if (my !== page.s.gen) return;
      if (n > 0) {
        stats.firstFrameMs = Math.round(performance.now() - t0);
        page.setStatus('playing');
        return;
      }
      await sleep(50);
    }
  }

  // The node's view of this player: its simulcast layer and bandwidth estimate.
  async function pollLayer() {
    const url = page.s.resourceUrl;
    if (!url) return;
    try {
      const r = await fetch(url, { headers: page.authHeaders(), cache: 'no-store' });
      if (!r.ok || url !== page.s.resourceUrl) return;
      const j = await r.json();
      stats.currentLayer = j.layer;
      stats.estimateKbps = typeof j.estimate_bps === 'number' ? Math.round(j.estimate_bps / 1000) : null;
      stats.estimateFrom = j.estimate_from || null;
    } catch (_) { /* the next poll tries again */ }
  }

  const fmt = (n, d) => page.fmt(n, d);
  page = strataSession({
    page: 'play',
    resource: 'whep',
    mediaLabel: 'media from',
    // ?layer=low|mid|high pins a simulcast layer; auto (the default) lets the node choose.
    query(params) {
      stats.layer = params.get('layer') || 'auto';
      return stats.layer !== 'auto' ? '?layer=' + encodeURIComponent(stats.layer) : '';
    },
    stats,
    active: () => true,
    prepare(conn) {
      stats.firstFrameMs = null;
      const ms = new MediaStream();
      video.srcObject = ms;
      conn.ontrack = (e) => { ms.addTrack(e.track); };
      conn.addTransceiver('video', { direction: 'recvonly' });
      conn.addTransceiver('audio', { direction: 'recvonly' });
    },
    refused(resp) {
      if (resp.status !== 404) return null;
      page.setStatus('stream not live, retrying…');
      return 2000;
    },
    answered(conn, my, t0) {
      page.setStatus('connected, waiting for media…');
      video.play().catch(() => {});
      watchFirstFrame(conn, my, t0);
    },
    rows: [
      ['state', () => stats.state],
      ['layer asked', () => stats.layer],
      ['layer now', () => stats.currentLayer || '–'],
      ['estimate (kbit/s)', () => (stats.estimateKbps === null ? '–' : fmt(stats.estimateKbps))],
      ['estimate from', () => stats.estimateFrom || '–'],
      ['resolution', () => (stats.frameWidth ? stats.frameWidth + '×' + stats.frameHeight : '–')],
      ['frames decoded', () => fmt(stats.framesDecoded)],
      ['frames / s', () => fmt(stats.framesPerSecond, 1)],
      ['packets lost', () => fmt(stats.packetsLost)],
      ['jitter (ms)', () => fmt(stats.jitter * 1000, 1)],
      ['bitrate in (kbit/s)', () => fmt(stats.bitrateKbps)],
      ['audio level', () => fmt(stats.audioLevel, 3)],
      ['audio packets', () => fmt(stats.audioPacketsReceived)],
      ['first frame (ms)', () => (stats.firstFrameMs === null ? '–' : fmt(stats.firstFrameMs))],
      ['reconnects', () => fmt(stats.reconnects)],
    ],
    async poll(conn) {
      pollLayer();
      const { v, a } = await inbound(conn);
      const bytes = (v ? v.bytesReceived || 0 : 0) + (a ? a.bytesReceived || 0 : 0);
      stats.bytesReceived = bytes;
      stats.framesDecoded = v ? v.framesDecoded || 0 : 0;
      stats.frameWidth = v ? v.frameWidth || 0 : 0;
      stats.frameHeight = v ? v.frameHeight || 0 : 0;
      stats.framesPerSecond = v ? v.framesPerSecond || 0 : 0;
      stats.jitter = v ? v.jitter || 0 : 0;
      stats.packetsLost = (v ? v.packetsLost || 0 : 0) + (a ? a.packetsLost || 0 : 0);
      stats.audioLevel = a ? a.audioLevel || 0 : 0;
      stats.audioPacketsReceived = a ? a.packetsReceived || 0 : 0;
      return bytes;
    },
  });
  page.start();
  page.connect();
})();
