// GET /publish/{stream}: publishes the camera over WHIP (the session, address and stats
// table: session.js).
(() => {
  const $ = (id) => document.getElementById(id);
  // Simulcast: full, 1/2 and 1/4 resolution, lowest first (the node names them low, mid,
  // high by these rids). On by default; ?simulcast=0 or the checkbox turns it off.
  const LAYERS = [
    { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
  ];

  // VP8 first, H.264 next, everything else (VP9, AV1, rtx, red, ulpfec) after.
  function preferVp8(tr) {
    if (typeof tr.setCodecPreferences !== 'function') return;
    const rank = (c) => { const m = c.mimeType.toLowerCase(); return m === 'video/vp8' ? 0 : m === 'video/h264' ? 1 : 2; };
    for (const api of [window.RTCRtpSender, window.RTCRtpReceiver]) {
      const caps = api && api.getCapabilities ? api.getCapabilities('video') : null;
      if (!caps) continue;
      try { tr.setCodecPreferences(caps.codecs.slice().sort((a, b) => rank(a) - rank(b))); return; } catch (_) { /* try next */ }
    }
    console.error('setCodecPreferences failed; using the browser default codec order');
  }

  const stats = {
    state: 'new', framesEncoded: 0, frameWidth: 0, frameHeight: 0, framesPerSecond: 0,
    bytesSent: 0, packetsSent: 0, audioPacketsSent: 0, bitrateKbps: 0, node: '', reconnects: 0,
    layers: [],
  };
  const preview = $('preview');
  let page = null, media = null, running = false, startSeq = 0;
  const fmt = (n, d) => page.fmt(n, d);

  function setButtons() { $('start').disabled = running; $('stop').disabled = !running; }

  function releaseMedia() {
    if (media) media.getTracks().forEach((t) => t.stop());
    media = preview.srcObject = null;
  }

  async function openMedia(seq) {
    page.setStatus('opening camera and microphone…');
    try {
      // Chromium sends as many layers as the capture size allows: three need 1280×720.
      const video = $('simulcast').checked ? { width: 1280, height: 720 } : { width: 640, height: 360 };
      return await navigator.mediaDevices.getUserMedia({ video, audio: true });
    } catch (err) {
      if (seq !== startSeq) return null;
      console.error(err);
      page.setStatus('camera/microphone unavailable: ' + (err && err.message ? err.message : String(err)), true);
      running = false;
      setButtons();
      return null;
    }
  }

  async function start() {
    if (running) return;
    running = true;
    setButtons();
    const seq = ++startSeq;
    if (!media || media.getTracks().some((t) => t.readyState === 'ended')) {
      releaseMedia();
      const m = await openMedia(seq);
      if (!m) return;
      if (seq !== startSeq || !running) { m.getTracks().forEach((t) => t.stop()); return; }
      media = preview.srcObject = m;
      preview.play().catch(() => {});
    }
    page.connect();
  }

  function stop() {
    running = false;
    startSeq++;
    page.close();
    releaseMedia();
    stats.state = 'closed';
    page.setStatus('stopped'); setButtons();
  }

  page = strataSession({
    page: 'publish',
    resource: 'whip',
    mediaLabel: 'ingest on',
    query(params) {
      $('simulcast').checked = params.get('simulcast') !== '0';
      return '';
    },
    stats,
    active: () => running && !!media,
    prepare(conn) {
      for (const track of media.getVideoTracks().concat(media.getAudioTracks())) {
        const init = { direction: 'sendonly', streams: [media] };
        if (track.kind === 'video' && $('simulcast').checked) init.sendEncodings = LAYERS;
        const tr = conn.addTransceiver(track, init);
        if (track.kind === 'video') preferVp8(tr);
      }
    },
    beforePost: () => page.setStatus('connecting…'),
    connected: () => page.setStatus('publishing'),
    leave: () => { startSeq++; },
    back: () => { if (running) { running = false; start(); } },
    rows: [
      ['state', () => stats.state],
      ['resolution sent', () => (stats.frameWidth ? stats.frameWidth + '×' + stats.frameHeight : '–')],
      ['layers sent', () => (stats.layers.length ? stats.layers.join(', ') : '–')],
      ['frames encoded', () => fmt(stats.framesEncoded)],
      ['frames / s', () => fmt(stats.framesPerSecond, 1)],
      ['bitrate out (kbit/s)', () => fmt(stats.bitrateKbps)],
      ['video packets sent', () => fmt(stats.packetsSent)],
      ['audio packets sent', () => fmt(stats.audioPacketsSent)],
      ['reconnects', () => fmt(stats.reconnects)],
    ],
    async poll(conn) {
      const report = await conn.getStats();
      // With simulcast there is one video outbound-rtp per layer: the figures below are the
      // top layer's, the bytes all layers'.
      let v = null, a = null, videoBytes = 0;
      const layers = [];
      report.forEach((r) => {
        if (r.type !== 'outbound-rtp') return;
        if (r.kind === 'audio') { a = r; return; }
        if (r.kind !== 'video') return;
        videoBytes += r.bytesSent || 0;
        if (r.rid && r.frameWidth) layers.push(r.rid + ' ' + r.frameWidth + '×' + r.frameHeight);
        if (!v || (r.frameWidth || 0) > (v.frameWidth || 0)) v = r;
      });
      stats.layers = layers.sort();
      const bytes = videoBytes + (a ? a.bytesSent || 0 : 0);
      stats.bytesSent = bytes;
      stats.framesEncoded = v ? v.framesEncoded || 0 : 0;
      stats.frameWidth = v ? v.frameWidth || 0 : 0;
      stats.frameHeight = v ? v.frameHeight || 0 : 0;
      stats.framesPerSecond = v ? v.framesPerSecond || 0 : 0;
      stats.packetsSent = v ? v.packetsSent || 0 : 0;
      stats.audioPacketsSent = a ? a.packetsSent || 0 : 0;
      return bytes;
    },
  });
  $('start').addEventListener('click', start); $('stop').addEventListener('click', stop);
  $('simulcast').addEventListener('change', () => { if (running) { stop(); start(); } });
  page.start();
  start();
})();
