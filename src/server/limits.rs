//! The gRPC listener's limits (`limits.connections`, `limits.concurrent_checks`): past either, the
//! caller is answered at once and unread, and counted. A connection over the limit is closed; a
//! Check over the limit gets a 503 denial with `retry-after: 1` before its message is read. Load
//! is shed rather than queued past Envoy's deadline, and what the server holds for its callers
//! is bounded: at most `concurrent_checks` messages of at most `limits.body_bytes` plus
//! [`HEADERS_BUDGET`](crate::config::HEADERS_BUDGET) each.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::clock::Every;
use crate::metrics::{Handshake, Metrics, Shed};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one method the check limit applies to.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Counts and logs (at most every 10 s) what was shed.
#[derive(Clone)]
pub(crate) struct Shedding {
    pub(crate) metrics: Arc<Metrics>,
    log: Arc<Every>,
    clock: Arc<dyn crate::clock::Clock>,
}

impl Shedding {
    pub(crate) fn new(metrics: Arc<Metrics>, clock: Arc<dyn crate::clock::Clock>) -> Self {
        Shedding {
            metrics,
            log: Arc::new(Every::new()),
            clock,
        }
    }

    fn shed(&self, what: Shed, limit: usize) {
        self.metrics.shed(what);
        if let Some(skipped) = self.log.due(self.clock.now_ms()) {
            tracing::warn!(
                limit,
                what = what.as_str(),
                skipped,
                "over a listener limit: refused at once"
            );
        }
    }
}

/// An accepted connection (after its TLS handshake, with TLS on), holding one of the
/// listener's permits while it is open.
pub(crate) struct Held {
    conn: Conn,
    _permit: OwnedSemaphorePermit,
}

enum Conn {
    Plain(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Held {
    fn io(self: Pin<&mut Self>) -> Pin<&mut (dyn AsyncReadWrite + Unpin)> {
        match &mut self.get_mut().conn {
            Conn::Plain(stream) => Pin::new(stream),
            Conn::Unix(stream) => Pin::new(stream),
            Conn::Tls(stream) => Pin::new(stream.as_mut()),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite> AsyncReadWrite for T {}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    /// Not advertised (so h2 never calls it): over a vectored writer h2 keeps every DATA payload
    /// past 256 bytes as a separate slice, and a frame buffered behind one (the answer's
    /// trailers, the next answer) waits for a write of its own. An allow answer is 0.8 KiB, so
    /// each cost two `writev(2)` and none were batched. Told the writer is not vectored, h2
    /// copies payloads up to 1 KiB into its buffer: a burst of answers goes out in one write.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

impl Connected for Held {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.conn {
            Conn::Plain(stream) => stream.connect_info(),
            // A Unix socket's peer has no address.
            Conn::Unix(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
            Conn::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

/// A connection that has not sent its first byte (plaintext) or finished its TLS handshake by
/// then is dropped: a client holding a connection permit without ever speaking.
const FIRST_WORDS: Duration = Duration::from_secs(3);

/// An idle TCP connection is probed after this long, then every [`PROBE_EVERY`]; after
/// [`PROBES`] unanswered probes the kernel closes it (a peer gone away: about 60 s).
const IDLE_BEFORE_PROBES: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBES: u32 = 3;

/// Connections accepted from `listener`, at most `limit` open at once (counted from accept,
/// through the TLS handshake when `tls` is set), each TCP one [`tuned`]. One over the limit is
/// closed as soon as it is accepted; one silent for [`FIRST_WORDS`] is closed too. Handshakes
/// run beside the accept loop, so a slow client never holds up the others.
pub(crate) fn connections(
    listener: super::GrpcListener,
    limit: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    shedding: Shedding,
) -> impl futures_util::Stream<Item = std::io::Result<Held>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Held>(64);
    let permits = Arc::new(Semaphore::new(limit));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    // Out of file descriptors, or the peer gone before accept: the listener
                    // itself is fine. A moment's pause keeps a persistent error from spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                drop(stream);
                shedding.shed(Shed::Connections, limit);
                continue;
            };
            let tx = tx.clone();
            let stream = match (stream, &acceptor) {
                (super::Accepted::Tcp(stream), Some(_)) => stream,
                (stream, _) => {
                    tokio::spawn(async move {
                        // The HTTP/2 preface's first byte, or the connection goes.
                        let spoke = tokio::time::timeout(FIRST_WORDS, stream.first_words());
                        if let Ok(Ok(conn)) = spoke.await {
                            let held = Held {
                                conn,
                                _permit: permit,
                            };
                            let _ = tx.send(held).await;
                        }
                    });
                    continue;
                }
            };
            let Some(acceptor) = &acceptor else {
                continue;
            };
            tuned(&stream);
            let (acceptor, metrics) = (acceptor.clone(), shedding.metrics.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(FIRST_WORDS, acceptor.accept(stream));
                let result = match handshake.await {
                    Ok(Ok(stream)) => {
                        let held = Held {
                            conn: Conn::Tls(Box::new(stream)),
                            _permit: permit,
                        };
                        let _ = tx.send(held).await;
                        Handshake::Ok
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        Handshake::Failed
                    }
                    Err(_) => Handshake::Timeout,
                };
                metrics.tls_handshake(result);
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        let held = rx.recv().await?;
        Some((Ok(held), rx))
    })
}

/// `TCP_NODELAY` (without it, Nagle's algorithm and delayed ACKs hold small HTTP/2 frames back
/// for tens of milliseconds) and TCP keepalive, so a connection whose peer went away (a crashed
/// node, a half-open socket) gives its place back. The kernel probes only idle connections; an
/// HTTP/2 keepalive would instead take a lock and read the clock for every frame read.
fn tuned(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(IDLE_BEFORE_PROBES)
        .with_interval(PROBE_EVERY)
        .with_retries(PROBES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

impl super::Accepted {
    /// The connection, once its first byte has arrived (a peer that closed at once is an error).
    async fn first_words(self) -> std::io::Result<Conn> {
        match self {
            super::Accepted::Tcp(stream) => {
                tuned(&stream);
                match stream.peek(&mut [0u8; 1]).await? {
                    0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
                    _ => Ok(Conn::Plain(stream)),
                }
            }
            super::Accepted::Unix(stream) => {
                // Readable also when the peer closed: HTTP/2 then reads the end and lets go.
                stream.readable().await?;
                Ok(Conn::Unix(stream))
            }
        }
    }
}

/// The limits on checks, as a layer over the gRPC server's routes: how many at once, and how
/// many bytes of their messages, counted as they are read and held until each is answered.
#[derive(Clone)]
pub(crate) struct Checks {
    permits: Arc<Semaphore>,
    limit: usize,
    /// The message size limit (for the log line of a refusal).
    message_bytes: usize,
    in_flight: Arc<InFlight>,
    shedding: Shedding,
}

impl Checks {
    pub(crate) fn new(limits: crate::app::ListenerLimits, shedding: Shedding) -> Self {
        Checks {
            permits: Arc::new(Semaphore::new(limits.concurrent_checks)),
            limit: limits.concurrent_checks,
            message_bytes: limits.message_bytes,
            in_flight: Arc::new(InFlight {
                held: AtomicUsize::new(0),
                limit: limits.in_flight_bytes,
            }),
            shedding,
        }
    }
}

/// Bytes of Check messages read and not yet answered, against `limits.in_flight_bytes`.
struct InFlight {
    held: AtomicUsize,
    limit: usize,
}

/// One Check's bytes, given back when it is answered (or its call is dropped).
struct Charge {
    in_flight: Arc<InFlight>,
    bytes: AtomicUsize,
    shedding: Shedding,
}

impl Charge {
    /// Counts `n` more bytes; `false` (nothing counted) when that would pass the limit.
    fn take(&self, n: usize) -> bool {
        let held = &self.in_flight.held;
        let taken = held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
            h.checked_add(n)
                .filter(|total| *total <= self.in_flight.limit)
        });
        if taken.is_err() {
            self.shedding
                .shed(Shed::InFlightBytes, self.in_flight.limit);
            return false;
        }
        self.bytes.fetch_add(n, Ordering::AcqRel);
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = self.bytes.load(Ordering::Acquire);
        self.in_flight.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A Check's request body, its bytes charged as they are read.
struct Charged<B> {
    inner: B,
    charge: Arc<Charge>,
}

impl<B> http_body::Body for Charged<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(tonic::Status::from_error(e.into()))));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let n = frame.data_ref().map_or(0, Bytes::len);
        if !this.charge.take(n) {
            let refused = tonic::Status::resource_exhausted(
                "claw-authz: too many bytes of checks in flight (limits.in_flight_bytes)",
            );
            return Poll::Ready(Some(Err(refused)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S> tower_layer::Layer<S> for Checks {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            checks: self.clone(),
        }
    }
}

/// The routes under the check limit.
#[derive(Clone)]
pub(crate) struct Limited<S> {
    inner: S,
    checks: Checks,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Limited<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(self.inner.call(request.map(tonic::body::Body::new)));
        }
        match self.checks.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let charge = Arc::new(Charge {
                    in_flight: self.checks.in_flight.clone(),
                    bytes: AtomicUsize::new(0),
                    shedding: self.checks.shedding.clone(),
                });
                let held = charge.clone();
                let request =
                    request.map(|inner| tonic::body::Body::new(Charged { inner, charge }));
                let answer = self.inner.call(request);
                let (shedding, max) = (self.checks.shedding.clone(), self.checks.message_bytes);
                Box::pin(async move {
                    let mut answered = answer.await;
                    drop((permit, held));
                    if let Ok(response) = &mut answered {
                        too_large(response, &shedding, max);
                    }
                    answered
                })
            }
            Err(_) => {
                self.checks.shedding.shed(Shed::Checks, self.checks.limit);
                let denial = crate::response::overloaded(&uuid::Uuid::new_v4().to_string());
                Box::pin(std::future::ready(Ok(grpc_answer(&denial))))
            }
        }
    }
}

/// tonic refuses a message over its size limit with `OUT_OF_RANGE`; gRPC says
/// `RESOURCE_EXHAUSTED`, which is what Envoy and clients expect. The Check handler itself never
/// answers with an error status, so on this path `OUT_OF_RANGE` is always that refusal.
fn too_large(response: &mut http::Response<tonic::body::Body>, shedding: &Shedding, max: usize) {
    let status = response.headers().get("grpc-status");
    if status.is_some_and(|s| s.as_bytes() == OUT_OF_RANGE) {
        response.headers_mut().insert(
            "grpc-status",
            http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
        );
        shedding.shed(Shed::MessageSize, max);
    }
}

const OUT_OF_RANGE: &[u8] = b"11";
const RESOURCE_EXHAUSTED: &str = "8";

/// A unary gRPC answer carrying `message`: one length-prefixed frame, then `grpc-status: 0`.
fn grpc_answer(message: &[u8]) -> http::Response<tonic::body::Body> {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Frames {
        data: Some(frame.freeze()),
        trailers: Some(trailers),
    };
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A body of one data frame and the trailers.
struct Frames {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        Poll::Ready(
            this.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }
}
