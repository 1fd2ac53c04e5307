//! Statement classification: what the proxy does with one statement text
//! (a simple `Query`'s, or a `Parse`'s). Only a statement that is provably
//! read-only may leave the leader.
//!
//! (Being written: see the module's contract below.)

/// Where a statement goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Provably read-only: a fresh read, routed by the session's strategy.
    Read,
    /// `/* ryw:stale-ok */`: any follower in rotation may answer.
    StaleOk,
    /// Everything else: writes, DDL, transaction control, anything not
    /// provably read-only, unparseable text, `/* ryw:leader */`.
    Leader,
}

/// What a statement does to the client's session, beyond its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Nothing the proxy must track.
    None,
    /// Ends a transaction (`COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE
    /// TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED`).
    EndsTransaction,
    /// A session setting that must hold on every backend the client
    /// reaches: `SET` (not `SET LOCAL`, not `SET TRANSACTION`), `RESET`,
    /// `SET SESSION CHARACTERISTICS`, `DISCARD`. Replayed as written.
    SessionSetting,
    /// Creates session state that lives on the leader only (`CREATE TEMP
    /// TABLE`, SQL `PREPARE`, `LISTEN`, `DECLARE … WITH HOLD`): the
    /// connection's reads stay on the leader from then on.
    PinsToLeader,
}

/// A command the proxy answers itself; never forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RywCommand {
    /// `SET ryw.session = '<key>'` (also `TO`).
    SetSession(String),
    /// `SET ryw.token = '<signed token>'`.
    SetToken(String),
    /// `SET ryw.strategy = '<name[:duration]>'`.
    SetStrategy(String),
    /// `RESET ryw.session` / `RESET ryw.strategy` / …: back to the default.
    Reset(String),
    /// `SHOW ryw.<name>` (`token`, `served_by`, `session`, `strategy`).
    Show(String),
}

/// The classification of one statement text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// Where it goes.
    pub route: Route,
    /// What it does to the session.
    pub effect: Effect,
    /// A command for the proxy itself (then `route` is irrelevant).
    pub ryw: Option<RywCommand>,
    /// Why a statement goes to the leader, for logs and metrics
    /// (`"write"`, `"unparseable"`, `"hint"`, `"function nextval"`, …);
    /// empty for reads.
    pub why: &'static str,
}

/// Classifies one statement text.
pub fn classify(sql: &str) -> Class {
    let _ = sql;
    Class {
        route: Route::Leader,
        effect: Effect::None,
        ryw: None,
        why: "not written yet",
    }
}
