//! MPEG-TS (what SRT encoders send) into the [`Converter`]: `mpeg2ts` parses
//! TS packets, the PAT and the PMT; PES reassembly (bounded) and the split
//! of Annex B video and ADTS audio into frames are here.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use mpeg2ts::es::StreamType;
use mpeg2ts::ts::{ReadTsPacket, TsPacket, TsPacketReader, TsPayload};
use strata_media::MediaPacket;

use crate::aac::parse_adts;
use crate::h264::{AvcConfig, nal};
use crate::{Converter, ConverterConfig, IngestError};

/// Largest PES packet reassembled (a big keyframe fits many times over).
pub const MAX_PES: usize = 4 * 1024 * 1024;
/// Frames held back while waiting for every listed track's codec config.
const MAX_HELD: usize = 500;

/// The bytes `mpeg2ts` reads: whole TS packets, one at a time, so a packet
/// that fails to parse never leaves the next one misaligned.
#[derive(Clone, Default)]
struct Feed(Arc<Mutex<VecDeque<u8>>>);

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = buf.len().min(q.len());
        for (dst, src) in buf.iter_mut().zip(q.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

struct Pes {
    pts: Option<u64>,
    dts: Option<u64>,
    data: Vec<u8>,
    expected: Option<usize>,
}

enum Held {
    Video {
        dts_ms: u32,
        cts_ms: i32,
        units: Vec<Vec<u8>>,
    },
    Audio {
        ts_ms: u32,
        frame: Vec<u8>,
    },
}

/// Demultiplexes one MPEG-TS stream of H.264 and AAC.
pub struct TsDemuxer {
    feed: Feed,
    reader: TsPacketReader<Feed>,
    partial: Vec<u8>,
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    pes: HashMap<u16, Pes>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    has_audio_config: bool,
    held: Vec<Held>,
    converter: Converter,
}

impl std::fmt::Debug for TsDemuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsDemuxer")
            .field("video_pid", &self.video_pid)
            .field("audio_pid", &self.audio_pid)
            .finish_non_exhaustive()
    }
}

impl TsDemuxer {
    /// A demuxer feeding a converter made with `cfg`.
    pub fn new(cfg: ConverterConfig) -> TsDemuxer {
        let feed = Feed::default();
        TsDemuxer {
            reader: TsPacketReader::new(feed.clone()),
            feed,
            partial: Vec::new(),
            video_pid: None,
            audio_pid: None,
            pes: HashMap::new(),
            sps: None,
            pps: None,
            has_audio_config: false,
            held: Vec::new(),
            converter: Converter::new(cfg),
        }
    }

    /// The converter (its catalog once fixed).
    pub fn converter(&self) -> &Converter {
        &self.converter
    }

    /// Takes the next bytes of the stream (any split); returns the packets
    /// of the frames they completed.
    pub fn push(&mut self, bytes: &[u8], ingest_us: u64) -> Result<Vec<MediaPacket>, IngestError> {
        let mut out = Vec::new();
        self.partial.extend_from_slice(bytes);
        let whole = self.partial.len() / TsPacket::SIZE * TsPacket::SIZE;
        let data: Vec<u8> = self.partial.drain(..whole).collect();
        for packet in data.chunks_exact(TsPacket::SIZE) {
            {
                let mut q = self.feed.0.lock().unwrap_or_else(PoisonError::into_inner);
                q.clear();
                q.extend(packet);
            }
            let parsed = self
                .reader
                .read_ts_packet()
                .map_err(|_| IngestError::Malformed("MPEG-TS packet"))?;
            if let Some(p) = parsed {
                self.packet(p, ingest_us, &mut out)?;
            }
        }
        Ok(out)
    }

    fn packet(
        &mut self,
        p: TsPacket,
        ingest_us: u64,
        out: &mut Vec<MediaPacket>,
    ) -> Result<(), IngestError> {
        let pid = p.header.pid.as_u16();
        match p.payload {
            Some(TsPayload::Pmt(pmt)) => {
                for es in &pmt.es_info {
                    let es_pid = es.elementary_pid.as_u16();
                    match es.stream_type {
                        StreamType::H264 => self.video_pid = Some(es_pid),
                        StreamType::AdtsAac => self.audio_pid = Some(es_pid),
                        StreamType::H265 => {
                            return Err(IngestError::UnsupportedVideo(
                                "HEVC in MPEG-TS; only H.264 can be played over WebRTC here".into(),
                            ));
                        }
                        other => {
                            return Err(IngestError::UnsupportedVideo(format!(
                                "MPEG-TS stream type {other:?}; only H.264 and AAC (ADTS) are accepted"
                            )));
                        }
                    }
                }
            }
            Some(TsPayload::PesStart(start)) => {
                // The PES length counts the optional header (3 bytes of flags
                // and length, then PTS, DTS, ESCR as present), as `mpeg2ts` reads it.
                let h = &start.header;
                let optional =
                    3 + h.pts.map_or(0, |_| 5) + h.dts.map_or(0, |_| 5) + h.escr.map_or(0, |_| 6);
                let expected = match usize::from(start.pes_packet_len) {
                    0 => None,
                    n => Some(n.saturating_sub(optional)),
                };
                let new = Pes {
                    pts: start.header.pts.map(|t| t.as_u64()),
                    dts: start.header.dts.map(|t| t.as_u64()),
                    data: start.data.to_vec(),
                    expected,
                };
                if let Some(done) = self.pes.insert(pid, new) {
                    self.frame(pid, done, ingest_us, out)?;
                }
                self.complete(pid, ingest_us, out)?;
            }
            Some(TsPayload::PesContinuation(more)) => {
                if let Some(pes) = self.pes.get_mut(&pid) {
                    if pes.data.len() + more.len() > MAX_PES {
                        self.pes.remove(&pid);
                        return Err(IngestError::Malformed("PES packet over the size limit"));
                    }
                    pes.data.extend_from_slice(&more);
                    self.complete(pid, ingest_us, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands a PES on once its announced length is in.
    fn complete(
        &mut self,
        pid: u16,
        ingest_us: u64,
        out: &mut Vec<MediaPacket>,
    ) -> Result<(), IngestError> {
        let done = self
            .pes
            .get(&pid)
            .is_some_and(|p| p.expected.is_some_and(|e| p.data.len() >= e));
        if done && let Some(pes) = self.pes.remove(&pid) {
            self.frame(pid, pes, ingest_us, out)?;
        }
        Ok(())
    }

    fn frame(
        &mut self,
        pid: u16,
        pes: Pes,
        ingest_us: u64,
        out: &mut Vec<MediaPacket>,
    ) -> Result<(), IngestError> {
        let Some(pts) = pes.pts else {
            return Ok(());
        };
        let dts = pes.dts.unwrap_or(pts);
        if Some(pid) == self.video_pid {
            let units: Vec<Vec<u8>> = annex_b_units(&pes.data).map(<[u8]>::to_vec).collect();
            for u in &units {
                match crate::h264::nal_type(u) {
                    nal::SPS if u.len() >= 4 => self.sps = Some(u.clone()),
                    nal::PPS => self.pps = Some(u.clone()),
                    _ => {}
                }
            }
            if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
                self.converter.set_avc_config(AvcConfig {
                    length_size: 4,
                    sps: vec![sps.clone()],
                    pps: vec![pps.clone()],
                });
            }
            let cts_ms = (pts as i64 - dts as i64) / 90;
            self.held.push(Held::Video {
                dts_ms: (dts / 90) as u32,
                cts_ms: cts_ms as i32,
                units,
            });
        } else if Some(pid) == self.audio_pid {
            let mut rest = pes.data.as_slice();
            let mut ts_ms = pts as f64 / 90.0;
            while !rest.is_empty() {
                let frame = parse_adts(rest)?;
                self.converter.set_aac_config(frame.config)?;
                self.has_audio_config = true;
                self.held.push(Held::Audio {
                    ts_ms: ts_ms as u32,
                    frame: frame.payload.to_vec(),
                });
                ts_ms += 1_024_000.0 / f64::from(frame.config.sample_rate);
                rest = &rest[frame.len..];
            }
        }
        self.flush(ingest_us, out)
    }

    /// Sends what is held once every track the PMT lists has its config
    /// (or too much is held to wait longer).
    fn flush(&mut self, ingest_us: u64, out: &mut Vec<MediaPacket>) -> Result<(), IngestError> {
        let video_ready = self.video_pid.is_none() || (self.sps.is_some() && self.pps.is_some());
        let audio_ready = self.audio_pid.is_none() || self.has_audio_config;
        if !(video_ready && audio_ready) && self.held.len() < MAX_HELD {
            return Ok(());
        }
        for h in std::mem::take(&mut self.held) {
            let r = match h {
                Held::Video {
                    dts_ms,
                    cts_ms,
                    units,
                } => {
                    let refs: Vec<&[u8]> = units.iter().map(Vec::as_slice).collect();
                    if self.sps.is_none() {
                        continue;
                    }
                    self.converter
                        .push_nal_units(dts_ms, cts_ms, &refs, ingest_us)
                }
                Held::Audio { ts_ms, frame } => self.converter.push_aac(ts_ms, &frame, ingest_us),
            };
            match r {
                Ok(p) => out.extend(p),
                Err(e) if e.is_unsupported() => return Err(e),
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// The NAL units of an Annex B byte stream (start codes 00 00 01 or
/// 00 00 00 01; trailing zero bytes of a unit dropped).
pub fn annex_b_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| s - 3)
        .chain(std::iter::once(data.len()))
        .collect();
    starts.into_iter().zip(ends).filter_map(move |(s, e)| {
        let mut unit = data.get(s..e)?;
        while let [head @ .., 0] = unit {
            unit = head;
        }
        (!unit.is_empty()).then_some(unit)
    })
}

#[cfg(test)]
mod tests;
