//! Runs the handshake on a fresh transport.
//!
//! Without cookies: the dialer sends its hello, the acceptor answers with
//! its own. With cookies, each hello carries a fresh nonce; the dialer sends
//! its proof once it has the acceptor's hello, and the acceptor answers with
//! its own proof once the dialer's checked out (see [`crate::auth`]). The
//! dialer proves first because the acceptor is the exposed side: an
//! anonymous peer that connects gets no proof it could attack offline.
//! Frames follow each side's last handshake message; neither side sends
//! any before the peer has proved itself.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::ConnectError;
use crate::auth::{Offer, Role, Transcript, PROOF_LEN};
use crate::config::Config;
use crate::transport::Transport;
use crate::wire::{Hello, HelloLimits, VERSION};

/// What the peer told us, and the bytes it sent after its handshake.
pub(crate) struct PeerHello {
    pub(crate) hello: Hello,
    pub(crate) rest: BytesMut,
}

fn hello(cfg: &Config, node_id: Uuid, session_id: Uuid, resume_received: u64, resumable: bool, offer: Offer) -> Hello {
    Hello {
        version: VERSION,
        node_id,
        codec: cfg.codec.id(),
        accepts: cfg.compression.accepts(),
        session_id,
        resume_received,
        resumable,
        limits: cfg.hello_limits(),
        auth: offer.encode(),
    }
}

fn encoded(hello: &Hello) -> BytesMut {
    let mut out = BytesMut::new();
    hello.encode(&mut out);
    out
}

async fn send<T: Transport>(io: &mut T, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
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

/// Takes a proof from the front of `buf`, reading more as needed.
async fn read_proof<T: Transport>(io: &mut T, buf: &mut BytesMut) -> Result<[u8; PROOF_LEN], ConnectError> {
    while buf.len() < PROOF_LEN {
        if io.read_buf(buf).await? == 0 {
            return Err(ConnectError::Eof);
        }
    }
    let mut proof = [0u8; PROOF_LEN];
    buf.copy_to_slice(&mut proof);
    Ok(proof)
}

async fn within<F: std::future::Future<Output = Result<PeerHello, ConnectError>>>(
    cfg: &Config,
    f: F,
) -> Result<PeerHello, ConnectError> {
    tokio::time::timeout(cfg.handshake_timeout, f).await.map_err(|_| ConnectError::Timeout(cfg.handshake_timeout))?
}

/// Whether the two sides' offers fit: both cookie, or both none.
fn agree(ours: Offer, theirs: &Hello) -> Result<bool, ConnectError> {
    let theirs = Offer::decode(&theirs.auth);
    match (ours, theirs) {
        (Offer::None, Some(Offer::None)) => Ok(false),
        (Offer::Cookie(_), Some(Offer::Cookie(_))) => Ok(true),
        (ours, theirs) => {
            Err(ConnectError::AuthMismatch { ours: ours.scheme(), theirs: theirs.map_or("unknown", |t| t.scheme()) })
        }
    }
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
    let offer = Offer::new(cfg.cookie.as_ref())?;
    let ours = hello(cfg, node_id, session, received, resumable, offer);
    let ours_bytes = encoded(&ours);
    within(cfg, async {
        send(io, &ours_bytes).await?;
        let mut peer = read_hello(io).await?;
        check(&ours, &peer.hello)?;
        if agree(offer, &peer.hello)? {
            let cookie = cfg.cookie.as_ref().expect("a cookie offer has a cookie");
            let theirs_bytes = encoded(&peer.hello);
            let transcript = Transcript { dialer_hello: &ours_bytes, acceptor_hello: &theirs_bytes };
            send(io, &transcript.proof(cookie, Role::Dialer)).await?;
            // Nothing of ours (no frame) goes out before the acceptor has
            // proved it knows the cookie too.
            let proof = read_proof(io, &mut peer.rest).await?;
            if !transcript.verify(cookie, Role::Acceptor, &proof) {
                return Err(ConnectError::AuthFailed);
            }
        }
        Ok(peer)
    })
    .await
}

/// The accepting side reads first, then answers with the session it takes
/// the connection into and its own resume position, as `session` decides
/// from the dialer's hello. It answers even when it will refuse, so that the
/// dialer can report the mismatch too. `session` must only look: nothing may
/// change before the dialer has proved its cookie.
pub(crate) async fn server<T: Transport>(
    io: &mut T,
    cfg: &Config,
    node_id: Uuid,
    session: impl FnOnce(&Hello) -> (Uuid, u64),
) -> Result<PeerHello, ConnectError> {
    let offer = Offer::new(cfg.cookie.as_ref())?;
    within(cfg, async {
        let mut peer = read_hello(io).await?;
        let (id, received) = session(&peer.hello);
        let ours = hello(cfg, node_id, id, received, false, offer);
        let ours_bytes = encoded(&ours);
        send(io, &ours_bytes).await?;
        check(&ours, &peer.hello)?;
        if agree(offer, &peer.hello)? {
            let cookie = cfg.cookie.as_ref().expect("a cookie offer has a cookie");
            let theirs_bytes = encoded(&peer.hello);
            let transcript = Transcript { dialer_hello: &theirs_bytes, acceptor_hello: &ours_bytes };
            let proof = read_proof(io, &mut peer.rest).await?;
            if !transcript.verify(cookie, Role::Dialer, &proof) {
                // A proof that cannot check out, so the dialer fails with
                // the same error rather than at the end of the stream.
                send(io, &[0u8; PROOF_LEN]).await?;
                return Err(ConnectError::AuthFailed);
            }
            send(io, &transcript.proof(cookie, Role::Acceptor)).await?;
        }
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
