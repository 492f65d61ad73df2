//! Serving connections: hyper (HTTP/1.1 and HTTP/2, h2c by prior knowledge) under poem's
//! routes, with the limits poem's own `Server` does not have.
//!
//! - A request head must arrive whole within `head_timeout`, however slowly it trickles in
//!   (hyper's `header_read_timeout`, a total deadline, not an idle one). The first request's
//!   clock starts at accept, so it also covers protocol detection and HTTP/2's preface.
//! - A request body must arrive within `body_timeout` of its head, and is cut at
//!   `MAX_BODY_BYTES` on every protocol, whatever `Content-Length` or
//!   `Transfer-Encoding` say (HTTP/2 needs neither): `BoundedBody` wraps every body before
//!   poem sees it, so nothing can read past the limit. `limit_body` turns its errors into
//!   413 / 408 problem documents.
//! - A connection with no request in flight for `idle_timeout` is closed (HTTP/2 with a
//!   GOAWAY first).
//! - At most `max_connections` are open at once; the next one is not accepted until one closes
//!   (it waits in the kernel's listen backlog).
//! - HTTP/2 receive windows are small (64 KiB a stream, 256 KiB a connection), so an unread
//!   upload costs at most that much memory per connection.
//!
//! Malformed requests that hyper rejects itself (a bad request line, a malformed
//! `Content-Length`) get hyper's bare `400 Bad Request` and the connection is closed; they never
//! reach our code, so they carry no problem document.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use poem::{Endpoint, EndpointExt as _, IntoEndpoint};
use shared::config::TransportLimits;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::MAX_BODY_BYTES;

/// Streams a stream may have open at once on one HTTP/2 connection (the RFC's suggested minimum).
const HTTP2_MAX_STREAMS: u32 = 100;
/// HTTP/2 receive windows: what a client may send before we read it.
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Largest HTTP/2 header block, and HTTP/1.1 read buffer (which bounds a request head).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// After a GOAWAY / keep-alive close, how long a connection may take to finish closing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `ep` on `listener` until `shutdown` resolves; then stops accepting, lets requests in
/// flight finish for up to `grace` and closes what is left.
pub async fn serve<E>(
    listener: TcpListener,
    ep: E,
    limits: TransportLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let ep: Arc<dyn poem::endpoint::DynEndpoint<Output = poem::Response>> =
        Arc::new(poem::endpoint::ToDynEndpoint(ep.into_endpoint().map_to_response()));
    let local_addr = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let draining = CancellationToken::new();
    let closing = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, remote_addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before we took it: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            ep: ep.clone(),
            local_addr,
            remote_addr,
            limits,
            draining: draining.clone(),
            closing: closing.clone(),
        };
        tracker.spawn(async move {
            let stream = Arc::new(stream);
            conn.run(SharedStream(stream.clone())).await;
            linger(stream).await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    draining.cancel();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(connections = tracker.len(), "closing connections still open after the grace period");
        closing.cancel();
        tracker.wait().await;
    }
    Ok(())
}

struct Connection {
    ep: Arc<dyn poem::endpoint::DynEndpoint<Output = poem::Response>>,
    local_addr: SocketAddr,
    remote_addr: SocketAddr,
    limits: TransportLimits,
    /// Server shutdown: finish what is in flight, take nothing new.
    draining: CancellationToken,
    /// Grace period over: close now.
    closing: CancellationToken,
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// When the connection last became idle; `None` until the first request arrives.
    idle_since: Mutex<Option<Instant>>,
    changed: tokio::sync::Notify,
}

/// One request in flight, until its response body has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.changed.notify_one();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().expect("not poisoned") = Some(Instant::now());
        }
        self.0.changed.notify_one();
    }
}

impl Connection {
    async fn run(self, stream: SharedStream) {
        let accepted = Instant::now();
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        });
        let service = {
            let (ep, activity) = (self.ep.clone(), activity.clone());
            let local = poem::web::LocalAddr(poem::Addr::SocketAddr(self.local_addr));
            let remote = poem::web::RemoteAddr(poem::Addr::SocketAddr(self.remote_addr));
            let body_timeout = self.limits.body_timeout;
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let in_flight = InFlight::new(activity.clone());
                let ep = ep.clone();
                let mut req =
                    poem::Request::from((req, local.clone(), remote.clone(), poem::http::uri::Scheme::HTTP));
                let body = BoundedBody::new(req.take_body().into(), MAX_BODY_BYTES, body_timeout);
                req.set_body(poem::Body::from(BoxBody::new(body)));
                async move {
                    let response: hyper::Response<BoxBody<Bytes, io::Error>> =
                        ep.get_response(req).await.into();
                    Ok::<_, Infallible>(
                        response.map(|body| TrackedBody { inner: body, _in_flight: in_flight }),
                    )
                }
            })
        };

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.head_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(HTTP2_MAX_STREAMS)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .max_pending_accept_reset_streams(20);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);

        // With nothing in flight, the connection is closed at its deadline: the head deadline
        // from accept until the first request arrives, then the idle timeout from the end of
        // the last response; once closing (GOAWAY sent, or server shutdown), a short grace.
        let mut closing_since: Option<Instant> = None;
        loop {
            let deadline = (activity.in_flight.load(Ordering::SeqCst) == 0).then(|| {
                let idle_since = *activity.idle_since.lock().expect("not poisoned");
                match (closing_since, idle_since) {
                    (Some(closing), idle) => closing.max(idle.unwrap_or(closing)) + CLOSE_GRACE,
                    (None, Some(idle)) => idle + self.limits.idle_timeout,
                    (None, None) => accepted + self.limits.head_timeout,
                }
            });
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                () = self.closing.cancelled() => return,
                () = self.draining.cancelled(), if closing_since.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
                () = activity.changed.notified() => {}
                () = expired => {
                    if closing_since.is_some() {
                        // Asked to close and still open with nothing in flight: a half-sent
                        // head, or a client that does not close its end.
                        return;
                    }
                    tracing::debug!(remote_addr = %self.remote_addr, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
    }
}

/// Why reading a request body failed (inside the `io::Error` poem sees).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyLimitError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive in time")]
    TimedOut,
}

impl BodyLimitError {
    /// The limit error behind a body read error, if that is what it was.
    pub(crate) fn find(err: &io::Error) -> Option<&Self> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
        while let Some(e) = source {
            if let Some(found) = e.downcast_ref::<Self>() {
                return Some(found);
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                source = io.get_ref().map(|e| e as _);
            } else {
                source = e.source();
            }
        }
        None
    }
}

/// A request body that fails once more than `limit` bytes arrive or its deadline passes.
pub(crate) struct BoundedBody {
    inner: BoxBody<Bytes, io::Error>,
    limit: usize,
    remaining: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    failed: bool,
}

impl BoundedBody {
    pub(crate) fn new(inner: BoxBody<Bytes, io::Error>, limit: usize, timeout: Duration) -> Self {
        Self {
            inner,
            limit,
            remaining: limit,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            failed: false,
        }
    }

    fn fail(
        &mut self,
        kind: io::ErrorKind,
        err: BodyLimitError,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.failed = true;
        Poll::Ready(Some(Err(io::Error::new(kind, err))))
    }
}

impl http_body::Body for BoundedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if this.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(io::ErrorKind::TimedOut, BodyLimitError::TimedOut);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if data.len() > this.remaining {
                        let limit = this.limit;
                        return this.fail(io::ErrorKind::InvalidData, BodyLimitError::TooLarge(limit));
                    }
                    this.remaining -= data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let cap = self.remaining as u64;
        if hint.lower() > cap {
            return SizeHint::with_exact(cap);
        }
        if hint.upper().is_none_or(|upper| upper > cap) {
            hint.set_upper(cap);
        }
        hint
    }
}

/// How long a closed connection's unread input is read and dropped, at most (a client that
/// has seen its answer stops sending at once; there is no byte cap, so a fast client is not
/// reset before it has read the answer).
const LINGER: Duration = Duration::from_secs(2);

/// Closes a connection the way nginx's `lingering_close` does: send our FIN, then read and drop
/// what the client still sends (the rest of a refused upload) for a moment. Closing a socket
/// with unread input sends a reset, which can destroy the answer (a 413) before the client has
/// read it.
async fn linger(stream: Arc<tokio::net::TcpStream>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = Arc::try_unwrap(stream) else { return };
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(1..) = stream.read(&mut buf).await {}
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The connection's socket, shared so that it outlives hyper's connection for [`linger`].
/// Shutting down is left to [`linger`].
struct SharedStream(Arc<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
struct TrackedBody {
    inner: BoxBody<Bytes, io::Error>,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn body_of(chunks: Vec<&'static [u8]>) -> BoxBody<Bytes, io::Error> {
        let stream = futures::stream::iter(
            chunks.into_iter().map(|c| Ok::<_, io::Error>(Frame::data(Bytes::from(c)))),
        );
        BoxBody::new(http_body_util::StreamBody::new(stream))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_reads_whole_and_one_byte_more_fails() {
        let ok = BoundedBody::new(body_of(vec![b"abc", b"de"]), 5, Duration::from_secs(5));
        assert_eq!(ok.collect().await.unwrap().to_bytes(), Bytes::from_static(b"abcde"));
        let over = BoundedBody::new(body_of(vec![b"abc", b"def"]), 5, Duration::from_secs(5));
        let err = over.collect().await.unwrap_err();
        assert!(matches!(BodyLimitError::find(&err), Some(BodyLimitError::TooLarge(5))), "{err:?}");
    }

    #[tokio::test]
    async fn a_body_that_does_not_end_fails_at_its_deadline() {
        let never = BoxBody::new(http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, io::Error>,
        >()));
        let started = std::time::Instant::now();
        let err = BoundedBody::new(never, 5, Duration::from_millis(200)).collect().await.unwrap_err();
        assert!(matches!(BodyLimitError::find(&err), Some(BodyLimitError::TimedOut)), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
