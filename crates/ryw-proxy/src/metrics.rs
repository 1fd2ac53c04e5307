//! [`ProxyMetrics`]: what the proxy counts of its own, beside the router's
//! metrics (reads by node and strategy, waits, fallbacks: `ryw-metrics`):
//! clients, batches by node and route, retries, refusals. Plain atomics,
//! published by the admin endpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use ryw_router::MetricSlot;

use crate::classify::Route;

/// Why a batch ran a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A follower refused it as a write (SQLSTATE 25006): on the leader.
    ReadOnly,
    /// Its node broke or stopped answering before anything reached the
    /// client (rule 8): elsewhere.
    Lost,
}

/// Things the proxy counts once each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection did not log in within `--login-timeout`.
    LoginTimeout,
    /// A pending login was evicted by a newer one (`--max-pending-logins`).
    LoginEvicted,
    /// A client went over `--client-memory-limit` (54000).
    MemoryLimit,
    /// A follower refused a connection (53300, 57P03; 28000, 28P01, 3D000: a role or database it has not replayed yet): the read went to
    /// the leader.
    FollowerRefused,
    /// A position read after a read was refused as impossible.
    PositionRefused,
    /// A write's position could not be read: the session's fresh reads go
    /// to the leader until one is.
    PositionUnknown,
    /// The leader was asked whether a pinned session's state is gone.
    PinCheck,
    /// A session was unpinned: what kept it on the leader is gone.
    Unpinned,
}

impl Event {
    const ALL: [(Event, &'static str, &'static str); 8] = [
        (
            Event::LoginTimeout,
            "ryw_proxy_login_timeouts",
            "connections that did not log in within --login-timeout",
        ),
        (
            Event::LoginEvicted,
            "ryw_proxy_logins_evicted",
            "pending logins evicted by newer ones (--max-pending-logins)",
        ),
        (
            Event::MemoryLimit,
            "ryw_proxy_memory_limit_refusals",
            "clients closed for going over --client-memory-limit (54000)",
        ),
        (
            Event::FollowerRefused,
            "ryw_proxy_follower_refusals",
            "reads sent to the leader because a follower refused a connection (53300, 57P03; 28000, 28P01, 3D000: a role or database it has not replayed yet)",
        ),
        (
            Event::PositionRefused,
            "ryw_proxy_positions_refused",
            "positions read after a read refused as impossible (never stored)",
        ),
        (
            Event::PositionUnknown,
            "ryw_proxy_positions_unknown",
            "writes whose position could not be read (fresh reads on the leader until one is)",
        ),
        (
            Event::PinCheck,
            "ryw_proxy_pin_checks",
            "times the leader was asked whether a pinned session's state is gone",
        ),
        (
            Event::Unpinned,
            "ryw_proxy_unpinned",
            "sessions whose pin to the leader lifted",
        ),
    ];

    fn index(self) -> usize {
        Event::ALL
            .iter()
            .position(|(e, _, _)| *e == self)
            .expect("listed")
    }
}

/// The proxy's own counters.
#[derive(Debug)]
pub struct ProxyMetrics {
    /// The label of each [`MetricSlot`].
    names: Vec<String>,
    /// `[slot][read, stale_ok, leader]`.
    batches: Vec<[AtomicU64; 3]>,
    clients: AtomicI64,
    clients_total: AtomicU64,
    refused: AtomicU64,
    auth_failures: AtomicU64,
    protocol_errors: AtomicU64,
    retries_read_only: AtomicU64,
    retries_lost: AtomicU64,
    ryw_commands: AtomicU64,
    events: [AtomicU64; 8],
}

impl ProxyMetrics {
    /// Counters for these nodes, labelled by [`MetricSlot::labels`].
    pub fn new(names: Vec<String>) -> ProxyMetrics {
        ProxyMetrics {
            batches: names.iter().map(|_| Default::default()).collect(),
            names,
            clients: AtomicI64::new(0),
            clients_total: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            retries_read_only: AtomicU64::new(0),
            retries_lost: AtomicU64::new(0),
            ryw_commands: AtomicU64::new(0),
            events: Default::default(),
        }
    }

    /// A batch sent to the node of `slot`, routed `route`.
    pub fn batch(&self, slot: MetricSlot, route: Route) {
        let kind = match route {
            Route::Read => 0,
            Route::StaleOk => 1,
            Route::Leader => 2,
        };
        if let Some(b) = self.batches.get(slot.index()) {
            b[kind].fetch_add(1, Relaxed);
        }
    }

    /// A client connected (`true`) or left.
    pub fn client(&self, connected: bool) {
        if connected {
            self.clients.fetch_add(1, Relaxed);
            self.clients_total.fetch_add(1, Relaxed);
        } else {
            self.clients.fetch_sub(1, Relaxed);
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> i64 {
        self.clients.load(Relaxed)
    }

    /// A client refused for the connection limit.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// A failed login.
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    /// A client that broke the protocol (answered 08P01, closed).
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    /// A batch run again.
    pub fn retry(&self, why: Retry) {
        match why {
            Retry::ReadOnly => &self.retries_read_only,
            Retry::Lost => &self.retries_lost,
        }
        .fetch_add(1, Relaxed);
    }

    /// A `SET`/`SHOW ryw.*` answered here.
    pub fn ryw_command(&self) {
        self.ryw_commands.fetch_add(1, Relaxed);
    }

    /// One more `event`.
    pub fn count(&self, event: Event) {
        self.events[event.index()].fetch_add(1, Relaxed);
    }

    /// How many `event`s so far.
    pub fn events(&self, event: Event) -> u64 {
        self.events[event.index()].load(Relaxed)
    }
}

impl Collector for ProxyMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "ryw_proxy_batches",
                "client batches (a simple query, or extended messages up to Sync) by node and route",
                None,
                MetricType::Counter,
            )?;
            for (name, counts) in self.names.iter().zip(&self.batches) {
                for (route, c) in ["read", "stale_ok", "leader"].iter().zip(counts) {
                    let labels = [("node", name.as_str()), ("route", route)];
                    ConstCounter::new(c.load(Relaxed)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ryw_proxy_retries",
                "batches run again before anything reached the client: read_only (a follower \
                 answered 25006; run on the leader), lost (the node broke or stopped answering)",
                None,
                MetricType::Counter,
            )?;
            for (reason, c) in [
                ("read_only", &self.retries_read_only),
                ("lost", &self.retries_lost),
            ] {
                let labels = [("reason", reason)];
                ConstCounter::new(c.load(Relaxed)).encode(family.encode_family(&labels)?)?;
            }
        }
        let clients = ConstGauge::new(self.clients.load(Relaxed));
        clients.encode(encoder.encode_descriptor(
            "ryw_proxy_clients",
            "client connections open now",
            None,
            MetricType::Gauge,
        )?)?;
        for (name, help, c) in [
            (
                "ryw_proxy_client_connections",
                "client connections accepted",
                &self.clients_total,
            ),
            (
                "ryw_proxy_clients_refused",
                "clients refused for the connection limit",
                &self.refused,
            ),
            (
                "ryw_proxy_auth_failures",
                "failed logins",
                &self.auth_failures,
            ),
            (
                "ryw_proxy_protocol_errors",
                "clients that broke the protocol (08P01)",
                &self.protocol_errors,
            ),
            (
                "ryw_proxy_ryw_commands",
                "SET/SHOW ryw.* answered by the proxy",
                &self.ryw_commands,
            ),
        ] {
            let c = ConstCounter::new(c.load(Relaxed));
            c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        for (event, name, help) in Event::ALL {
            let c = ConstCounter::new(self.events(event));
            c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        Ok(())
    }
}
