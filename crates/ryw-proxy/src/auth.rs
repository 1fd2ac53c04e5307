//! Client authentication: the `--auth-file` (users and passwords) and the
//! server side of SCRAM-SHA-256 against it; the proxy authenticates to the
//! backends as the same user with the same password.
//!
//! (Being written.)
