//! One sink's place in its stream: its queue, gate and layer filter. No locks here: the
//! stream's lock (see [`super::shared`]) is held by whoever calls in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::gate::{ResumeRule, SinkGate, Verdict};
use super::interest::{LayerFilter, LayerSet, LayerVerdict};
use crate::media::{Layer, MediaPacket, TrackId};

pub(crate) struct SinkSlot {
    tx: mpsc::Sender<MediaPacket>,
    gate: SinkGate,
    skipped: Arc<AtomicU64>,
    pub(crate) layers: LayerFilter,
}

impl SinkSlot {
    /// A slot feeding `tx`, counting skipped groups in `skipped`.
    pub(crate) fn new(tx: mpsc::Sender<MediaPacket>, skipped: Arc<AtomicU64>) -> Self {
        SinkSlot {
            tx,
            gate: SinkGate::new(),
            skipped,
            layers: LayerFilter::default(),
        }
    }

    /// Wait for the next keyframe again (the source changed).
    pub(crate) fn rewind(&mut self) {
        self.gate.rewind();
    }

    /// The layers this sink wants.
    pub(crate) fn wanted(&self) -> LayerSet {
        self.layers.wanted()
    }

    /// Offer a packet through the gate; false when the sink is gone.
    /// `layer`: the simulcast layer the packet's track carries, if any; `keyframes`: where
    /// to ask the source for a keyframe of a layer the sink waits for.
    pub(crate) fn offer(
        &mut self,
        now: std::time::Instant,
        rule: &ResumeRule,
        pkt: &MediaPacket,
        (layer, keyframes): (Option<Layer>, Option<&mpsc::Sender<TrackId>>),
    ) -> bool {
        if let Some(layer) = layer {
            match self.layers.offer(now, layer, pkt.keyframe) {
                LayerVerdict::Pass => {}
                LayerVerdict::Drop => return !self.tx.is_closed(),
                LayerVerdict::DropAndAsk => {
                    if let Some(tx) = keyframes {
                        // A full queue already holds requests enough to trigger one.
                        let _ = tx.try_send(pkt.track);
                    }
                    return !self.tx.is_closed();
                }
            }
        }
        let room = self.tx.capacity();
        let alive = match self.gate.offer(rule, pkt, room) {
            Verdict::Drop => !self.tx.is_closed(),
            Verdict::Deliver => match self.tx.try_send(pkt.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Only the holder of the stream lock sends, so the room the
                    // gate saw is still there; treat a surprise as an overflow.
                    self.gate.offer(rule, pkt, 0);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        };
        self.skipped
            .store(self.gate.skipped_groups(), Ordering::Relaxed);
        alive
    }
}
