//! Built-in collectors that produce records on their own schedule.
//!
//! Role: groups the plugins; each one samples on its interval and hands its records to
//! `ingress.rs` without waiting (a full queue drops the sample and counts it as
//! `dropped{reason="queue_full"}`). Today: `system.rs` (host metrics). Touches what each plugin
//! reads (for `system`: the kernel's /proc and /sys views through `sysinfo`).

pub mod system;
