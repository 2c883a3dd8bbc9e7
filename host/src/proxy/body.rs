//! The body type shared by every hop, and helpers to build streaming bodies.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// Errors carried inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response Hawser builds.
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Sending half of a [`channel`] body.
pub type BodySender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// A streaming body fed through a bounded channel: at most `frames` chunks wait in
/// memory, so a slow reader slows the writer instead of growing a buffer.
pub fn channel(frames: usize) -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel(frames);
    (tx, BoxBody::new(ChannelBody { rx }))
}

/// The receiving half of [`channel`], as a body.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// Wraps `body` so the returned receiver fires when the body has ended, failed or
/// been dropped (the client went away): the moment a response is complete.
pub fn on_end(body: Body) -> (Body, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (
        BoxBody::new(EndNotify {
            inner: body,
            done: Some(tx),
        }),
        rx,
    )
}

struct EndNotify {
    inner: Body,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl hyper::body::Body for EndNotify {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(
            poll,
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_)))
        ) {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(());
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for EndNotify {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}
