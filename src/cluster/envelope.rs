//! The bytes around every gossip datagram: a version and a tag proving the
//! sender knows the cluster cookie.
//!
//! ```text
//! "TG" | version (1) | tag (16) | payload (the engine's encoding)
//! ```
//!
//! The tag is HMAC-SHA256 over version ‖ payload, truncated to 16 bytes,
//! under a key derived from the cookie (`HMAC(cookie, "tether gossip v1")`),
//! checked in constant time before the engine sees a byte. Without a cookie
//! the key is derived from an empty secret: anyone can gossip, as anyone
//! can connect to a node without a cookie.
//!
//! Replays need no defence of their own: SWIM numbers each member's claims
//! (its incarnation), so a replayed claim is one the members already
//! superseded, and a replayed probe only earns the attacker an ack.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::Cookie;

const MAGIC: &[u8; 2] = b"TG";
/// Gossip format version; a datagram of another is dropped (and counted).
pub(crate) const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// Bytes the envelope adds to a payload.
pub(crate) const OVERHEAD: usize = MAGIC.len() + 1 + TAG_LEN;

/// Why a datagram was dropped before the engine saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("not a tether gossip datagram")]
    NotGossip,
    #[error("gossip version {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("bad tag: the sender does not know the cluster cookie")]
    BadTag,
}

/// Seals and opens datagrams with one cluster's key.
#[derive(Clone)]
pub(crate) struct Envelope {
    mac: Hmac<Sha256>,
}

impl Envelope {
    pub(crate) fn new(cookie: Option<&Cookie>) -> Envelope {
        let key = cookie.unwrap_or(&Cookie::new([])).derive(b"tether gossip v1");
        Envelope { mac: Hmac::new_from_slice(&key).expect("HMAC takes keys of any length") }
    }

    fn tag(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&[VERSION]);
        mac.update(payload);
        mac
    }

    /// The datagram carrying `payload`, appended to `out`.
    pub(crate) fn seal(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(OVERHEAD + payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.tag(payload).finalize().into_bytes()[..TAG_LEN]);
        out.extend_from_slice(payload);
    }

    /// The payload of `datagram`, if it is a current-version datagram sealed
    /// with this cluster's key.
    pub(crate) fn open<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], Rejected> {
        if datagram.len() < OVERHEAD || &datagram[..2] != MAGIC {
            return Err(Rejected::NotGossip);
        }
        if datagram[2] != VERSION {
            return Err(Rejected::Version(datagram[2]));
        }
        let (tag, payload) = datagram[3..].split_at(TAG_LEN);
        self.tag(payload).verify_truncated_left(tag).map_err(|_| Rejected::BadTag)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_cookie_opens_a_datagram() {
        let ours = Envelope::new(Some(&Cookie::new([7; 32])));
        let theirs = Envelope::new(Some(&Cookie::new([8; 32])));
        let open = Envelope::new(None);
        let mut d = Vec::new();
        ours.seal(b"hello", &mut d);
        assert_eq!(ours.open(&d), Ok(&b"hello"[..]));
        assert_eq!(theirs.open(&d), Err(Rejected::BadTag));
        assert_eq!(open.open(&d), Err(Rejected::BadTag));
        let mut flipped = d.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(ours.open(&flipped), Err(Rejected::BadTag));
        let mut old = d.clone();
        old[2] = 0;
        assert_eq!(ours.open(&old), Err(Rejected::Version(0)));
        assert_eq!(ours.open(&d[..OVERHEAD - 1]), Err(Rejected::NotGossip));
        assert_eq!(ours.open(b"GET / HTTP/1.1\r\n\r\n"), Err(Rejected::NotGossip));
    }
}
