//! A local DHT of real `dhtnode` processes (Debian package `dhtnode`) on 127.0.0.1, for tests
//! and benchmarks. Each process is started on a free UDP port and killed (by PID) on drop.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ffi::Runner;

/// Why a local DHT could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// `dhtnode` is not installed (install the Debian package `dhtnode`).
    #[error("dhtnode is not installed (Debian package `dhtnode`; scripts/deps.sh installs it)")]
    Missing,
    /// A process or socket could not be created.
    #[error("starting dhtnode: {0}")]
    Io(#[from] std::io::Error),
    /// A node did not answer pings before the deadline.
    #[error("dhtnode on {0} did not answer within the deadline")]
    NotReady(SocketAddr),
    /// The local probe runner failed.
    #[error(transparent)]
    Ffi(#[from] crate::ffi::FfiError),
}

/// One `dhtnode` process, killed on drop.
#[derive(Debug)]
pub struct DhtNode {
    child: Child,
    addr: SocketAddr,
}

impl DhtNode {
    /// The node's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DhtNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free UDP port on 127.0.0.1 (bound, read, released).
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `dhtnode` can be run here.
pub fn dhtnode_installed() -> bool {
    Command::new("dhtnode")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `n` `dhtnode` processes on 127.0.0.1, each bootstrapped to the first, all answering pings.
#[derive(Debug)]
pub struct Testnet {
    nodes: Vec<DhtNode>,
}

impl Testnet {
    /// Starts `n` (≥ 1) nodes and waits until each answers a ping (deadline `ready`).
    pub async fn start(n: usize, ready: Duration) -> Result<Testnet, TestnetError> {
        if !dhtnode_installed() {
            return Err(TestnetError::Missing);
        }
        let probe = Runner::start(0)?;
        let mut nodes: Vec<DhtNode> = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let port = free_udp_port()?;
            let mut cmd = Command::new("dhtnode");
            cmd.args(["-s", "-p", &port.to_string()]);
            if i > 0 {
                cmd.args(["-b", &nodes[0].addr.to_string()]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            nodes.push(DhtNode {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            });
        }
        let deadline = tokio::time::Instant::now() + ready;
        for node in &nodes {
            loop {
                let answered = tokio::time::timeout(Duration::from_secs(1), probe.ping(node.addr))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false);
                if answered {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(TestnetError::NotReady(node.addr));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(Testnet { nodes })
    }

    /// The nodes' addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(DhtNode::addr).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[DhtNode] {
        &self.nodes
    }
}
