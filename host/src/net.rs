//! The HTTP listener: accepts TCP connections and serves the router on each, with the bounds a
//! daemon facing the internet needs and `axum::serve` does not give.
//!
//! - **Header read timeout** (`[server] header_read_timeout_seconds`): a connection must send a
//!   whole request head within it (hyper's timer, started when the connection is accepted and
//!   again while a kept-alive connection waits for its next request), so a slowloris client
//!   holds a connection for at most that long.
//! - **Body read timeout** (`[server] body_read_timeout_seconds`): a request's whole body must
//!   arrive within it of the handler first reading it. A body that trickles in fails (408
//!   `body_timeout` on the agent routes).
//! - **Connection caps** (`[server] max_connections`, `max_connections_per_ip`): past either,
//!   a new connection gets a fixed 503 `too_many_connections` and is closed. The per-address
//!   cap keys on the TCP peer (headers are not read yet); peers in `trusted_proxies` are exempt
//!   from it (a proxy carries many clients) but not from the total.
//! - **Graceful shutdown**: accepting stops, idle connections close, running requests finish;
//!   whatever is still open after `[server] shutdown_grace_seconds` is dropped, so a slow
//!   client cannot hold the host up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// The listener's bounds, read once at start-up from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to receive a whole request head.
    pub header_read_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections per TCP peer address at most (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// Time given to open connections after shutdown begins.
    pub shutdown_grace: Duration,
    /// Peers exempt from the per-address cap.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl From<&ServerConfig> for Limits {
    fn from(server: &ServerConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
            body_read_timeout: Duration::from_secs(server.body_read_timeout_seconds),
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            shutdown_grace: Duration::from_secs(server.shutdown_grace_seconds),
            trusted_proxies: server.trusted_proxies.clone(),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains as described in the
/// module documentation.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = watch::channel(false);
    let counts = Arc::new(Counts::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let exempt = limits
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer.ip()));
        let Some(slot) = counts.admit(peer.ip(), exempt, &limits) else {
            refuse(&stream, peer);
            continue;
        };
        let router = router.clone();
        let body_timeout = limits.body_read_timeout;
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let body = Body::new(DeadlineBody::new(Body::new(body), body_timeout));
            router.clone().oneshot(Request::from_parts(parts, body))
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let open = connections.len();
    if tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            open,
            still_open = connections.len(),
            "connections still open after the shutdown grace period are dropped"
        );
        connections.abort_all();
    }
}

/// The fixed answer to a connection past a cap. Written without waiting (a fresh socket's send
/// buffer holds it) so refusing costs no task and no time; then the socket is closed.
fn refuse(stream: &TcpStream, peer: SocketAddr) {
    const BODY: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"code":"too_many_connections","detail":"too many open connections; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!(%peer, "connection refused: too many open connections");
}

/// Open connections, in total and per peer address.
#[derive(Default)]
struct Counts {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Counts {
    /// A slot for one more connection from `ip`, or `None` past a cap.
    fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool, limits: &Limits) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= limits.max_connections || (!exempt && mine >= limits.max_connections_per_ip) {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, mine + 1);
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A request body that must arrive whole within a deadline, counted from its first read.
struct DeadlineBody {
    inner: Body,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
        }
    }
}

/// The error a [`DeadlineBody`] fails with (the admission gate answers 408 `body_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
