//! A byte stream whose ends travel inside messages: the way to move data
//! of any size, far beyond `max_message`, with the channels' credit bounds.
//!
//! A [`Writer`] is an [`AsyncWrite`]; a [`Reader`] is an [`AsyncRead`] and
//! an [`AsyncBufRead`]. Either end can be sent in a message, before or
//! while the stream flows. Underneath, the bytes go as [`Blob`]s on a
//! channel: written bytes are gathered into pieces of up to [`PIECE`]
//! bytes, a piece of 4 KiB or more travels without being copied into its
//! message, and a reader hands out slices of the buffers the pieces arrived
//! in. [`Writer::write_bytes`] and [`Reader::read_bytes`] move whole
//! [`Bytes`] without copying them. Pieces of 4 KiB or more are not
//! compressed (see [`Compression`](crate::Compression)).
//!
//! The end of the stream is said, not guessed: a reader returns end of
//! file only after the writer was shut down
//! ([`AsyncWriteExt::shutdown`]). A writer dropped without that, or a
//! connection that ended, is an
//! [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) or connection error
//! at the reader, so a cut transfer never looks complete; so is a piece
//! that does not decode, and every read after it.
//!
//! [`AsyncWriteExt::shutdown`]: tokio::io::AsyncWriteExt::shutdown
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let (mut writer, mut reader) = tether::pipe::channel();
//! tokio::spawn(async move {
//!     writer.write_all(b"any number of bytes").await?;
//!     writer.shutdown().await // the reader sees the end of the stream
//! });
//! let mut text = String::new();
//! reader.read_to_string(&mut text).await?;
//! assert_eq!(text, "any number of bytes");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use super::{mpsc, Blob, RecvError};

/// The most bytes a writer gathers before it sends them: large enough that
/// a piece costs little beside its bytes, small enough that a writer holds
/// little and a reader starts early.
pub const PIECE: usize = 64 * 1024;

/// Pieces a local (not yet travelled) pipe holds between its ends; across a
/// connection the bound is the port's credit window instead.
const LOCAL_PIECES: usize = 16;

/// What goes down the channel.
#[derive(Serialize, Deserialize)]
enum Piece {
    Bytes(Blob),
    /// The writer was shut down: nothing follows.
    End,
}

/// Creates a byte stream: what is written to the [`Writer`] is read from
/// the [`Reader`].
pub fn channel() -> (Writer, Reader) {
    let (tx, rx) = mpsc::channel(LOCAL_PIECES);
    (Writer::new(tx), Reader::new(rx, Bytes::new(), false))
}

type Sending = Pin<Box<dyn Future<Output = Result<(), mpsc::SendError<Piece>>> + Send>>;

/// The writing end of a pipe.
pub struct Writer {
    tx: mpsc::Sender<Piece>,
    /// Written bytes not yet sent.
    gathered: BytesMut,
    /// The piece being sent; a writer sends one at a time.
    sending: Option<Sending>,
    /// Shut down: the end was sent (or is being sent).
    shut: bool,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("pipe::Writer").field("tx", &self.tx).field("gathered", &self.gathered.len()).finish()
    }
}

fn send_error(e: mpsc::SendError<Piece>) -> io::Error {
    let kind = if e.is_closed() { io::ErrorKind::BrokenPipe } else { io::ErrorKind::Other };
    io::Error::new(kind, e.split().1)
}

fn shut_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the pipe's writer was shut down")
}

impl Writer {
    fn new(tx: mpsc::Sender<Piece>) -> Self {
        Writer { tx, gathered: BytesMut::new(), sending: None, shut: false }
    }

    /// Starts sending `piece`; the previous one must be done.
    fn start(&mut self, piece: Piece) {
        debug_assert!(self.sending.is_none());
        let tx = self.tx.clone();
        self.sending = Some(Box::pin(async move { tx.send(piece).await }));
    }

    /// Waits until the piece being sent (if any) is on its way.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(sending) = &mut self.sending {
            let result = ready!(sending.as_mut().poll(cx));
            self.sending = None;
            result.map_err(send_error)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends everything gathered; ready once it is on its way.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_sent(cx))?;
        if !self.gathered.is_empty() {
            let piece = self.gathered.split().freeze();
            self.start(Piece::Bytes(Blob::from(piece)));
            ready!(self.poll_sent(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `bytes` as a piece of its own, without copying them; what was
    /// written before goes first. Returns once the piece is on its way (the
    /// connection took it, within the reader's credit).
    pub async fn write_bytes(&mut self, bytes: Bytes) -> io::Result<()> {
        if self.shut {
            return Err(shut_error());
        }
        std::future::poll_fn(|cx| self.poll_send_gathered(cx)).await?;
        if !bytes.is_empty() {
            self.start(Piece::Bytes(Blob::from(bytes)));
            std::future::poll_fn(|cx| self.poll_sent(cx)).await?;
        }
        Ok(())
    }

    fn poll_shut(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_gathered(cx))?;
        if !self.shut {
            self.shut = true;
            self.start(Piece::End);
        }
        self.poll_sent(cx)
    }
}

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Err(shut_error()));
        }
        if this.gathered.len() >= PIECE {
            ready!(this.poll_send_gathered(cx))?;
        }
        if this.gathered.capacity() == 0 {
            // A whole piece at once, not grown write by write.
            this.gathered.reserve(PIECE);
        }
        let n = buf.len().min(PIECE - this.gathered.len());
        this.gathered.extend_from_slice(&buf[..n]);
        if this.gathered.len() >= PIECE {
            // Start the piece now; its credit is waited for by the next write.
            if let Poll::Ready(Err(e)) = this.poll_send_gathered(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_gathered(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shut(cx)
    }
}

/// A writer travels only when nothing of it is in hand here: flushed, not
/// shut down.
impl Serialize for Writer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.gathered.is_empty() || self.sending.is_some() {
            return Err(crate::codec::ser_error("a pipe writer must be flushed before it is sent"));
        }
        if self.shut {
            return Err(crate::codec::ser_error("a pipe writer that was shut down cannot be sent"));
        }
        self.tx.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Writer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Writer::new(mpsc::Sender::deserialize(d)?))
    }
}

/// The reading end of a pipe.
pub struct Reader {
    rx: mpsc::Receiver<Piece>,
    /// What is left of the last piece.
    rest: Bytes,
    /// The writer's end was read.
    ended: bool,
    /// The stream broke (a piece lost, or cut off): every read after says
    /// so, as a stream with a hole in it is no stream.
    broken: Option<io::ErrorKind>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("pipe::Reader").field("rest", &self.rest.len()).field("ended", &self.ended).finish()
    }
}

fn recv_error(e: RecvError) -> io::Error {
    let kind = match e {
        RecvError::Decode(_) => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}

impl Reader {
    fn new(rx: mpsc::Receiver<Piece>, rest: Bytes, ended: bool) -> Self {
        Reader { rx, rest, ended, broken: None }
    }

    /// Makes `rest` non-empty unless the stream ended; an error if it ended
    /// without the writer saying so.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.rest.is_empty() && !self.ended {
            if let Some(kind) = self.broken {
                return Poll::Ready(Err(io::Error::new(kind, "the pipe broke earlier")));
            }
            let error = match ready!(self.rx.poll_recv(cx)) {
                Ok(Some(Piece::Bytes(blob))) => {
                    self.rest = blob.into_bytes();
                    continue;
                }
                Ok(Some(Piece::End)) => {
                    self.ended = true;
                    continue;
                }
                Ok(None) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the pipe's writer was dropped without being shut down",
                ),
                Err(e) => recv_error(e),
            };
            self.broken = Some(error.kind());
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(()))
    }
}

impl Reader {
    /// The next bytes of the stream as they arrived, without copying them
    /// (a piece at a time, or what is left of one); `None` after the
    /// writer's end.
    pub async fn read_bytes(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        Ok(if self.rest.is_empty() { None } else { Some(std::mem::take(&mut self.rest)) })
    }
}

impl AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx))?;
        let n = this.rest.len().min(buf.remaining());
        buf.put_slice(&this.rest[..n]);
        this.rest.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for Reader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx))?;
        Poll::Ready(Ok(&this.rest))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().rest.advance(amt);
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    /// Bytes this end received and nobody read: they travel with it.
    rest: &'a Blob,
    ended: bool,
    rx: &'a mpsc::Receiver<Piece>,
}

#[derive(Deserialize)]
struct Wire {
    rest: Blob,
    ended: bool,
    rx: mpsc::Receiver<Piece>,
}

/// A reader travels with the bytes it received and did not hand out, so
/// it can be sent in the middle of the stream; a broken one does not travel
/// (its hole would not go with it).
impl Serialize for Reader {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.broken.is_some() {
            return Err(crate::codec::ser_error("a broken pipe reader cannot be sent"));
        }
        let rest = Blob::from(self.rest.clone());
        WireRef { rest: &rest, ended: self.ended, rx: &self.rx }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        Ok(Reader::new(wire.rx, wire.rest.into_bytes(), wire.ended))
    }
}
