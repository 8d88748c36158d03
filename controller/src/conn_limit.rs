//! Bounds on connections: a cap on those served at once (`--max-connections`), an acceptor that
//! takes a permit for each accepted connection and gives it back when the connection closes (a
//! connection over the cap is closed at once, so a flood of connections cannot exhaust the
//! process's file descriptors or memory); and a deadline for a connection's first byte
//! ([`FirstByteAcceptor`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Wraps an inner acceptor (TCP_NODELAY, say) with the cap.
#[derive(Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl<A> LimitAcceptor<A> {
    pub fn new(inner: A, max: usize) -> LimitAcceptor<A> {
        LimitAcceptor {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Connections closed because the cap was reached, since start.
    pub fn refused(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }
}

impl<I, S, A> Accept<I, S> for LimitAcceptor<A>
where
    A: Accept<I, S> + Clone + Send + 'static,
    A::Future: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Limited<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let (inner, refused) = (self.inner.clone(), self.refused.clone());
        Box::pin(async move {
            let Ok(permit) = permit else {
                // Log the first refusal and then every 1000th, not each one of a flood.
                if refused.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                    tracing::warn!(
                        "connection limit reached (--max-connections); closing new connections"
                    );
                }
                drop(stream);
                return Err(io::Error::other("connection limit reached"));
            };
            let (stream, service) = inner.accept(stream, service).await?;
            Ok((
                Limited {
                    inner: stream,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection holding its permit until it is dropped.
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Closes a connection that has not sent its first [`FIRST_BYTES`] within a deadline after it was
/// accepted (and, for TLS, after its handshake): hyper's header timeout starts only once it
/// has told HTTP/1 from HTTP/2 (by the 24-byte HTTP/2 preface), so a silent or stalled connection
/// would otherwise hold its `--max-connections` permit for ever. Every HTTP/1.1 request (with
/// its `Host` header) is longer than that.
#[derive(Clone)]
pub struct FirstByteAcceptor<A> {
    inner: A,
    within: std::time::Duration,
}

impl<A> FirstByteAcceptor<A> {
    pub fn new(inner: A, within: std::time::Duration) -> FirstByteAcceptor<A> {
        FirstByteAcceptor { inner, within }
    }
}

impl<I, S, A> Accept<I, S> for FirstByteAcceptor<A>
where
    A: Accept<I, S> + Clone + Send + 'static,
    A::Future: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = FirstByte<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let (inner, within) = (self.inner.clone(), self.within);
        Box::pin(async move {
            let (stream, service) = inner.accept(stream, service).await?;
            let deadline = Some(Box::pin(tokio::time::sleep(within)));
            Ok((
                FirstByte {
                    inner: stream,
                    deadline,
                    seen: 0,
                },
                service,
            ))
        })
    }
}

/// Bytes a connection must send before its deadline: the length of the HTTP/2 preface.
pub const FIRST_BYTES: usize = 24;

/// A connection that must deliver its first [`FIRST_BYTES`] before its deadline.
pub struct FirstByte<T> {
    inner: T,
    /// Until the first bytes have arrived.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    seen: usize,
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstByte<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                self.seen += buf.filled().len() - before;
                if self.seen >= FIRST_BYTES {
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                )))
            }
            other => other,
        }
    }
}

/// Writes go straight to the wrapped connection (only reads are watched).
macro_rules! forward_writes {
    ($wrapper:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
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
        }
    };
}

forward_writes!(Limited);
forward_writes!(FirstByte);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn guarded(server: tokio::io::DuplexStream) -> FirstByte<tokio::io::DuplexStream> {
        FirstByte {
            inner: server,
            deadline: Some(Box::pin(tokio::time::sleep(Duration::from_secs(10)))),
            seen: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_stays_silent_or_stalls_is_closed() {
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = guarded(server);
        let err = conn.read(&mut [0u8; 8]).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // One byte (the start of an HTTP/2 preface) is not enough.
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = guarded(server);
        client.write_all(b"P").await.expect("write");
        assert_eq!(conn.read(&mut [0u8; 8]).await.expect("a byte"), 1);
        let err = conn.read(&mut [0u8; 8]).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_request_may_then_wait_as_long_as_it_likes() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = guarded(server);
        let request = b"GET /v1/agents/1/1/cmd HTTP/1.1\r\n";
        client.write_all(request).await.expect("write");
        let mut buf = vec![0u8; request.len()];
        conn.read_exact(&mut buf).await.expect("the request");
        // A long-poll: the client sends nothing more for a minute; no error.
        let idle = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut [0u8; 8])).await;
        assert!(idle.is_err(), "still open and waiting");
    }
}
