//! Runs the handshake on a fresh transport.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::ConnectError;
use crate::config::Config;
use crate::transport::Transport;
use crate::wire::{Hello, HelloLimits, VERSION};

/// What the peer told us, and the bytes it sent after its hello.
pub(crate) struct PeerHello {
    pub(crate) hello: Hello,
    pub(crate) rest: BytesMut,
}

fn hello(cfg: &Config, node_id: Uuid, session_id: Uuid, resume_received: u64, resumable: bool) -> Hello {
    Hello {
        version: VERSION,
        node_id,
        codec: cfg.codec.id(),
        session_id,
        resume_received,
        resumable,
        limits: cfg.hello_limits(),
        auth: Vec::new(),
    }
}

async fn send_hello<T: Transport>(io: &mut T, hello: &Hello) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    hello.encode(&mut out);
    io.write_all(&out).await?;
    io.flush().await
}

async fn read_hello<T: Transport>(io: &mut T) -> Result<PeerHello, ConnectError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(hello) = Hello::decode(&mut buf)? {
            return Ok(PeerHello { hello, rest: buf });
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(ConnectError::Eof);
        }
    }
}

async fn within<F: std::future::Future<Output = Result<PeerHello, ConnectError>>>(
    cfg: &Config,
    f: F,
) -> Result<PeerHello, ConnectError> {
    tokio::time::timeout(cfg.handshake_timeout, f).await.map_err(|_| ConnectError::Timeout(cfg.handshake_timeout))?
}

/// The dialing side speaks first: the session it wants (nil for a new one)
/// and how many reliable frames of it it has received.
pub(crate) async fn client<T: Transport>(
    io: &mut T,
    cfg: &Config,
    node_id: Uuid,
    session: Uuid,
    received: u64,
    resumable: bool,
) -> Result<PeerHello, ConnectError> {
    let ours = hello(cfg, node_id, session, received, resumable);
    let peer = within(cfg, async {
        send_hello(io, &ours).await?;
        read_hello(io).await
    })
    .await?;
    check(&ours, &peer.hello)?;
    Ok(peer)
}

/// The accepting side reads first, then answers with the session it takes
/// the connection into and its own resume position, as `session` decides
/// from the dialer's hello. It answers even when it will refuse, so that the
/// dialer can report the mismatch too.
pub(crate) async fn server<T: Transport>(
    io: &mut T,
    cfg: &Config,
    node_id: Uuid,
    session: impl FnOnce(&Hello) -> (Uuid, u64),
) -> Result<PeerHello, ConnectError> {
    within(cfg, async {
        let peer = read_hello(io).await?;
        let (id, received) = session(&peer.hello);
        let ours = hello(cfg, node_id, id, received, false);
        send_hello(io, &ours).await?;
        check(&ours, &peer.hello)?;
        Ok(peer)
    })
    .await
}

fn check(ours: &Hello, theirs: &Hello) -> Result<(), ConnectError> {
    if ours.codec != theirs.codec {
        return Err(ConnectError::CodecMismatch { ours: ours.codec, theirs: theirs.codec });
    }
    let HelloLimits { port_window, conn_window, max_frame, max_message, max_ports } = theirs.limits;
    let sane = max_frame >= 64
        && port_window >= crate::config::MIN_WINDOW
        && conn_window >= port_window
        && max_message > 0
        && max_ports >= 2;
    if !sane {
        return Err(ConnectError::BadLimits(format!("{:?}", theirs.limits)));
    }
    Ok(())
}
