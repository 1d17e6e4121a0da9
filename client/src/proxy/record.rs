//! A stream that keeps a copy of the first bytes it reads. hyper-util's
//! `Tunnel` reports any non-200, non-407 answer as just "unsuccessful";
//! the copy lets the error quote the proxy's status line instead.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::MAX_RESPONSE_HEAD;

/// What the proxy sent, up to [`MAX_RESPONSE_HEAD`] bytes.
pub(crate) type Recording = Arc<Mutex<Vec<u8>>>;

#[derive(Debug)]
pub struct Recorded<S> {
    inner: S,
    recording: Option<Recording>,
}

impl<S> Recorded<S> {
    pub(crate) fn new(inner: S) -> (Recorded<S>, Recording) {
        let recording = Recording::default();
        let stream = Recorded {
            inner,
            recording: Some(recording.clone()),
        };
        (stream, recording)
    }

    /// Once the tunnel is up what follows is the broker's TLS: not ours to
    /// keep.
    pub(crate) fn stop_recording(&mut self) {
        self.recording = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if let Some(recording) = &self.recording {
            let fresh = &buf.filled()[before..];
            let mut kept = recording.lock().unwrap_or_else(|e| e.into_inner());
            let room = MAX_RESPONSE_HEAD.saturating_sub(kept.len());
            kept.extend_from_slice(&fresh[..fresh.len().min(room)]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
