//! Who may connect, and which actors a peer may reach.
//!
//! **Cookie authentication.** Nodes of one cluster share a secret, the
//! [`Cookie`]. When both sides of a connection have one, each proves it
//! knows the secret without sending it: the hellos carry a fresh random
//! nonce each, and each side sends HMAC-SHA256(cookie, label ‖ dialer's
//! hello ‖ acceptor's hello), the dialer first (so a peer that merely
//! connects to a listener gets no proof to attack offline). The labels
//! differ by role, so a proof cannot be reflected back; the nonces make
//! every proof good for one connection only; proofs are compared in
//! constant time. Nothing of the connection (no session resumed, no peer
//! registered) happens before the dialer's proof checks out, so a peer with
//! a wrong cookie cannot disturb an existing session, even one it claims to
//! be.
//!
//! **Capabilities.** A [`RemoteRef`](crate::RemoteRef) carries, besides the
//! actor's id, a token: HMAC-SHA256 of the id under a key the owner node
//! draws at start and never sends. A peer learns a token only by being sent
//! the ref or by looking up an exported name; a guessed id without its token
//! is refused with [`RemoteError::Forbidden`](crate::RemoteError::Forbidden)
//! and the actor receives nothing. The owner checks tokens without keeping
//! any state per ref, so a forged ref cannot tell a stopped actor from one
//! that never existed.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a handshake nonce.
pub(crate) const NONCE_LEN: usize = 32;
/// Length of a handshake proof (an HMAC-SHA256 tag).
pub(crate) const PROOF_LEN: usize = 32;
/// Authentication scheme byte: cookie (HMAC-SHA256 challenge-response).
pub(crate) const SCHEME_COOKIE: u8 = 1;
/// Shortest cookie accepted by [`Config::validate`](crate::Config::validate).
pub(crate) const MIN_COOKIE_LEN: usize = 16;

/// A cluster secret: nodes connect only to peers that know the same one.
///
/// Use 32 random bytes, never a password (a proof can be attacked offline
/// by trying secrets), distributed to the cluster's nodes out of band (a
/// file readable only by the service, a secret store). The secret never
/// crosses the wire and is not shown by `Debug`. It admits members; it
/// neither encrypts nor protects the stream after the handshake (TLS does).
#[derive(Clone)]
pub struct Cookie(Arc<[u8]>);

impl Cookie {
    /// A cookie holding `secret` (at least 16 bytes, checked by
    /// [`Config::validate`](crate::Config::validate)).
    pub fn new(secret: impl AsRef<[u8]>) -> Cookie {
        Cookie(secret.as_ref().into())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// A key for one purpose, derived from the secret: HMAC-SHA256(cookie,
    /// `label`). Keys of different labels tell nothing of each other.
    pub(crate) fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(label);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<secret>)")
    }
}

/// How a side offers to authenticate, as carried in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// No authentication (an empty blob).
    None,
    /// Cookie challenge-response; the side's fresh nonce.
    Cookie([u8; NONCE_LEN]),
}

impl Offer {
    /// A fresh offer for a side configured with `cookie`.
    pub(crate) fn new(cookie: Option<&Cookie>) -> std::io::Result<Offer> {
        match cookie {
            None => Ok(Offer::None),
            Some(_) => Ok(Offer::Cookie(random()?)),
        }
    }

    /// The hello's authentication blob: empty, or the scheme byte and the nonce.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Offer::None => Vec::new(),
            Offer::Cookie(nonce) => {
                let mut blob = Vec::with_capacity(1 + NONCE_LEN);
                blob.push(SCHEME_COOKIE);
                blob.extend_from_slice(nonce);
                blob
            }
        }
    }

    /// Reads a peer's blob; `None` if it is not one this version knows.
    pub(crate) fn decode(blob: &[u8]) -> Option<Offer> {
        match blob {
            [] => Some(Offer::None),
            [SCHEME_COOKIE, nonce @ ..] => Some(Offer::Cookie(nonce.try_into().ok()?)),
            _ => None,
        }
    }

    /// The scheme's name, for errors.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Offer::None => "none",
            Offer::Cookie(_) => "cookie",
        }
    }
}

/// Which side a proof comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"tether v1 dialer proof",
            Role::Acceptor => b"tether v1 acceptor proof",
        }
    }
}

/// The handshake transcript both proofs cover: the two hellos as sent.
pub(crate) struct Transcript<'a> {
    pub(crate) dialer_hello: &'a [u8],
    pub(crate) acceptor_hello: &'a [u8],
}

impl Transcript<'_> {
    fn mac(&self, cookie: &Cookie, role: Role) -> HmacSha256 {
        let mut mac = cookie.mac();
        mac.update(role.label());
        // Lengths first, so that no two transcripts hash alike.
        mac.update(&(self.dialer_hello.len() as u32).to_be_bytes());
        mac.update(self.dialer_hello);
        mac.update(&(self.acceptor_hello.len() as u32).to_be_bytes());
        mac.update(self.acceptor_hello);
        mac
    }

    /// The proof `role` sends.
    pub(crate) fn proof(&self, cookie: &Cookie, role: Role) -> [u8; PROOF_LEN] {
        self.mac(cookie, role).finalize().into_bytes().into()
    }

    /// Whether `proof` is `role`'s proof, compared in constant time.
    pub(crate) fn verify(&self, cookie: &Cookie, role: Role, proof: &[u8]) -> bool {
        self.mac(cookie, role).verify_slice(proof).is_ok()
    }
}

/// Length of a capability token.
pub(crate) const TOKEN_LEN: usize = 16;

/// A capability token: proof that its holder was given an actor's ref.
pub(crate) type Token = [u8; TOKEN_LEN];

/// A node's key for minting and checking actor capability tokens. Drawn at
/// start, never sent.
pub(crate) struct CapabilityKey(HmacSha256);

impl CapabilityKey {
    pub(crate) fn new() -> CapabilityKey {
        // Like the node id (uuid v4), this needs the OS's randomness; a
        // machine without it cannot run a node.
        let key: [u8; 32] = random().expect("the operating system offers secure randomness");
        CapabilityKey(HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length"))
    }

    fn mac(&self, actor: u64) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(b"tether v1 actor capability");
        mac.update(&actor.to_be_bytes());
        mac
    }

    /// The token for `actor`.
    pub(crate) fn token(&self, actor: u64) -> Token {
        let tag = self.mac(actor).finalize().into_bytes();
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&tag[..TOKEN_LEN]);
        token
    }

    /// Whether `token` is `actor`'s, compared in constant time.
    pub(crate) fn check(&self, actor: u64, token: &Token) -> bool {
        self.mac(actor).verify_truncated_left(token).is_ok()
    }
}

impl fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CapabilityKey(<secret>)")
    }
}

/// `N` bytes from the operating system's secure random source.
fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| std::io::Error::other(format!("no secure randomness: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> (Vec<u8>, Vec<u8>) {
        (b"dialer hello".to_vec(), b"acceptor hello".to_vec())
    }

    #[test]
    fn proofs_check_out_only_for_the_same_cookie_role_and_transcript() {
        let (d, a) = transcript();
        let t = Transcript { dialer_hello: &d, acceptor_hello: &a };
        let cookie = Cookie::new("0123456789abcdef0123456789abcdef");
        let proof = t.proof(&cookie, Role::Dialer);
        assert!(t.verify(&cookie, Role::Dialer, &proof));
        // Not reflectable: the acceptor's proof differs.
        assert!(!t.verify(&cookie, Role::Acceptor, &proof));
        // Another cookie.
        assert!(!t.verify(&Cookie::new("0123456789abcdef0123456789abcdeX"), Role::Dialer, &proof));
        // Another transcript (another nonce in either hello).
        let d2 = b"dialer hellp".to_vec();
        let t2 = Transcript { dialer_hello: &d2, acceptor_hello: &a };
        assert!(!t2.verify(&cookie, Role::Dialer, &proof));
        // Moving bytes across the boundary of the two hellos changes it too.
        let (d3, a3) = (b"dialer hello".to_vec(), b"acceptor hello".to_vec());
        let (d4, a4) = ([&d3[..], &a3[..1]].concat(), a3[1..].to_vec());
        let t4 = Transcript { dialer_hello: &d4, acceptor_hello: &a4 };
        assert!(!t4.verify(&cookie, Role::Dialer, &proof));
        // Truncated or empty proofs fail.
        assert!(!t.verify(&cookie, Role::Dialer, &proof[..31]));
        assert!(!t.verify(&cookie, Role::Dialer, &[]));
    }

    #[test]
    fn offers_roundtrip_and_unknown_blobs_are_refused() {
        let offer = Offer::new(Some(&Cookie::new([7u8; 32]))).unwrap();
        assert_eq!(Offer::decode(&offer.encode()), Some(offer));
        assert_eq!(Offer::decode(&[]), Some(Offer::None));
        assert_eq!(Offer::decode(&[SCHEME_COOKIE; 10]), None, "short nonce");
        assert_eq!(Offer::decode(&[2; 33]), None, "unknown scheme");
        let (Offer::Cookie(a), Offer::Cookie(b)) = (offer, Offer::new(Some(&Cookie::new([7u8; 32]))).unwrap()) else {
            panic!("cookie offers")
        };
        assert_ne!(a, b, "every offer draws a fresh nonce");
    }

    #[test]
    fn capability_tokens_are_per_actor_and_per_key() {
        let key = CapabilityKey::new();
        let t = key.token(42);
        assert!(key.check(42, &t));
        assert!(!key.check(43, &t));
        let mut forged = t;
        forged[15] ^= 1;
        assert!(!key.check(42, &forged));
        assert!(!CapabilityKey::new().check(42, &t), "another node's key");
        assert_eq!(format!("{key:?}"), "CapabilityKey(<secret>)");
    }

    #[test]
    fn cookie_debug_hides_the_secret() {
        assert_eq!(format!("{:?}", Cookie::new("hunter2hunter2hunter2")), "Cookie(<secret>)");
    }
}
