//! A TCP proxy in the test process, between shardbridge and one local server, that injects the
//! server's faults without touching the shared server: stopped (the port refuses connections and
//! every open one is closed), paused (a black hole, as a SIGSTOPped server: connections are
//! accepted, nothing moves either way until it resumes, then the held bytes flow on).

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Paused,
    Stopped,
}

pub struct FaultProxy {
    pub port: u16,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// The accepting task; it owns every connection, so ending it closes them all.
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// A proxy on a free local port to `upstream` (`http://host:port`), forwarding.
    pub async fn start(upstream: &str) -> FaultProxy {
        let hostport = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream = tokio::net::lookup_host(hostport)
            .await
            .unwrap()
            .next()
            .unwrap_or_else(|| panic!("no address for {upstream}"));
        let listener = bind(0);
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = watch::channel(Mode::Forward);
        let proxy = FaultProxy {
            port,
            upstream,
            mode,
            accept: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    /// The endpoint URL to give shardbridge.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Black hole: nothing is forwarded (new connections are accepted and held) until `resume`.
    pub fn pause(&self) {
        self.mode.send_replace(Mode::Paused);
    }

    pub fn resume(&self) {
        self.mode.send_replace(Mode::Forward);
    }

    /// Closes the port and every open connection until `start_again`.
    pub async fn stop(&self) {
        self.mode.send_replace(Mode::Stopped);
        let accept = self.accept.lock().unwrap().take();
        if let Some(task) = accept {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, forwarding.
    pub fn start_again(&self) {
        self.mode.send_replace(Mode::Forward);
        self.serve(bind(self.port));
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, mode) = (self.upstream, self.mode.subscribe());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        conns.spawn(connection(client, upstream, mode.clone()));
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }
}

fn bind(port: u16) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap_or_else(|e| panic!("fault proxy cannot bind port {port}: {e}"));
    socket.listen(1024).unwrap()
}

/// Waits while paused; false once stopped.
async fn forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Paused).await {
        Ok(m) => *m == Mode::Forward,
        Err(_) => false,
    }
}

/// One client connection: upstream is connected once the proxy forwards, then bytes flow both
/// ways until either side closes or the proxy stops.
async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if !forwarding(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pipe(client_read, server_write, mode.clone()),
        pipe(server_read, client_write, mode),
    );
}

/// Copies `from` to `to`, reading and writing only while the proxy forwards (bytes read before a
/// pause are held and written after it).
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !forwarding(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            _ = mode.changed() => continue,
        };
        let mut sent = 0;
        while sent < n {
            if !forwarding(&mut mode).await {
                return;
            }
            tokio::select! {
                r = to.write(&buf[sent..n]) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(w) => sent += w,
                },
                _ = mode.changed() => {}
            }
        }
    }
}
