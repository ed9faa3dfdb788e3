//! Serving a router on a listener until the process is asked to stop.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::connections::{Lease, Table};

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The server is stopping: a connection finishes the request in hand and closes.
#[derive(Clone, Debug)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Resolves once the server is stopping.
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// What serves one accepted connection (TCP_NODELAY already set) until it ends; when `stop`
/// fires it finishes the request in hand and returns. The connection holds its `lease` (its
/// place in the listener's table) until it ends, and may say through it when it is idle and
/// hear when it is asked to make room (see [`crate::connections`]).
pub trait Connections: Clone + Send + Sync + 'static {
    fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        stop: Stop,
        lease: Lease,
    ) -> impl std::future::Future<Output = ()> + Send + 'static + use<Self>;
}

/// HTTP/1.1 by hyper for a [`Router`], whose handlers see the peer as
/// `ConnectInfo<SocketAddr>`; a request head must arrive within [`HEADER_READ_TIMEOUT`].
#[derive(Clone)]
struct Http1 {
    router: Router,
    builder: hyper::server::conn::http1::Builder,
}

/// A connection that has not sent a full request head by then is closed (slowloris).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections a router's listener serves at once; the next ones wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;

impl Http1 {
    fn new(router: Router) -> Http1 {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        Http1 { router, builder }
    }
}

impl Connections for Http1 {
    fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        mut stop: Stop,
        lease: Lease,
    ) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        let service = with_peer(self.router.clone(), peer);
        let connection = self
            .builder
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        async move {
            // hyper keeps its connections' state to itself: they are never idle to the table.
            let _lease = lease;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = stop.stopped() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        }
    }
}

/// HTTPS for a [`Router`]: the TLS handshake (bounded as a request head is), then HTTP/2 or
/// HTTP/1.1 as ALPN chose, with the peer as `ConnectInfo<SocketAddr>`.
#[derive(Clone)]
struct Https {
    router: Router,
    acceptor: tokio_rustls::TlsAcceptor,
    builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
}

impl Https {
    fn new(router: Router, acceptor: tokio_rustls::TlsAcceptor) -> Https {
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        builder.http2().timer(hyper_util::rt::TokioTimer::new());
        Https {
            router,
            acceptor,
            builder,
        }
    }
}

/// The router as a hyper service that gives handlers the peer's address.
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<axum::response::Response, std::convert::Infallible>,
    > + Send
             + 'static,
> + Clone {
    hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let mut router = router.clone();
        async move { tower::Service::call(&mut router, request.map(axum::body::Body::new)).await }
    })
}

impl Connections for Https {
    fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        mut stop: Stop,
        lease: Lease,
    ) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        let this = self.clone();
        async move {
            let _lease = lease;
            let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, this.acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = with_peer(this.router, peer);
            let connection = this
                .builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = stop.stopped() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, with our own accept loop:
/// TCP_NODELAY on every connection, a connection cap, a header-read timeout, the peer address as
/// `ConnectInfo<SocketAddr>`, and a bounded graceful drain. HTTP/1.1, or with `tls` HTTPS
/// (HTTP/2 and HTTP/1.1 by ALPN).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(acceptor) => serve_with(listener, Https::new(router, acceptor), shutdown).await,
        None => serve_with(listener, Http1::new(router), shutdown).await,
    }
}

async fn serve_with(
    listener: TcpListener,
    connections: impl Connections,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Table::new(MAX_CONNECTIONS);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let accepting = accept_loop(listener, connections, table.clone(), Stop(stopped));
    tokio::pin!(accepting);
    let accepted_all = tokio::select! {
        () = shutdown => false,
        () = &mut accepting => true,
    };
    let _ = stop.send(true);
    if !accepted_all {
        accepting.await;
    }
    table.drained(DRAIN).await;
    Ok(())
}

/// How long a stopping listener waits for its connections to end.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// One listening socket served by one single-threaded runtime per core, as nginx's workers
/// serve theirs: the first thread accepts and hands connections to the threads in turn, and a
/// connection then lives on its thread, so its requests are never woken on another core
/// (rust-stack.md 1.1 and 5.2: that shape gave the best tails with 1,000 connections).
///
/// One socket, not one `SO_REUSEPORT` socket per thread: with those, a second process (a stale
/// agent, anything running as the same user) could bind the same port and silently take a share
/// of the pods' requests. Here a second bind fails with "address in use".
#[derive(Debug)]
pub struct ThreadedListener {
    socket: std::net::TcpListener,
    addr: SocketAddr,
    threads: usize,
}

/// Whether a bind failed because the kernel has no IPv6 (`ipv6.disable=1`).
fn ipv6_missing(error: &std::io::Error) -> bool {
    // EAFNOSUPPORT: no IPv6 sockets at all; EADDRNOTAVAIL: IPv6 turned off on every interface.
    matches!(error.raw_os_error(), Some(97 | 99))
}

/// An accepted connection on its way to its thread, with its lease.
type Handoff = (std::net::TcpStream, SocketAddr, Lease);

impl ThreadedListener {
    /// Binds `addr`, to be served by `threads` threads (at least one).
    pub fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<ThreadedListener> {
        match Self::bind_exactly(addr, threads) {
            // `[::]` on a host whose kernel has IPv6 turned off: every caller is IPv4, and
            // `0.0.0.0` takes them all.
            Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() && ipv6_missing(&e) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                tracing::warn!(%addr, fallback = %v4, "this host has no IPv6: listening on IPv4 only");
                Self::bind_exactly(v4, threads)
            }
            other => other,
        }
    }

    fn bind_exactly(addr: SocketAddr, threads: usize) -> std::io::Result<ThreadedListener> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // As every server: a restart may bind while old connections are in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        // `[::]` is one dual-stack listener (IPv4 callers arrive as `::ffff:a.b.c.d`), whatever
        // the host's net.ipv6.bindv6only says.
        if addr.ip().is_unspecified() && addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        // The kernel caps this at net.core.somaxconn; a burst of new connections waits there
        // rather than being refused.
        socket.listen(16_384)?;
        let socket: std::net::TcpListener = socket.into();
        let addr = socket.local_addr()?;
        Ok(ThreadedListener {
            socket,
            addr,
            threads: threads.max(1),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `connections` until `shutdown` resolves; then stops accepting, lets every thread
    /// finish its connections (bounded) and returns. At most `max_connections` are served at
    /// once; the next ones wait, accepted, for a place, which an idle connection may be asked
    /// to make (see [`crate::connections`]).
    pub async fn serve(
        self,
        connections: impl Connections,
        max_connections: usize,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let table = Table::new(max_connections);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..self.threads)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<Handoff>())
            .unzip();
        let mut acceptor = Some((self.socket, senders));
        let mut finished = tokio::task::JoinSet::new();
        for (index, mut handoffs) in receivers.into_iter().enumerate() {
            let (connections, table, stopped) =
                (connections.clone(), table.clone(), Stop(stopped.clone()));
            let accepting = acceptor
                .take()
                .map(|(socket, senders)| (socket, senders, table.clone(), stopped.clone()));
            let (done, done_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
            std::thread::Builder::new()
                .name(format!("wid-serve-{index}"))
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|runtime| {
                            runtime.block_on(async move {
                                if let Some((socket, senders, table, stopped)) = accepting {
                                    let listener = TcpListener::from_std(socket)?;
                                    tokio::spawn(hand_out(listener, senders, table, stopped));
                                }
                                // Until the acceptor stops and drops its senders.
                                while let Some((stream, peer, lease)) = handoffs.recv().await {
                                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                                        continue;
                                    };
                                    tokio::spawn(connections.serve(
                                        stream,
                                        peer,
                                        stopped.clone(),
                                        lease,
                                    ));
                                }
                                table.drained(DRAIN).await;
                                Ok(())
                            })
                        });
                    let _ = done.send(result);
                })?;
            finished.spawn(async move {
                done_rx.await.unwrap_or_else(|_| {
                    Err(std::io::Error::other(
                        "a serving thread ended without a word",
                    ))
                })
            });
        }
        tokio::pin!(shutdown);
        let mut outcome = Ok(());
        tokio::select! {
            () = &mut shutdown => {},
            // A thread that stops on its own (its runtime or socket failed) stops them all.
            Some(early) = finished.join_next() => {
                outcome = early.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            }
        }
        let _ = stop.send(true);
        while let Some(result) = finished.join_next().await {
            if let (Ok(()), Ok(Err(e))) = (&outcome, result) {
                outcome = Err(e);
            }
        }
        outcome
    }
}

/// Accepts until `stop` fires and hands each connection, with its lease, to the serving
/// threads in turn.
async fn hand_out(
    listener: TcpListener,
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    table: Table,
    mut stop: Stop,
) {
    let mut next = 0;
    while let Some((stream, peer, lease)) = accept_one(&listener, &table, &mut stop).await {
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if senders[next].send((stream, peer, lease)).is_err() {
            break;
        }
        next = (next + 1) % senders.len();
    }
}

/// The next connection (TCP_NODELAY set) and a lease for it, or `None` once `stop` fires. The
/// connection is accepted first and then waits for a place, so that no place ever waits on an
/// accept, and the table knows whose connection needs one.
async fn accept_one(
    listener: &TcpListener,
    table: &Table,
    stop: &mut Stop,
) -> Option<(tokio::net::TcpStream, SocketAddr, Lease)> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a moment
                    // rather than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stop.stopped() => return None,
        };
        let lease = tokio::select! {
            lease = table.admit(peer.ip()) => lease,
            () = stop.stopped() => return None,
        };
        let _ = stream.set_nodelay(true);
        return Some((stream, peer, lease));
    }
}

/// Accepts until `stop` fires, each connection on a task of its own holding one of `slots`.
async fn accept_loop(
    listener: TcpListener,
    connections: impl Connections,
    table: Table,
    mut stop: Stop,
) {
    while let Some((stream, peer, lease)) = accept_one(&listener, &table, &mut stop).await {
        tokio::spawn(connections.serve(stream, peer, stop.clone(), lease));
    }
}

/// Raises the soft limit of open files to the hard limit, so that thousands of connections do
/// not run out of descriptors; returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
