//! `ryw proxy`: read-your-writes for any PostgreSQL client, with no code
//! change. A wire-protocol relay (session pooling) that sends writes and
//! transactions to the leader and each provably read-only statement to a
//! follower that has what the session must see, through the same router,
//! strategies, stores and tokens as `ryw serve`.
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `classify.rs` | statement classification: read, leader, session effects, `ryw.*` commands |
//! | `auth.rs` | the auth file and the server side of SCRAM-SHA-256 |

#![warn(missing_docs)]

pub mod auth;
pub mod classify;
