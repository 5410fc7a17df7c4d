//! End-to-end tests of the whole meshmon path (agent → aggregator → stores).
//!
//! Role: helpers that start real binaries and servers on loopback; the tests
//! themselves live in `tests/tests/`. Filled from issue 3 on.
