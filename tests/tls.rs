//! TLS and mutual TLS between nodes over real TCP, with certificates made
//! at test time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{within, Recorder, TaskMailbox};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde::{Deserialize, Serialize};
use tether::transport::tls::rustls::{self, pki_types, server::WebPkiClientVerifier, RootCertStore};
use tether::{Config, ConnectError, Cookie, Node, ReplyPort};
use tokio::sync::mpsc::unbounded_channel;

const T: Duration = Duration::from_secs(20);

/// A certificate authority that issues certificates for the tests.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate chain and its private key.
struct Identity {
    chain: Vec<pki_types::CertificateDer<'static>>,
    key: pki_types::PrivateKeyDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        Arc::new(roots)
    }
}

fn server_tls(id: Identity, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(WebPkiClientVerifier::builder(ca.roots()).build().unwrap()),
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(id.chain, id.key).unwrap())
}

fn client_tls(server_ca: &Ca, id: Option<Identity>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(server_ca.roots());
    Arc::new(match id {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

#[derive(Serialize, Deserialize)]
struct Echo(String, ReplyPort<String>);

fn serve_echo(node: &Node) {
    let (tx, mut rx) = unbounded_channel::<Echo>();
    tokio::spawn(async move {
        while let Some(Echo(text, reply)) = rx.recv().await {
            let _ = reply.send(text);
        }
    });
    node.export(Some("echo"), TaskMailbox(tx)).unwrap();
}

/// A node serving "echo" over TLS as "localhost", certified by `ca`, that
/// requires client certificates from `client_ca` if one is given.
async fn echo_server(cfg: Config, ca: &Ca, client_ca: Option<&Ca>) -> (Node, std::net::SocketAddr) {
    let server = Node::new(Some("server"), cfg).unwrap();
    let tls = server_tls(ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth), client_ca);
    let addr = server.listen_tls("127.0.0.1:0", tls).await.unwrap();
    serve_echo(&server);
    (server, addr)
}

async fn echo(client: &Node, server: tether::NodeId, text: &str) -> String {
    let r = client.lookup::<Echo>(server, "echo").await.unwrap();
    r.ask(|reply| Echo(text.to_owned(), reply), Duration::from_secs(5)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_over_tls_and_nothing_crosses_in_clear() {
    within(T, async {
        let ca = Ca::new("tether test CA");
        let (server, addr) = echo_server(Config::default(), &ca, None).await;
        let wire = Recorder::start(addr).await;
        let client = Node::new(Some("client"), Config::default()).unwrap();
        let id = client.connect_tls(&wire.addr.to_string(), "localhost", client_tls(&ca, None)).await.unwrap();
        assert_eq!(id, server.id());
        let text = "a message that must not be readable on the wire";
        assert_eq!(echo(&client, id, text).await, text);
        assert!(wire.len() > 0);
        assert!(!wire.saw(b"TETHER"), "tether's handshake crossed in clear");
        assert!(!wire.saw(text.as_bytes()), "a message crossed in clear");
        assert!(!wire.saw(server.id().0.as_bytes()), "a node id crossed in clear");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_trusted_certificate() {
    within(T, async {
        let (server_ca, client_ca, rogue_ca) = (Ca::new("servers"), Ca::new("clients"), Ca::new("rogue"));
        let (server, addr) = echo_server(Config::default(), &server_ca, Some(&client_ca)).await;
        let addr = addr.to_string();

        // No client certificate, or one from a CA the server does not trust.
        for (what, id) in
            [("none", None), ("rogue", Some(rogue_ca.issue("client", ExtendedKeyUsagePurpose::ClientAuth)))]
        {
            let client = Node::new(Some("client"), Config::default()).unwrap();
            let refused = client.connect_tls(&addr, "localhost", client_tls(&server_ca, id)).await;
            match refused.as_ref().map_err(ConnectError::cause) {
                // The server refuses in an alert (CertificateRequired, UnknownCA).
                Err(ConnectError::Tls(e)) => assert!(e.to_string().contains("alert"), "{what}: {e}"),
                other => panic!("client certificate {what}: {other:?}"),
            }
            assert!(client.peers().is_empty());
        }

        let good = client_tls(&server_ca, Some(client_ca.issue("client", ExtendedKeyUsagePurpose::ClientAuth)));
        let client = Node::new(Some("client"), Config::default()).unwrap();
        let id = client.connect_tls(&addr, "localhost", good).await.unwrap();
        assert_eq!(echo(&client, id, "hello").await, "hello");
        assert_eq!(server.peers(), vec![client.id()], "only the trusted client got in");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_misnamed_server_is_refused() {
    within(T, async {
        let (ca, other_ca) = (Ca::new("servers"), Ca::new("other"));
        let (server, addr) = echo_server(Config::default(), &ca, None).await;
        let addr = addr.to_string();
        let client = Node::new(Some("client"), Config::default()).unwrap();
        for (name, trust) in [("localhost", &other_ca), ("elsewhere.example", &ca)] {
            let refused = client.connect_tls(&addr, name, client_tls(trust, None)).await;
            assert!(
                matches!(refused.as_ref().map_err(ConnectError::cause), Err(ConnectError::Tls(_))),
                "{name}: {refused:?}"
            );
        }
        let bad_name = client.connect_tls(&addr, "not a name!", client_tls(&ca, None)).await;
        assert!(matches!(bad_name.as_ref().map_err(ConnectError::cause), Err(ConnectError::Tls(_))), "{bad_name:?}");
        assert!(server.peers().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_cookies_together() {
    within(T, async {
        let ca = Ca::new("servers");
        let with_cookie = |secret: &str| {
            let mut cfg = Config::default();
            cfg.cookie = Some(Cookie::new(secret));
            cfg
        };
        let (_server, addr) = echo_server(with_cookie("cluster secret, 32 bytes long..."), &ca, None).await;
        let addr = addr.to_string();
        // A trusted TLS client is not enough without the cookie.
        let outsider = Node::new(None, with_cookie("some other secret, long enough..")).unwrap();
        let refused = outsider.connect_tls(&addr, "localhost", client_tls(&ca, None)).await;
        assert!(matches!(refused.as_ref().map_err(ConnectError::cause), Err(ConnectError::AuthFailed)), "{refused:?}");
        let member = Node::new(None, with_cookie("cluster secret, 32 bytes long...")).unwrap();
        let id = member.connect_tls(&addr, "localhost", client_tls(&ca, None)).await.unwrap();
        assert_eq!(echo(&member, id, "in").await, "in");
    })
    .await;
}

/// A TLS stream made by the application and handed to `connect_with` gets
/// `TCP_NODELAY` on its socket too (small messages would otherwise wait in
/// Nagle's buffer for delayed acknowledgements).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_streams_handed_over_get_nodelay() {
    within(T, async {
        let ca = Ca::new("servers");
        let (_server, addr) = echo_server(Config::default(), &ca, None).await;
        let socket = std::net::TcpStream::connect(addr).unwrap();
        // The clone shares the socket, so it sees its options.
        let probe = socket.try_clone().unwrap();
        socket.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(socket).unwrap();
        assert!(!probe.nodelay().unwrap());
        let connector = tether::transport::tls::TlsConnector::from(client_tls(&ca, None));
        let stream = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
        let client = Node::new(Some("client"), Config::default()).unwrap();
        let id = client.connect_with(stream, tether::Role::Dial).await.unwrap();
        assert!(probe.nodelay().unwrap(), "TCP_NODELAY is set under TLS");
        assert_eq!(echo(&client, id, "fast").await, "fast");
    })
    .await;
}

/// A client that opens TCP and never completes TLS is hung up on once the
/// handshake timeout (which covers TLS and tether's handshake together)
/// runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_hung_up_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(T, async {
        let ca = Ca::new("servers");
        let mut cfg = Config::default();
        cfg.handshake_timeout = Duration::from_millis(200);
        let (_server, addr) = echo_server(cfg.clone(), &ca, None).await;
        // Silent, and stalled after a TLS record header.
        for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00][..]] {
            // Before the connect: the server's clock starts at its accept.
            let started = std::time::Instant::now();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(sent).await.unwrap();
            let mut byte = [0u8; 1];
            let hung_up = s.read(&mut byte).await;
            let waited = started.elapsed();
            // A FIN: the server read what was sent and closed.
            assert!(matches!(hung_up, Ok(0)), "after {} bytes: {hung_up:?}", sent.len());
            // Not before the handshake timeout ran out (a server hanging up
            // at once would pass otherwise), and not long after it: two
            // seconds of slack for a loaded machine.
            assert!(waited >= cfg.handshake_timeout, "hung up after {waited:?}, before the timeout");
            assert!(waited < cfg.handshake_timeout + Duration::from_secs(2), "hung up only after {waited:?}");
        }
    })
    .await;
}

/// Cluster members over mutual TLS: a lookup on a member connects to it on
/// demand over TLS (its certificate checked, this member's presented), and
/// a member without TLS settings cannot reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_connect_on_demand_over_mutual_tls() {
    use tether::cluster::{Cluster, ClusterConfig, MemberStatus, MemberTls};
    within(T, async {
        let servers = Ca::new("members");
        let clients = Ca::new("member clients");
        let mut cfg = Config::default();
        cfg.cookie = Some(Cookie::new([9u8; 32]));
        let member = |name: &'static str| {
            let cfg = cfg.clone();
            let (servers, clients) = (&servers, &clients);
            async move {
                let node = Node::new(Some(name), cfg).unwrap();
                let tls =
                    server_tls(servers.issue("member.tether", ExtendedKeyUsagePurpose::ServerAuth), Some(clients));
                let addr = node.listen_tls("127.0.0.1:0", tls).await.unwrap();
                (node, addr)
            }
        };
        let tls =
            |ca: &Ca, id: Identity| MemberTls { client: client_tls(ca, Some(id)), server_name: "member.tether".into() };
        let (a, a_addr) = member("a").await;
        serve_echo(&a);
        let mut ca_cfg = ClusterConfig::default();
        ca_cfg.tls = Some(tls(&servers, clients.issue("a", ExtendedKeyUsagePurpose::ClientAuth)));
        let _ca = Cluster::join(&a, a_addr, ca_cfg).await.unwrap();

        let (b, b_addr) = member("b").await;
        let mut cb_cfg = ClusterConfig::default().seed(a_addr);
        cb_cfg.tls = Some(tls(&servers, clients.issue("b", ExtendedKeyUsagePurpose::ClientAuth)));
        let cb = Cluster::join(&b, b_addr, cb_cfg).await.unwrap();

        // A member that dials in plain TCP.
        let (c, c_addr) = member("c").await;
        let cc = Cluster::join(&c, c_addr, ClusterConfig::default().seed(a_addr)).await.unwrap();

        for view in [&cb, &cc] {
            let view = view.clone();
            common::eventually("a is up", T, move || view.members().iter().any(|m| m.status == MemberStatus::Up)).await;
        }
        assert_eq!(echo(&b, a.id(), "over tls").await, "over tls");
        assert!(c.lookup::<Echo>(a.id(), "echo").await.is_err(), "plain TCP to a TLS member must fail");
    })
    .await;
}
