//! Retry hints on RESOURCE_EXHAUSTED: the `grpc-retry-pushback-ms` metadata (gRFC A6's
//! server pushback), set by the control plane when it refuses a claim for lack of budget
//! and read by its clients, which then wait at least that long (and at least their own
//! backoff) before asking again.

use std::time::Duration;

use tonic::{Code, Status};

/// The metadata key: milliseconds the client should wait before retrying.
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
/// The longest hint a client honours; a larger (or hostile) value is cut to this.
pub const MAX_PUSHBACK: Duration = Duration::from_secs(10);

/// RESOURCE_EXHAUSTED with `message` and a hint to retry after `retry_after`.
pub fn resource_exhausted(message: impl Into<String>, retry_after: Duration) -> Status {
    let mut status = Status::resource_exhausted(message);
    let ms = retry_after.min(MAX_PUSHBACK).as_millis().to_string();
    if let Ok(v) = ms.parse() {
        status.metadata_mut().insert(RETRY_PUSHBACK_MS, v);
    }
    status
}

/// For a RESOURCE_EXHAUSTED status, how long to wait before retrying: the hint if there is
/// a readable one (at most [`MAX_PUSHBACK`]), else zero (the caller's backoff alone).
/// `None` for any other status: not a refusal to retry after.
pub fn retry_after(status: &Status) -> Option<Duration> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    let hint = status
        .metadata()
        .get(RETRY_PUSHBACK_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    Some(hint.min(MAX_PUSHBACK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_round_trips_and_is_bounded() {
        let s = resource_exhausted("busy", Duration::from_millis(150));
        assert_eq!(retry_after(&s), Some(Duration::from_millis(150)));
        let s = resource_exhausted("busy", Duration::from_secs(3600));
        assert_eq!(retry_after(&s), Some(MAX_PUSHBACK));
    }

    #[test]
    fn hostile_or_missing_hints_fall_back_to_the_backoff() {
        for bad in ["-5", "abc", "99999999999999999999999", ""] {
            let mut s = Status::resource_exhausted("busy");
            s.metadata_mut()
                .insert(RETRY_PUSHBACK_MS, bad.parse().expect("ascii"));
            assert_eq!(retry_after(&s), Some(Duration::ZERO), "{bad:?}");
        }
        let mut s = Status::resource_exhausted("busy");
        s.metadata_mut()
            .insert(RETRY_PUSHBACK_MS, "99999999".parse().expect("ascii"));
        assert_eq!(retry_after(&s), Some(MAX_PUSHBACK));
        assert_eq!(retry_after(&Status::unavailable("down")), None);
    }
}
