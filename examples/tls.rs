//! Two nodes over mutual TLS, inside which both prove the cluster cookie.
//!
//! ```sh
//! cargo run --example tls --features tls
//! ```
//!
//! A real deployment loads its certificates and keys from files (or a secret
//! store); this example makes them at start with rcgen so that it runs
//! anywhere:
//!
//! 1. A private certificate authority issues a server certificate for
//!    "localhost" and a client certificate for the dialing node.
//! 2. The server node listens with `listen_tls`, requiring client
//!    certificates signed by that authority (mutual TLS).
//! 3. The client node dials with `connect_tls`, checking the server's
//!    certificate against the same authority and presenting its own.
//! 4. Inside TLS, both nodes prove they know the cluster cookie, then the
//!    client asks the server's "greeter" actor for a greeting.
//! 5. A node with a valid certificate but without the cookie, and a node
//!    without a certificate, are both refused, each with a typed error.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde::{Deserialize, Serialize};
use tether::transport::tls::rustls::{self, pki_types, server::WebPkiClientVerifier, RootCertStore};
use tether::{Config, Cookie, Mailbox, Node, ReplyPort};

/// What the greeter takes: a name, and where to send the greeting.
#[derive(Serialize, Deserialize)]
struct Greet(String, ReplyPort<String>);

/// The smallest actor: a tokio task fed by a channel.
struct Greeter(tokio::sync::mpsc::UnboundedSender<Greet>);

impl Mailbox<Greet> for Greeter {
    fn deliver(&self, msg: Greet) -> Result<(), Greet> {
        self.0.send(msg).map_err(|e| e.0)
    }
    fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
        let tx = self.0.clone();
        Box::pin(async move { tx.closed().await })
    }
}

type Chain = Vec<pki_types::CertificateDer<'static>>;
type Key = pki_types::PrivateKeyDer<'static>;

/// Issues a certificate for `name` signed by the authority.
fn issue(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(Chain, Key), Box<dyn Error>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca, ca_key)?;
    Ok((vec![cert.der().clone()], pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into()))
}

fn cluster_config() -> Config {
    let mut cfg = Config::default();
    // In production: 32 random bytes read from a protected file.
    cfg.cookie = Some(Cookie::new(b"example cluster cookie, 32 bytes"));
    cfg
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // 1. The authority and the two certificates.
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "example cluster CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let roots = Arc::new(roots);
    let (server_chain, server_key) = issue(&ca, &ca_key, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_chain, client_key) = issue(&ca, &ca_key, "client", ExtendedKeyUsagePurpose::ClientAuth)?;

    // 2. The server: TLS that requires client certificates from our CA.
    let verifier = WebPkiClientVerifier::builder(roots.clone()).build()?;
    let server_tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_chain, server_key)?;
    let server = Node::new(Some("server"), cluster_config())?;
    let addr = server.listen_tls("127.0.0.1:0", Arc::new(server_tls)).await?.to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Greet(name, reply)) = rx.recv().await {
            let _ = reply.send(format!("hello, {name}, over mutual TLS"));
        }
    });
    server.export(Some("greeter"), Greeter(tx))?;
    println!("server listening with TLS on {addr}, client certificates required");

    // 3. The client: trusts our CA, presents its own certificate.
    let client_tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(client_chain, client_key)?,
    );
    let client = Node::new(Some("client"), cluster_config())?;
    let server_id = client.connect_tls(&addr, "localhost", client_tls.clone()).await?;
    println!("client connected: certificates checked both ways, cookie proved both ways");

    // 4. An ask over the encrypted, authenticated connection.
    let greeter = client.lookup::<Greet>(server_id, "greeter").await?;
    let greeting = greeter.ask(|reply| Greet("client".into(), reply), Duration::from_secs(5)).await?;
    println!("greeter answered: {greeting:?}");

    // 5. Outsiders are refused.
    let no_cookie = Node::new(Some("outsider"), Config::default())?;
    match no_cookie.connect_tls(&addr, "localhost", client_tls).await {
        Err(e) => println!("a node with a certificate but no cookie is refused: {e}"),
        Ok(_) => return Err("a node without the cookie got in".into()),
    }
    let no_cert = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    match Node::new(Some("stranger"), cluster_config()).unwrap().connect_tls(&addr, "localhost", no_cert).await {
        Err(e) => println!("a node without a client certificate is refused: {e}"),
        Ok(_) => return Err("a node without a certificate got in".into()),
    }
    println!("done: only the member with both a certificate and the cookie got in");
    Ok(())
}
