//! [`RywLayer`]: hands the configuration to [`Session`](crate::Session) on
//! the way in, and on the way out turns the handler's [`Served`] into the
//! consistency headers, on every response, errors included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use ryw_router::{Committed, Decision, Position, Strategy};
use tower::{Layer, Service};

use crate::{Ryw, X_CONSISTENCY_TOKEN, X_RYW_WRITE_LOST, X_SERVED_BY, X_WAITED_FOR, X_WAITED_MS};

/// What served a request and the session's token after it. Return it as a
/// response part (`(Served::from(&read.decision), Json(body))`); the layer
/// turns it into `X-Served-By`, `X-Consistency-Token`, for reads
/// `X-Waited-Ms` (and `X-Waited-For`), and `X-Ryw-Write-Lost` when a
/// failover lost a write of the session. It stays in the response's
/// extensions for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// `leader`, a follower's name, or `none`.
    pub node: Arc<str>,
    /// The session's position after the request.
    pub token: Option<Position>,
    /// A write of the session that a failover lost, if this request
    /// learnt of one.
    pub lost: Option<Position>,
    /// The strategy that routed the read (reads only).
    pub strategy: Option<Strategy>,
    /// How long the read waited for a follower (reads only).
    pub waited: Option<Duration>,
    /// The follower a `hybrid` read waited for, when it waited.
    pub waited_for: Option<Arc<str>>,
}

impl Served {
    /// A write: the leader, and the write's token.
    pub fn write(committed: Committed) -> Served {
        Served {
            node: Arc::from(ryw_router::LEADER_NAME),
            token: Some(committed.token),
            lost: committed.lost,
            strategy: None,
            waited: None,
            waited_for: None,
        }
    }

    /// An answer that involved no node's data.
    pub fn none() -> Served {
        Served {
            node: Arc::from("none"),
            token: None,
            lost: None,
            strategy: None,
            waited: None,
            waited_for: None,
        }
    }
}

impl From<&Decision> for Served {
    fn from(d: &Decision) -> Served {
        Served {
            node: d.node.clone(),
            token: d.token,
            lost: d.lost,
            strategy: Some(d.strategy),
            waited: Some(if d.did_wait { d.waited } else { Duration::ZERO }),
            waited_for: d.waited_for.clone(),
        }
    }
}

impl IntoResponseParts for Served {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

impl IntoResponse for Served {
    /// An empty `200 OK` that carries the headers (a write that answers
    /// nothing else).
    fn into_response(self) -> Response {
        let mut resp = StatusCode::OK.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The tower layer of [`Ryw::layer`].
#[derive(Clone, Debug)]
pub struct RywLayer {
    cfg: Arc<Ryw>,
}

impl RywLayer {
    pub(crate) fn new(cfg: Arc<Ryw>) -> RywLayer {
        RywLayer { cfg }
    }
}

impl<S> Layer<S> for RywLayer {
    type Service = RywService<S>;

    fn layer(&self, inner: S) -> RywService<S> {
        RywService {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// The service [`RywLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct RywService<S> {
    inner: S,
    cfg: Arc<Ryw>,
}

impl<S> Service<Request> for RywService<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let cfg = self.cfg.clone();
        // Kept raw, verified only if the answer needs it (an error answered
        // before any node was involved): on the common path the extractor
        // has verified it already.
        let client_token = req.headers().get(X_CONSISTENCY_TOKEN).cloned();
        req.extensions_mut().insert(cfg.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let served = resp.extensions().get::<Served>().cloned();
            set_headers(&cfg, resp.headers_mut(), served, client_token.as_ref());
            Ok(resp)
        })
    }
}

/// The consistency headers: from `served`, or for an answer that involved
/// no node, `none` and the client's own token back (when it verifies), so
/// the client loses nothing by an error.
fn set_headers(
    cfg: &Ryw,
    headers: &mut HeaderMap,
    served: Option<Served>,
    client_token: Option<&HeaderValue>,
) {
    let (node, token, lost, waited, waited_for) = match served {
        Some(s) => (s.node, s.token, s.lost, s.waited, s.waited_for),
        None => {
            let verified = client_token
                .and_then(|v| v.to_str().ok())
                .and_then(|t| cfg.key.verify(t.trim()).ok());
            (Arc::from("none"), verified, None, None, None)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&node) {
        headers.insert(X_SERVED_BY, v);
    }
    // The signed text becomes the header's bytes as it is (no copy).
    let signed = Bytes::from(cfg.key.sign(token.unwrap_or_default()));
    if let Ok(v) = HeaderValue::from_maybe_shared(signed) {
        headers.insert(X_CONSISTENCY_TOKEN, v);
    }
    if let Some(v) = lost.and_then(|p| HeaderValue::from_str(&p.lsn.to_string()).ok()) {
        headers.insert(X_RYW_WRITE_LOST, v);
    }
    if let Some(waited) = waited {
        headers.insert(X_WAITED_MS, HeaderValue::from(whole_ms_up(waited)));
    }
    if let Some(v) = waited_for.and_then(|f| HeaderValue::from_str(&f).ok()) {
        headers.insert(X_WAITED_FOR, v);
    }
}

/// Milliseconds rounded up, so that a read that waited at all says so.
fn whole_ms_up(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Problem, Session};
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use ryw_router::{Lsn, TokenKey};
    use tower::ServiceExt;

    fn ryw() -> Ryw {
        Ryw::new(TokenKey::from_secret("sixteen bytes at least!").unwrap()).session_header("x-user")
    }

    async fn call(app: Router, headers: &[(&str, &str)]) -> Response {
        let mut req = axum::http::Request::get("/").body(Body::empty()).unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        app.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn a_handler_gets_its_session_and_the_response_its_headers() {
        let r = ryw();
        let app = Router::new()
            .route(
                "/",
                get(|s: Session| async move {
                    let sent = s.client_token.unwrap_or_default();
                    let token = Position::new(2, sent.lsn.checked_add(8).unwrap());
                    let served = Served {
                        node: Arc::from("follower1"),
                        token: Some(token),
                        lost: Some(Position::new(1, Lsn::from_u64(0x3000060))),
                        strategy: Some(Strategy::Hybrid),
                        waited: Some(Duration::from_micros(2_100)),
                        waited_for: Some(Arc::from("follower1")),
                    };
                    (served, s.key.to_string())
                }),
            )
            .layer(r.layer());
        let sent = r.key().sign(Position::new(2, Lsn::from_u64(100)));
        let resp = call(app, &[("x-user", "alice"), ("x-consistency-token", &sent)]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[X_SERVED_BY], "follower1");
        assert_eq!(resp.headers()[X_WAITED_MS], "3", "2.1 ms, rounded up");
        assert_eq!(resp.headers()[X_WAITED_FOR], "follower1");
        let back = r
            .key()
            .verify(resp.headers()[X_CONSISTENCY_TOKEN].to_str().unwrap());
        assert_eq!(back.unwrap(), Position::new(2, Lsn::from_u64(108)));
        assert_eq!(resp.headers()[X_RYW_WRITE_LOST], "0/3000060");
        assert!(resp.extensions().get::<Served>().is_some(), "kept for logs");
    }

    #[test]
    fn a_wait_of_any_length_shows_as_at_least_a_millisecond() {
        assert_eq!(whole_ms_up(Duration::ZERO), 0);
        assert_eq!(whole_ms_up(Duration::from_micros(1)), 1);
        assert_eq!(whole_ms_up(Duration::from_micros(1_000)), 1);
        assert_eq!(whole_ms_up(Duration::from_micros(1_001)), 2);
    }

    #[tokio::test]
    async fn errors_carry_no_node_and_the_clients_own_token_back() {
        let r = ryw();
        let app = Router::new()
            .route(
                "/",
                get(|_: Session| async {
                    Problem::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "nothing",
                        "Nothing",
                        "none here",
                    )
                }),
            )
            .layer(r.layer());
        let sent = r.key().sign(Lsn::from_u64(77));
        let resp = call(
            app.clone(),
            &[("x-user", "bob"), ("x-consistency-token", &sent)],
        )
        .await;
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[X_SERVED_BY], "none");
        assert_eq!(resp.headers()[X_CONSISTENCY_TOKEN], sent.as_str());

        // A refused token: 400 problem+json, and no token is echoed.
        let resp = call(
            app,
            &[("x-user", "bob"), ("x-consistency-token", "v1.forged")],
        )
        .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let zero = r
            .key()
            .verify(resp.headers()[X_CONSISTENCY_TOKEN].to_str().unwrap());
        assert_eq!(zero.unwrap(), Position::default());
    }

    #[tokio::test]
    async fn without_the_layer_the_extractor_says_so() {
        let app = Router::new().route("/", get(|_: Session| async { "unreachable" }));
        let resp = call(app, &[("x-user", "carol")]).await;
        assert_eq!(resp.status(), 500);
    }
}
