//! One connection of the metadata port: read a request head, answer it, write the reply, until
//! the client goes, the connection idles out, or the server stops. The framing rules are pure
//! functions in [`wid_gce::http1`]; this is only their I/O.
//!
//! Bounds: an idle keep-alive connection is closed after [`IDLE`]; a whole request head must
//! arrive within the head timeout, counted from accept or from its first byte (slowloris), and a
//! reply must be taken by the client within the same time. While an answer is made (an upstream
//! call, a long-poll) the socket is still read, so a client that leaves frees its connection at
//! once; a stopping server answers held long-polls at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wid_gce::Reply;
use wid_gce::http1::{self, Connection, Framing};
use wid_runtime::connections::Lease;
use wid_runtime::serve::{Connections, Stop};

use crate::identify::Identified;
use crate::pods::Caller;
use crate::{Agent, Answer, metrics};

/// How long a keep-alive connection may sit idle between requests. Clients pool connections to
/// the metadata server for the life of the process; closing an idle one costs them a reconnect,
/// not an error.
const IDLE: Duration = Duration::from_secs(120);
/// The same for a connection whose address is no pod of the node (it was refused): no reason
/// to keep it.
const STRANGER_IDLE: Duration = Duration::from_secs(2);
/// Connections one address that is no pod may hold; more are closed at once. Far more than a
/// new pod opens before the agent learns of it, far fewer than the node's connections.
pub const STRANGER_CONNECTIONS: usize = 64;

#[derive(Clone)]
pub(crate) struct MetadataConnections {
    pub agent: Arc<Agent>,
}

impl Connections for MetadataConnections {
    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        stop: Stop,
        lease: Lease,
    ) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        serve(self.agent.clone(), stream, peer, stop, lease)
    }
}

/// The connection's ends as the pod sees them: what it dialled is the original destination of
/// the node's DNAT (169.254.169.254:80) when there was one, else the agent's own address.
fn ends(stream: &TcpStream, peer: SocketAddr) -> crate::attest::Ends {
    let socket = socket2::SockRef::from(stream);
    // An IPv4 pod on a dual-stack listener arrives as `::ffff:a.b.c.d`, NATed by IPv4's rules.
    let original = match peer {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => socket
            .original_dst_v4()
            .or_else(|_| socket.original_dst_v6()),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    let dialled = original
        .ok()
        .and_then(|address| address.as_socket())
        .or_else(|| stream.local_addr().ok())
        .unwrap_or(peer);
    crate::attest::Ends { pod: peer, dialled }
}

/// Why a connection ended, for the debug log.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The client closed it, or asked to (`Connection: close`, HTTP/1.0, a request body).
    Client,
    Idle,
    Stopped,
    /// A head that did not complete in time, or a reply the client did not take in time.
    Slow,
    BadHead,
    Io,
    /// Closed to make room for another connection, or one too many of an address that is no
    /// pod.
    Shed,
}

async fn serve(
    agent: Arc<Agent>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: Stop,
    lease: Lease,
) {
    let stranger = is_stranger(&agent, &lease);
    let end = if stranger && lease.earlier_peers() >= STRANGER_CONNECTIONS {
        End::Shed
    } else {
        let head_timeout = agent.config.header_read_timeout;
        let accepted = Accepted {
            peer,
            lease: &lease,
            stranger,
        };
        run(&agent, head_timeout, &mut stream, accepted, &mut stop).await
    };
    if matches!(end, End::Shed) {
        agent.metrics.connection_shed();
    }
    tracing::debug!(%peer, ?end, "metadata connection ended");
}

/// Who is at the far end of a connection, and its place in the listener's table.
struct Accepted<'a> {
    peer: SocketAddr,
    lease: &'a Lease,
    /// Whether the address was no pod's when the connection came.
    stranger: bool,
}

/// Whether the connection's address is no pod's (unknown, or shared), as its lease then says.
/// With attestation the node's own address is its host-network pods', told apart per connection.
fn is_stranger(agent: &Agent, lease: &Lease) -> bool {
    let ip = lease.ip();
    let on_the_host = agent.attestor.is_some() && agent.resolver.is_node_address(ip);
    let stranger = !on_the_host && !matches!(agent.resolver.resolve(ip), Caller::Pod(_));
    lease.set_stranger(stranger);
    stranger
}

async fn run(
    agent: &Arc<Agent>,
    head_timeout: Duration,
    stream: &mut TcpStream,
    accepted: Accepted<'_>,
    stop: &mut Stop,
) -> End {
    let mut conn = Conn {
        stream,
        peer: accepted.peer,
        lease: accepted.lease,
        head_timeout,
        input: Vec::with_capacity(1024),
        output: Vec::with_capacity(1024),
        head_deadline: Some(Instant::now() + head_timeout),
        attested: None,
        stranger: accepted.stranger,
        holding: false,
    };
    loop {
        let step = match conn.serve_next(agent, stop).await {
            Next::Served(step) => step,
            Next::Incomplete => conn.read_head(stop).await,
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// What [`Conn::serve_next`] did.
enum Next {
    /// A request was in the buffer and was answered (or the connection ended).
    Served(Result<(), End>),
    /// No whole request head is in the buffer yet.
    Incomplete,
}

/// One connection and what it carries from one request to the next.
struct Conn<'a> {
    stream: &'a mut TcpStream,
    peer: SocketAddr,
    lease: &'a Lease,
    head_timeout: Duration,
    input: Vec<u8>,
    output: Vec<u8>,
    /// One deadline for a whole head, from accept for the first and from its first byte for the
    /// next ones: a client that trickles a head a byte at a time is cut off all the same.
    head_deadline: Option<Instant>,
    /// The pod this connection was confirmed to come from (`--attest-callers`): once per
    /// connection and pod, not per request.
    attested: Option<String>,
    /// No pod's address: kept open only briefly between requests.
    stranger: bool,
    /// Whether bytes of an unfinished head are counted against the address (`Lease::hold_head`).
    holding: bool,
}

impl Conn<'_> {
    /// Answers the request whose head is in the buffer, if a whole one is.
    async fn serve_next(&mut self, agent: &Arc<Agent>, stop: &mut Stop) -> Next {
        let head = match http1::parse_head(&self.input) {
            Ok(Some(head)) => head,
            Ok(None) => return Next::Incomplete,
            Err(e) => {
                let reply = e.reply();
                let _ = self.write(&reply, (false, Connection::Close)).await;
                return Next::Served(Err(End::BadHead));
            }
        };
        self.head_deadline = None;
        self.lease.set_idle(false);
        if std::mem::take(&mut self.holding) {
            self.lease.hold_head(0);
        }
        let started = std::time::Instant::now();
        let relay = agent
            .passthrough
            .clone()
            .filter(|_| wid_gce::passthrough::relayable(&head))
            .map(|to| Relay {
                to,
                headers: wid_gce::passthrough::end_to_end_headers(&self.input[..head.len]),
            });
        let endpoint = match relay {
            Some(_) => metrics::Endpoint::Passthrough,
            None => metrics::Endpoint::of_path(head.request.path),
        };
        let head_only = head.request.method == "HEAD";
        let keep_alive = head.keep_alive;
        let mut connection = Connection::after(&head, stop.is_stopped());
        let len = head.len;
        let answer = answer(
            agent,
            self.stream,
            self.peer,
            (&head.request, relay),
            &mut self.attested,
        )
        .await;
        // Pipelined requests stay in the buffer; the usual case empties it.
        if len >= self.input.len() {
            self.input.clear();
        } else {
            self.input.drain(..len);
        }
        // The client went away while its answer was made.
        let Some(reply) = self.await_answer(answer, stop).await else {
            return Next::Served(Err(End::Client));
        };
        if stop.is_stopped() {
            connection = Connection::Close;
        }
        agent
            .metrics
            .request(endpoint, reply.status, started.elapsed());
        if let Err(end) = self.write(&reply, (head_only, connection)).await {
            return Next::Served(Err(end));
        }
        // A large head or reply is not kept for the life of a keep-alive connection.
        shrink(&mut self.input);
        shrink(&mut self.output);
        if connection == Connection::Close {
            return Next::Served(Err(if keep_alive {
                End::Stopped
            } else {
                End::Client
            }));
        }
        // A pod's answers are 200s; only another answer may mean its address changed.
        if self.stranger || reply.status != 200 {
            self.stranger = is_stranger(agent, self.lease);
        }
        Next::Served(Ok(()))
    }

    /// The reply of `answer`, once made; `None` when the client closed the connection first.
    async fn await_answer(&mut self, answer: Answer, stop: &mut Stop) -> Option<Reply> {
        match answer {
            Answer::Now(reply) => Some(reply),
            Answer::Later(later) => until_closed(self.stream, &mut self.input, later).await,
            Answer::Hold { reply, wait, slot } => {
                // A stopping server answers held long-polls at once, with what they would get
                // at their timeout.
                let held = async {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.stopped() => {}
                    }
                    reply
                };
                let reply = until_closed(self.stream, &mut self.input, held).await;
                drop(slot);
                reply
            }
        }
    }

    /// Reads more of a request head, within the bounds: the idle time between requests, the
    /// head's deadline, the address's share of unfinished heads; a stopping server or the
    /// table's call to make room ends the connection.
    async fn read_head(&mut self, stop: &mut Stop) -> Result<(), End> {
        let lease = self.lease;
        // The bytes of an unfinished head count against the address's bound.
        if !self.input.is_empty() {
            if !lease.hold_head(self.input.len()) {
                return Err(End::Shed);
            }
            self.holding = true;
        }
        // Bytes of a head already here (pipelined): its deadline runs from now.
        if !self.input.is_empty() && self.head_deadline.is_none() {
            self.head_deadline = Some(Instant::now() + self.head_timeout);
        }
        // Answering nothing: the table may ask this connection to make room.
        lease.set_idle(true);
        let idle = if self.stranger { STRANGER_IDLE } else { IDLE };
        let (stream, input) = (&mut *self.stream, &mut self.input);
        let read = match self.head_deadline {
            // Between requests: idle, until the client's next one or the server stops. A
            // request that came is read before a call to make room is heeded.
            None => tokio::select! {
                biased;
                read = tokio::time::timeout(idle, stream.read_buf(input)) => read.map_err(|_| End::Idle),
                () = stop.stopped() => Err(End::Stopped),
                () = lease.shed() => Err(End::Shed),
            },
            Some(deadline) => {
                let nothing_yet = input.is_empty();
                tokio::select! {
                    biased;
                    read = tokio::time::timeout_at(deadline, stream.read_buf(input)) => read.map_err(|_| End::Slow),
                    () = stop.stopped(), if nothing_yet => Err(End::Stopped),
                    () = lease.shed() => Err(End::Shed),
                }
            }
        };
        match read? {
            Ok(0) => Err(End::Client),
            Ok(_) => {
                if self.head_deadline.is_none() {
                    self.head_deadline = Some(Instant::now() + self.head_timeout);
                }
                Ok(())
            }
            Err(_) => Err(End::Io),
        }
    }

    /// Writes `reply` ([`respond`]) with this connection's bounds.
    async fn write(&mut self, reply: &Reply, framing: (bool, Connection)) -> Result<(), End> {
        respond(
            self.stream,
            &mut self.output,
            reply,
            framing,
            self.head_timeout,
            self.lease,
        )
        .await
    }
}

/// The answer to one request: the protocol's checks that need no caller (but for one relayed to
/// the node's own metadata service), then the caller identified once (at once in the usual
/// case; the slow cases settled in one step, boxed so that the usual request's future stays
/// small), then the pod's answer, or the relay's. `attested` is the pod
/// this connection was confirmed to come from (`--attest-callers`): once per connection and
/// pod, not per request.
async fn answer(
    agent: &Arc<Agent>,
    stream: &TcpStream,
    peer: SocketAddr,
    (request, relayed): (&wid_gce::Request<'_>, Option<Relay>),
    attested: &mut Option<String>,
) -> Answer {
    if relayed.is_none()
        && let Some(reply) = wid_gce::precheck(request)
    {
        return Answer::Now(reply);
    }
    let ip = wid_runtime::connections::canonical_ip(peer.ip());
    let pod = match agent.identify(ip, attested.as_deref()) {
        Identified::Pod(pod) => pod,
        Identified::Refused(reply) => return Answer::Now(reply),
        Identified::Unsettled(unsettled) => {
            let settled = agent.settle(unsettled, ends(stream, peer), attested);
            match Box::pin(settled).await {
                Ok(pod) => pod,
                Err(reply) => return Answer::Now(reply),
            }
        }
    };
    match relayed {
        // Only the node's own pods (confirmed, with attestation), as without wid: never
        // another host that reaches the agent's port.
        Some(to) => relay(agent, ip, request, to),
        None => agent.respond(ip, pod, request),
    }
}

/// A request for another cloud's metadata service, to be relayed (`--passthrough`): where to,
/// and the pod's end-to-end headers.
struct Relay {
    to: Arc<crate::passthrough::Passthrough>,
    headers: Vec<(String, Vec<u8>)>,
}

/// `request` of `pod`, relayed to the node's own metadata service, within the pod's share of
/// requests in flight.
fn relay(
    agent: &Agent,
    ip: std::net::IpAddr,
    request: &wid_gce::Request<'_>,
    relay: Relay,
) -> Answer {
    let Some(slot) = agent.per_pod.try_acquire(ip) else {
        return Answer::Now(crate::replies::too_many_requests(ip));
    };
    let (method, path, query) = (
        request.method.to_owned(),
        request.path.to_owned(),
        request.query.to_owned(),
    );
    Answer::Later(Box::pin(async move {
        let reply = relay
            .to
            .relay(&method, (&path, &query), relay.headers)
            .await;
        drop(slot);
        reply
    }))
}

/// `answer`, unless the client closes the connection first (`None`): an abandoned long-poll or
/// upstream wait must not keep its connection. Bytes of a pipelined next request are kept.
async fn until_closed(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    answer: impl std::future::Future<Output = Reply>,
) -> Option<Reply> {
    tokio::pin!(answer);
    loop {
        tokio::select! {
            reply = &mut answer => return Some(reply),
            read = stream.read_buf(input), if input.len() < http1::MAX_HEAD => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// Writes `reply` (`head_only` for HEAD) with the connection's fate. The usual reply fits the
/// socket's buffer at once; a client that does not take it has `timeout`, and meanwhile its
/// connection is answering nothing: it may be asked to make room.
async fn respond(
    stream: &mut TcpStream,
    output: &mut Vec<u8>,
    reply: &Reply,
    (head_only, connection): (bool, Connection),
    timeout: Duration,
    lease: &Lease,
) -> Result<(), End> {
    output.clear();
    http_date(|date| {
        http1::render(
            reply,
            Framing {
                date,
                head_only,
                connection,
            },
            output,
        )
    });
    let written = match stream.try_write(output) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return Err(End::Io),
    };
    if written < output.len() {
        lease.set_idle(true);
        let rest = tokio::time::timeout(timeout, stream.write_all(&output[written..]));
        let outcome = tokio::select! {
            biased;
            written = rest => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Io),
                Err(_) => Err(End::Slow),
            },
            () = lease.shed() => Err(End::Shed),
        };
        lease.set_idle(false);
        outcome?;
    }
    Ok(())
}

/// Gives back the memory of a buffer grown by a large head or reply, once it is empty.
fn shrink(buffer: &mut Vec<u8>) {
    const KEPT: usize = 1024;
    if buffer.is_empty() && buffer.capacity() > 4 * KEPT {
        *buffer = Vec::with_capacity(KEPT);
    }
}

/// Calls `f` with the current `Date` value, formatted once per second per thread.
fn http_date<T>(f: impl FnOnce(&str) -> T) -> T {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(&cached.1)
    })
}
