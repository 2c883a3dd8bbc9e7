//! Socket wrappers that give each side of a tunnel a handle on its connection
//! which hyper's connection types do not expose.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pin_project_lite::pin_project! {
    /// The hub's tunnel socket: cut on demand, and reporting when it is gone.
    ///
    /// hyper's HTTP/2 client drives the connection in a task of its own that
    /// outlives the request dispatcher: after the agent's GOAWAY the dispatcher
    /// stops while streams in flight (a watch, an exec) go on. Only through the
    /// socket can the hub still cut such a draining connection (its certificate
    /// was retired, the cluster removed) and learn when it has really closed.
    pub struct Cuttable<T> {
        #[pin]
        inner: T,
        cut: Pin<Box<WaitForCancellationFutureOwned>>,
        // Dropped with the socket, which hyper does once the connection is over.
        _closed: oneshot::Sender<()>,
    }
}

impl<T> Cuttable<T> {
    /// Wraps `inner`: once `cut` fires every read and write fails, and
    /// `closed`'s receiver resolves when the wrapper is dropped.
    pub fn new(inner: T, cut: CancellationToken, closed: oneshot::Sender<()>) -> Cuttable<T> {
        Cuttable {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
            _closed: closed,
        }
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel cut by the hub")
}

impl<T: AsyncRead> AsyncRead for Cuttable<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        // Polling the token registers this task's waker, so a cut wakes a
        // connection parked on a quiet socket.
        if this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(aborted()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Cuttable<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(aborted()));
        }
        this.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(aborted()));
        }
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// The agent's tunnel socket: reports the first bytes the hub sends.
    ///
    /// The hub sends its HTTP/2 preface only after it has admitted the agent and
    /// right before it starts routing requests to the tunnel, so the first bytes
    /// are the agent's evidence that a new tunnel is usable: only then may an old
    /// one be drained.
    pub struct FirstRead<T> {
        #[pin]
        inner: T,
        first: Option<oneshot::Sender<()>>,
    }
}

impl<T> FirstRead<T> {
    /// Wraps `inner`; `first` fires on the first read that returns data.
    pub fn new(inner: T, first: oneshot::Sender<()>) -> FirstRead<T> {
        FirstRead {
            inner,
            first: Some(first),
        }
    }
}

impl<T: AsyncRead> AsyncRead for FirstRead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if let Some(tx) = this.first.take() {
                let _ = tx.send(());
            }
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for FirstRead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_fails_a_parked_read_and_drop_reports_closed() {
        let (a, mut b) = tokio::io::duplex(64);
        let cut = CancellationToken::new();
        let (tx, mut closed) = oneshot::channel();
        let mut io = Cuttable::new(a, cut.clone(), tx);
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        // Nothing more to read: the read parks until the cut wakes it.
        let reader = tokio::spawn(async move {
            let mut one = [0u8; 1];
            let err = io.read(&mut one).await.unwrap_err();
            (err.kind(), io)
        });
        assert!(closed.try_recv().is_err());
        cut.cancel();
        let (kind, io) = reader.await.unwrap();
        assert_eq!(kind, io::ErrorKind::ConnectionAborted);
        drop(io);
        assert!(matches!(
            closed.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[tokio::test]
    async fn first_read_fires_once_data_arrives() {
        let (a, mut b) = tokio::io::duplex(64);
        let (tx, mut first) = oneshot::channel();
        let mut io = FirstRead::new(a, tx);
        io.write_all(b"out").await.unwrap();
        assert!(first.try_recv().is_err(), "writing is not hearing");
        b.write_all(b"in").await.unwrap();
        let mut buf = [0u8; 2];
        io.read_exact(&mut buf).await.unwrap();
        assert!(first.try_recv().is_ok());
    }
}
