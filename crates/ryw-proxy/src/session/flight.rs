//! A batch with a node ([`Flight`]): what it does ([`BatchPlan`]), which
//! of the node's replies come next ([`Stage`]), what the client's part did
//! ([`Outcome`]) and how to take back what did not run ([`Undo`]).

use super::*;

/// A batch sent to a node, until its `ReadyForQuery` has been handled.
#[derive(Debug)]
pub(super) struct Flight {
    pub(super) node: Node,
    /// The client's frames, kept to run the batch again elsewhere.
    pub(super) frames: Vec<Frame>,
    pub(super) plan: BatchPlan,
    /// A read planned by the router, until it is finished with what it saw.
    pub(super) read: Option<FrontRead>,
    /// A batch on the leader that may write: its floor, until its commit.
    pub(super) write: Option<FrontWrite>,
    /// Runs of the batch so far.
    pub(super) attempts: u8,
    /// The client's `Sync` (or `Query`) has been sent: a `ReadyForQuery`
    /// ends the batch. Until then (after a `Flush`) replies just flow.
    pub(super) synced: bool,
    /// The position statement follows the client's `Sync`.
    pub(super) position: bool,
    pub(super) stage: Stage,
    /// Something of this batch reached the client.
    pub(super) forwarded: bool,
    /// What the client's part did, from the node's replies.
    pub(super) outcome: Outcome,
    /// The transaction status when the batch was sent.
    pub(super) status_before: u8,
    /// What to take back of the registry if part of the batch did not run.
    pub(super) undo: Vec<Undo>,
    /// The client's statements the preamble prepared on the node: not
    /// there after all if the preamble failed.
    pub(super) injected: Vec<String>,
    /// Transaction pooling: what the batch's `Parse`s did to the pooled
    /// connection (taken back for those the server never ran).
    pub(super) pooled: Vec<pooled::PooledParse>,
    /// The batch was ended by a `Sync` of the proxy's (the client sent a
    /// `Flush`, then something for another node): its `ReadyForQuery` is
    /// not the client's.
    pub(super) proxy_sync: bool,
}

/// What the node's next replies answer.
#[derive(Debug)]
pub(super) enum Stage {
    /// The proxy's own messages before the client's batch: `queries`
    /// settings replayed (each ends with a `ReadyForQuery`), then
    /// `statements` `Parse`/`Close` replies, then, if `sync`, the
    /// `ReadyForQuery` of the proxy's `Sync` after them (before a simple
    /// query); then the client's batch, held back if `holding`.
    Preamble {
        queries: usize,
        statements: usize,
        sync: bool,
        holding: bool,
    },
    /// The client's batch. A read on a follower holds its first replies
    /// back (`held`) until a row, a completion or an error shows it will
    /// not move.
    Client {
        held: Option<BytesMut>,
        copy_in: bool,
    },
    /// The batch goes to the leader instead once the node reaches its end
    /// (`ReadyForQuery`s left: the batch's, and the position statement's);
    /// nothing of it reaches the client from here. `as_write`: a follower
    /// refused it as a write (25006); else it could not prepare what it
    /// needed there.
    Redirect { readies: u8, as_write: bool },
    /// The client's batch ended (its `ReadyForQuery`, held); the position
    /// statement answers next.
    Position {
        ready: Frame,
        lsn: Option<ryw_router::Lsn>,
    },
}

/// How to take back what a batch's `Parse` or `Close` did to the
/// registry and to its node's statements, if the server never got to it.
#[derive(Debug)]
pub(super) struct Undo {
    pub(super) what: Undoes,
    pub(super) name: String,
    pub(super) registry: Option<statements::Prepared>,
    /// What the node held under the name (`unnamed` for `""`).
    pub(super) node: Option<u64>,
}

/// Which message an [`Undo`] takes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Undoes {
    Parse,
    /// A `Close` of a statement.
    Close,
    /// A `Close` of a portal: nothing to take back, but it counts among
    /// the closes.
    ClosePortal,
}

/// What the client's part of a batch did.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// `ParseComplete`s and `CloseComplete`s of the client's messages: the
    /// first that many of its `Parse`s and `Close`s took effect (a server
    /// skips the rest of a batch after an error).
    pub(super) parsed: usize,
    pub(super) closed: usize,
    /// The SQLSTATE of its first error.
    pub(super) error: Option<String>,
    /// A `COMMIT` (command tag) completed.
    pub(super) committed: bool,
    /// A `ROLLBACK` completed (also a `COMMIT` of a failed transaction).
    pub(super) rolled_back: bool,
}

/// The plan of one batch: where it goes and what it does.
#[derive(Debug, Default)]
pub(super) struct BatchPlan {
    pub(super) route: Option<Route>,
    /// Why the leader, for logs.
    pub(super) why: &'static str,
    /// Session settings in it (replayed on other nodes once it committed).
    pub(super) settings: bool,
    /// It creates state that lives on the leader only.
    pub(super) pins: bool,
    /// It drops prepared statements (`DEALLOCATE`, `DISCARD ALL`).
    pub(super) drops_prepared: bool,
    pub(super) copy: bool,
    /// The batch is the proxy's own commands only.
    pub(super) ryw: bool,
    /// It mixes `ryw.*` commands with statements for the nodes.
    pub(super) mixed_ryw: bool,
    /// It only closes statements or portals (answered here).
    pub(super) close_only: bool,
    /// It runs something (an `Execute`, a `Query`, a function call), as
    /// opposed to preparing or describing: `ryw.served_by` follows it.
    pub(super) runs: bool,
    /// Every statement in it is a read (a read kept on the leader by a pin
    /// or a hint is still one: its position bounds what it saw).
    pub(super) all_reads: bool,
    /// Function calls the catalog must clear before the batch may leave
    /// the leader.
    pub(super) functions: Vec<Arc<[Box<str>]>>,
    /// Relations the catalog must clear (known, not sequences).
    pub(super) relations: Vec<Arc<[Box<str>]>>,
    /// It reads the node's statistics: the session's reads stay on the
    /// leader from then on.
    pub(super) statistics: bool,
}

/// Where the session is in its request-reply cycle.
#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for the client's next batch.
    Idle,
    /// A batch is with a node.
    Flying(Box<Flight>),
}
