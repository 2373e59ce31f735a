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

/// Sends our hello and reads the peer's, within the handshake timeout.
pub(crate) async fn exchange<T: Transport>(io: &mut T, cfg: &Config, node_id: Uuid) -> Result<PeerHello, ConnectError> {
    let ours = Hello {
        version: VERSION,
        node_id,
        codec: cfg.codec.id(),
        session_id: Uuid::nil(),
        resume_received: 0,
        limits: cfg.hello_limits(),
        auth: Vec::new(),
    };
    let run = async {
        let mut out = BytesMut::new();
        ours.encode(&mut out);
        io.write_all(&out).await?;
        io.flush().await?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if let Some(hello) = Hello::decode(&mut buf)? {
                return Ok::<_, ConnectError>(PeerHello { hello, rest: buf });
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Err(ConnectError::Eof);
            }
        }
    };
    let peer = tokio::time::timeout(cfg.handshake_timeout, run)
        .await
        .map_err(|_| ConnectError::Timeout(cfg.handshake_timeout))??;
    check(&ours, &peer.hello)?;
    Ok(peer)
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
