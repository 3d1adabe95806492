//! How both binaries expose metrics: `prometheus-client` registries, encoded in the
//! Prometheus text format (version 0.0.4).
//!
//! We serve the Prometheus text format rather than the crate's default OpenMetrics text:
//! `promtool check metrics` (the lint the tests run) reads the Prometheus format and fails
//! OpenMetrics output (there a counter's `# HELP` and `# TYPE` name the family without
//! `_total`, so promtool reports every `…_total` sample as "no help text"), and every
//! scraper of ours (the Prometheus server, the tests, the benchmarks) reads it. The
//! conventions:
//!
//! - a counter is registered under its exposed name less `_total` (the encoder adds it
//!   back): [`counter_name`] keeps the full, greppable name in our code;
//! - every family has one `# HELP` line, a sentence: the registry adds the final period;
//! - values owned elsewhere (atomics in the relay, the egress loops, the node's state) are
//!   read at scrape time into constant metrics ([`ConstFamily`], [`HistogramSnapshot`]),
//!   never copied into a second set of counters.

use std::fmt::{self, Debug};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The name a counter exposed as `name` (ending in `_total`) is registered under.
pub fn counter_name(name: &'static str) -> &'static str {
    debug_assert!(name.ends_with("_total"), "counter {name} lacks _total");
    name.strip_suffix("_total").unwrap_or(name)
}

/// Encodes `registries`, one after the other, as one Prometheus text document.
pub fn encode(registries: &[&Registry]) -> Result<String, fmt::Error> {
    let mut out = String::new();
    for r in registries {
        prometheus_text::encode(&mut out, r)?;
    }
    Ok(out)
}

/// A family of constant series (labels, value), in the order given: values read at scrape
/// time from state kept elsewhere.
#[derive(Debug)]
pub struct ConstFamily<L, M> {
    series: Vec<(L, M)>,
}

impl<L, M> ConstFamily<L, M> {
    /// A family of these series.
    pub fn new(series: Vec<(L, M)>) -> Self {
        Self { series }
    }
}

impl<L, M> EncodeMetric for ConstFamily<L, M>
where
    L: EncodeLabelSet + Debug,
    M: EncodeMetric + TypedMetric + Debug,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for (labels, metric) in &self.series {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// A histogram read at scrape time from buckets kept elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations.
    pub sum: f64,
    /// (upper bound, observations in this bucket alone); the last bound may be
    /// `f64::INFINITY`. The count is their total, so `_count` equals the `+Inf` bucket.
    pub buckets: Vec<(f64, u64)>,
}

impl TypedMetric for HistogramSnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum, count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    use super::*;

    #[test]
    fn counters_keep_their_total_name_and_help_is_one_sentence() {
        let mut r = Registry::default();
        r.register(
            counter_name("x_requests_total"),
            "Requests",
            ConstCounter::new(3u64),
        );
        r.register("x_open", "Open now", ConstGauge::new(2i64));
        let text = encode(&[&r]).unwrap();
        assert_eq!(
            text,
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total 3\n\
             # HELP x_open Open now.\n# TYPE x_open gauge\nx_open 2\n"
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn const_families_keep_their_order_and_escape_values() {
        let mut r = Registry::default();
        let series = vec![
            ([("peer", "b\"1")], ConstCounter::new(1u64)),
            ([("peer", "a")], ConstCounter::new(2u64)),
        ];
        r.register(
            counter_name("x_bytes_total"),
            "Bytes",
            ConstFamily::new(series),
        );
        let text = encode(&[&r]).unwrap();
        let b = text.find("x_bytes_total{peer=\"b\\\"1\"} 1\n").unwrap();
        let a = text.find("x_bytes_total{peer=\"a\"} 2\n").unwrap();
        assert!(b < a, "{text}");
    }

    #[test]
    fn histogram_snapshots_are_cumulative_with_count_equal_to_inf() {
        let mut r = Registry::default();
        let h = HistogramSnapshot {
            sum: 1.5,
            buckets: vec![(0.0001, 2), (1.0, 1), (f64::INFINITY, 4)],
        };
        r.register("x_seconds", "Latency", h);
        let text = encode(&[&r]).unwrap();
        for line in [
            "# TYPE x_seconds histogram\n",
            "x_seconds_bucket{le=\"0.0001\"} 2\n",
            "x_seconds_bucket{le=\"1\"} 3\n",
            "x_seconds_bucket{le=\"+Inf\"} 7\n",
            "x_seconds_sum 1.5\n",
            "x_seconds_count 7\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1, "{text}");
    }
}
