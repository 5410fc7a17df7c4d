//! The wall clock, read only at the edges of the runtime.
//!
//! Role: processing time for batches and ticks. The engine never reads a clock; the runtime
//! stamps each message with this once, at ingest. Touches the system clock only.

use crate::engine::Nanos;

/// Nanoseconds since the Unix epoch now (0 if the clock is before 1970; saturating after 2262).
pub fn now_nanos() -> Nanos {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX),
        Err(_) => 0,
    }
}
