// Throwaway: instruction cost of a group tell vs a direct tell (callgrind).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tether::cluster::{Cluster, ClusterConfig};
use tether::{Config, Mailbox, Node};

struct Count(Arc<AtomicU64>, Arc<tokio::sync::Notify>, u64);
impl Mailbox<(u64, [u8; 32])> for Count {
    fn deliver(&self, _: (u64, [u8; 32])) -> Result<(), (u64, [u8; 32])> {
        if self.0.fetch_add(1, Ordering::Relaxed) + 1 == self.2 {
            self.1.notify_one();
        }
        Ok(())
    }
    fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = std::env::args().nth(1).unwrap();
    let n: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let a = Node::new(Some("a"), Config::default()).unwrap();
    let aa = a.listen("127.0.0.1:0").await.unwrap();
    let ca = Cluster::join(&a, aa, ClusterConfig::default()).await.unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let ba = b.listen("127.0.0.1:0").await.unwrap();
    let cb = Cluster::join(&b, ba, ClusterConfig::default().seed(aa)).await.unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let r = b.export(None, Count(got.clone(), done.clone(), n)).unwrap();
    if std::env::var("LATE").is_ok() {
        while ca.members().is_empty() || cb.members().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        eprintln!("converged");
    }
    cb.join_group("g", &r).unwrap();
    let g = ca.group::<(u64, [u8; 32])>("g");
    let mut k = 0;
    while g.members().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        k += 1;
        if k % 200 == 0 {
            eprintln!(
                "members {:?} / {:?}; b sees {:?}",
                ca.members(),
                ca.group_members::<(u64, [u8; 32])>("g").len(),
                cb.members()
            );
        }
    }
    let direct = g.members()[0].clone();
    direct.tell((0, [0; 32])).await.unwrap();
    let wait = done.notified();
    tokio::pin!(wait);
    wait.as_mut().enable();
    for i in 0..n {
        if mode == "group" {
            g.tell((i, [0; 32])).await.unwrap();
        } else {
            direct.tell((i, [0; 32])).await.unwrap();
        }
    }
    if n > 0 {
        wait.await;
    }
    println!("{mode} {n} {}", got.load(Ordering::Relaxed));
}
