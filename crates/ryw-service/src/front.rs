//! The HTTP front: accepts connections and serves HTTP/1.1 on them with
//! hyper, holding its own against slow, idle and oversized clients
//! (`docs/reliability.md`, "Slow and idle clients"). `axum::serve` exposes
//! none of these limits, so the accept loop is ours:
//!
//! - **Header read timeout**: once the first byte of a request has arrived,
//!   its whole head must arrive within [`FrontLimits::header_read_timeout`]
//!   (trickling bytes does not reset it), else the connection is closed.
//! - **Idle timeout**: a connection with no request in progress (a new one,
//!   or keep-alive between requests) is closed after
//!   [`FrontLimits::idle_timeout`] of silence.
//! - **Connection cap**: at most [`FrontLimits::max_connections`] at once;
//!   the next one is answered `503 too-many-connections` (problem+json,
//!   `Connection: close`) and closed, and the others are served as before.
//! - **Lingering close**: when the server closes a connection whose client
//!   is still sending (a body over the limit answered 413), it first sends
//!   its FIN, then reads and discards what still comes, up to
//!   [`LINGER_BYTES`] for at most [`LINGER_TIME`], until the client closes
//!   or pauses for [`LINGER_QUIET`], as nginx does. Closing with unread
//!   bytes would make the kernel reset the connection, and the client would
//!   lose the 413 it had not read yet.
//! - **Graceful shutdown**: on shutdown, idle connections close at once and
//!   requests in progress finish, for at most the drain time given.
//!
//! HTTP/1.1 only (the service's axum has no HTTP/2).

use crate::error::ApiError;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Longest a lingering close reads what a client still sends after the
/// server's answer and FIN.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// A lingering close ends when the client has sent nothing for this long
/// (a client that reads its answer and keeps the socket open costs no
/// more than this).
pub const LINGER_QUIET: Duration = Duration::from_secs(1);
/// Most bytes a lingering close reads and discards.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Refusals (over the connection cap) answered at the same time; beyond
/// this the excess connection is closed without an answer.
const MAX_REFUSALS: usize = 64;
/// Longest a refusal may take (read the request head, answer 503, linger).
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// The front's limits (`ryw serve --header-read-timeout`, `--idle-timeout`,
/// `--max-connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontLimits {
    /// Longest a request head may take from its first byte. Default 10 s.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay silent with no request in progress.
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// Most connections held at once. Default 4096.
    pub max_connections: usize,
}

impl Default for FrontLimits {
    fn default() -> FrontLimits {
        FrontLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets requests in progress finish for at most `drain`, and
/// returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: FrontLimits,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    // Every connection holds a slot; shutdown waits for all of them back.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (stop, stopping) = watch::channel(false);
    let mut full_logged = false;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors (EMFILE) or a connection that
                    // died in the backlog: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                full_logged = false;
                let conn = connection(http.clone(), stream, app.clone(), limits, stopping.clone());
                tokio::spawn(async move {
                    conn.await;
                    drop(slot);
                });
            }
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection cap reached: refusing new connections with 503"
                    );
                    full_logged = true;
                }
                refuse(&http, stream, limits.max_connections, &refusals);
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "connections still open after the drain time; closing them"
        );
    }
}

/// One connection: hyper's HTTP/1.1 state machine, raced against the header
/// and idle timers (a timer that fires drops it: closed), and shut down
/// gracefully when `stopping` turns true.
///
/// The phase is a plain shared cell, not a channel: a request changes it
/// three times (head, busy, idle) and nothing needs waking for that; the
/// timer reads it when it fires (see [`expiry`]).
async fn connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    app: axum::Router,
    limits: FrontLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let phase = Arc::new(Mutex::new(Phase::Idle(Instant::now())));
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
        linger: None,
    });
    let conn = http.serve_connection(
        io,
        Handler {
            app,
            phase: phase.clone(),
        },
    );
    tokio::pin!(conn);
    let expired = expiry(phase, limits);
    tokio::pin!(expired);
    let mut draining = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    // A client that went away, or a malformed request (hyper
                    // has answered it already): not our fault.
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = &mut expired => {
                tracing::debug!(?why, "closing a connection: too slow or idle too long");
                return;
            }
            _ = stopping.changed(), if !draining => {
                // Idle connections close at once; a request in progress
                // finishes, then its connection closes.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Over the cap: answer the request head with 503 problem+json and close,
/// bounded in time; beyond [`MAX_REFUSALS`] at once, just close.
fn refuse(
    http: &hyper::server::conn::http1::Builder,
    stream: TcpStream,
    max: usize,
    refusals: &Arc<Semaphore>,
) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return; // dropped: closed
    };
    let mut http = http.clone();
    http.keep_alive(false);
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: Arc::new(Mutex::new(Phase::Busy)),
        linger: None,
    });
    let answer = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| async move {
        Ok::<_, Infallible>(ApiError::TooManyConnections(max).into_response())
    });
    let conn = http.serve_connection(io, answer);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIME, conn).await;
        drop(permit);
    });
}

/// Where a connection is in its request cycle, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress and no byte of the next one: the idle timer.
    Idle(Instant),
    /// Bytes of a request head have arrived (first one at the instant): the
    /// header timer.
    Head(Instant),
    /// The app is answering a request (its own time limit applies).
    Busy,
    /// Closing, lingering (bounded on its own).
    Closing,
}

/// Why the timers closed a connection.
#[derive(Debug, Clone, Copy)]
enum Expired {
    Idle,
    Header,
}

/// Resolves when the connection has been idle, or reading a head, for too
/// long; never while a request is in progress.
///
/// One timer per connection, re-armed only when it fires, never per
/// request: it fires at least every `min(header_read_timeout,
/// idle_timeout)`, and each time reads the phase and re-arms for the
/// phase's own deadline when that comes sooner. A deadline is never missed:
/// a phase that starts after a check ends no sooner than one step after
/// that check, and the timer is armed no later than one step after it.
async fn expiry(phase: Arc<Mutex<Phase>>, limits: FrontLimits) -> Expired {
    let step = limits.header_read_timeout.min(limits.idle_timeout);
    let timer = tokio::time::sleep(step);
    tokio::pin!(timer);
    loop {
        timer.as_mut().await;
        let now = Instant::now();
        let deadline = match *lock(&phase) {
            Phase::Idle(since) => Some((since + limits.idle_timeout, Expired::Idle)),
            Phase::Head(since) => Some((since + limits.header_read_timeout, Expired::Header)),
            Phase::Busy | Phase::Closing => None,
        };
        let next = match deadline {
            Some((at, why)) if at <= now => return why,
            Some((at, _)) => at.min(now + step),
            None => now + step,
        };
        timer.as_mut().reset(next);
    }
}

/// The phase, also after a panic elsewhere left its lock poisoned (a
/// `Phase` is always whole).
fn lock(phase: &Mutex<Phase>) -> std::sync::MutexGuard<'_, Phase> {
    phase.lock().unwrap_or_else(|e| e.into_inner())
}

/// The app as a hyper service that tells the timers when a request is in
/// progress.
#[derive(Clone)]
struct Handler {
    app: axum::Router,
    phase: Arc<Mutex<Phase>>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Handler {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        *lock(&self.phase) = Phase::Busy;
        let app = self.app.clone();
        let phase = self.phase.clone();
        Box::pin(async move {
            let resp = tower::ServiceExt::oneshot(app, req).await;
            // The answer is ready; writing it out counts as idle time, so a
            // client that does not read its answer is closed like one that
            // sends nothing.
            let mut p = lock(&phase);
            if *p == Phase::Busy {
                *p = Phase::Idle(Instant::now());
            }
            drop(p);
            resp
        })
    }
}

/// The TCP stream, seen by the timers (the first byte of a request head)
/// and closed with a lingering close.
struct Watched {
    inner: TcpStream,
    phase: Arc<Mutex<Phase>>,
    linger: Option<Linger>,
}

struct Linger {
    fin_sent: bool,
    until: Pin<Box<tokio::time::Sleep>>,
    quiet: Pin<Box<tokio::time::Sleep>>,
    left: usize,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            // The first byte of a request head starts the header timer.
            let mut p = lock(&self.phase);
            if matches!(*p, Phase::Idle(_)) {
                *p = Phase::Head(Instant::now());
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// The lingering close: FIN first, then read and discard what the client
    /// still sends until it closes too or pauses for [`LINGER_QUIET`], for
    /// at most [`LINGER_TIME`] and [`LINGER_BYTES`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let linger = this.linger.get_or_insert_with(|| {
            *lock(&this.phase) = Phase::Closing;
            Linger {
                fin_sent: false,
                until: Box::pin(tokio::time::sleep(LINGER_TIME)),
                quiet: Box::pin(tokio::time::sleep(LINGER_QUIET)),
                left: LINGER_BYTES,
            }
        });
        if !linger.fin_sent {
            if let Err(e) = ready!(Pin::new(&mut this.inner).poll_shutdown(cx)) {
                // Already reset or gone: nothing left to protect.
                tracing::trace!(error = %e, "shutdown");
                return Poll::Ready(Ok(()));
            }
            linger.fin_sent = true;
        }
        let mut scratch = [0u8; 8192];
        loop {
            if linger.left == 0
                || linger.until.as_mut().poll(cx).is_ready()
                || linger.quiet.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    linger.left = linger.left.saturating_sub(buf.filled().len());
                    let again = tokio::time::Instant::now() + LINGER_QUIET;
                    linger.quiet.as_mut().reset(again);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
