//! pgha-proxy's pool in one epoll loop: the twin of proxy/pool/client.ts (transaction and session
//! mode) for clients and server connections on plain TCP. The JavaScript side authenticates a client
//! and logs server connections in (SCRAM, MD5, auth files, the auth query: all unchanged), then hands
//! the descriptors over. From then on this loop frames both streams, links a client to an idle
//! server connection of its route on the current primary when a transaction starts, and back at
//! ReadyForQuery `I` once nothing more is pending — with no JavaScript in a transaction's path. In
//! session mode a client keeps the connection it got until it leaves; the connection then runs the
//! reset query (`DISCARD ALL` unless configured otherwise) before another client gets it.
//!
//! What client.ts does per message is done here the same way: settings a client asked for are SET
//! on the connection it lands on, named prepared statements get server-side names (the hash of the
//! query and parameter types, the same as prepared.ts gives them) and are prepared again wherever the
//! client lands, at most `max_prepared` per connection (least recently used closed first), LISTEN is
//! refused, a BEGIN whose server went away unanswered is sent again elsewhere, and a transaction in
//! flight on a server that goes away ends its client with a clear SQLSTATE.
//!
//! JavaScript is asked only when the loop cannot go on alone (`acquire`: no idle connection on the
//! primary for the route; it opens one and hands it over, or says `wait` when the pool is full) and
//! told what ended (`client-closed`, `server-closed`, `cancel`).

use mio::net::TcpStream;
use crate::relay::Drain;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use crate::pool_protocol::*;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// client and server ids are small numbers handed out in order: hashed by one multiplication
/// (Fibonacci hashing), not SipHash — these maps are looked up several times per transaction
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<IdHasher>>;

const WAKER: Token = Token(usize::MAX);
const CHUNK: usize = 64 * 1024;
/// how long a closed client's or server's last bytes may wait for a peer that does not read
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// why a connection the loop closed to make room in JavaScript's pool (server-closed's detail)
const GIVEN_BACK: &str = "closed to make room for a client waiting in the TypeScript pool";
const SERVER_LIFETIME: &str = "connected longer than --server-lifetime";

/// What the loop relayed, per route, for SHOW STATS and /metrics (read from any thread; written
/// by the loop alone)
#[derive(Default)]
pub struct PoolCounters {
    /// route → what its clients did (PgBouncer's SHOW STATS, per user and database)
    pub routes: Mutex<HashMap<String, Arc<RouteStats>>>,
}

impl PoolCounters {
    /// the counters of one route, made on first use (taken once per client, not per transaction)
    fn route(&self, route: &str) -> Arc<RouteStats> {
        self.routes.lock().unwrap().entry(route.to_string()).or_default().clone()
    }
}

/// What the clients of one route (user and database) did: PgBouncer's SHOW STATS totals. Written
/// by the loop alone, on the client's own `Arc` (no lookup on the per-transaction path).
#[derive(Default)]
pub struct RouteStats {
    /// ReadyForQuery `I` relayed: transactions, autocommit statements included
    pub xacts: AtomicU64,
    /// ReadyForQuery relayed (the proxy's own requests' not counted): one per simple Query or Sync answered
    pub queries: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    /// microseconds from a transaction's first message sent to the server to its ReadyForQuery `I`
    /// (idle in transaction included)
    pub xact_us: AtomicU64,
    /// microseconds from a request sent to the server to the ReadyForQuery that answers all sent
    pub query_us: AtomicU64,
    /// microseconds clients waited for a server connection of a full pool, and how many waits
    pub wait_us: AtomicU64,
    pub waits: AtomicU64,
}

impl RouteStats {
    pub fn snapshot(&self) -> [u64; 8] {
        [&self.xacts, &self.queries, &self.bytes_from_clients, &self.bytes_to_clients, &self.xact_us, &self.query_us, &self.wait_us, &self.waits].map(|a| a.load(Ordering::Relaxed))
    }
}

/// What the loop tells the JavaScript side.
#[derive(Debug, Clone)]
pub struct PoolEvent {
    /// acquire (client), client-closed (client, detail), server-closed (server, lost, detail),
    /// cancel (server: what runs there is no longer wanted)
    pub kind: &'static str,
    pub client: u32,
    pub server: u32,
    pub detail: String,
    /// the server (or the network) ended the connection, not the pool
    pub lost: bool,
}

pub trait PoolSink: Send + Sync + 'static {
    fn emit(&self, e: PoolEvent);
}

/// a server connection handed over by JavaScript (logged in, at ReadyForQuery `I`)
pub struct ServerInit {
    pub id: u32,
    pub sock: TcpStream,
    pub route: String,
    pub node: String,
    /// settings as the server reported them (names in lower case)
    pub settings: Vec<(String, String)>,
    /// statements already prepared on it (server-side names)
    pub prepared: Vec<String>,
}

enum Command {
    AddClient { id: u32, sock: TcpStream, route: String, settings: Vec<(String, String)>, max_frontend: u32, offset: u64 },
    GiveServer { client: u32, server: ServerInit },
    AddIdleServer(ServerInit),
    Wait { client: u32 },
    FailClient { client: u32, error: Vec<u8> },
    SetPrimary(Option<String>),
    DrainNode { node: String, why: String },
    CloseIdle { node: String },
    CloseServer { id: u32 },
    SetPaused(bool),
    GiveBack { route: String, node: String, n: u32 },
    Expire { idle: Option<Duration>, retire: Vec<u32> },
    Snapshot(mpsc::Sender<String>),
    Stop,
}

/// reported settings a client may change with SET that follow it to the next server connection
const TRACKED: [&str; 6] = ["client_encoding", "datestyle", "intervalstyle", "timezone", "standard_conforming_strings", "application_name"];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Act {
    /// relay the answer
    Fwd,
    /// the proxy's own request: drop its answer
    Swallow,
    /// not sent: answer with `reply` when its turn comes
    Fake(&'static [u8]),
}

#[derive(Debug)]
struct Pending {
    t: u8,
    act: Act,
    /// a Parse the proxy sent: its server-side name (forgotten when the server skips it)
    prepared: Option<String>,
    /// a Close the proxy sent to make room: the statement it closes (kept when the server skips it)
    evicted: Option<String>,
}

impl Pending {
    fn new(t: u8, act: Act) -> Self {
        Pending { t, act, prepared: None, evicted: None }
    }
}

/// shared (Rc): a Bind or Describe of a named statement takes its names without copying them
struct Statement {
    server: Rc<str>,
    /// the Parse message under the server-side name
    parse: Rc<[u8]>,
}

struct Setting {
    lname: String,
    name: String,
    value: String,
}

struct Out {
    buf: Vec<u8>,
    off: usize,
    /// write interest registered
    want_write: bool,
}

impl Out {
    fn new() -> Self {
        Out { buf: Vec::new(), off: 0, want_write: false }
    }
    fn pending(&self) -> bool {
        self.off < self.buf.len()
    }
    /// write what is pending, with write interest registered exactly while something stays
    fn flush_to(&mut self, sock: &mut TcpStream, registry: &Registry, token: Token) -> std::io::Result<()> {
        let done = self.flush(sock)?;
        if done == self.want_write {
            self.want_write = !done;
            let _ = registry.reregister(sock, token, if done { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE });
        }
        Ok(())
    }

    /// write what is pending; Ok(true) when all went out
    fn flush(&mut self, sock: &mut TcpStream) -> std::io::Result<bool> {
        while self.off < self.buf.len() {
            match sock.write(&self.buf[self.off..]) {
                Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "write returned 0")),
                Ok(n) => self.off += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.off = 0;
        Ok(true)
    }
}

pub struct Client {
    sock: TcpStream,
    route: String,
    settings: Vec<Setting>,
    statements: HashMap<Vec<u8>, Statement>,
    max_frontend: u32,
    /// bytes of the client's stream framed before `inbuf` (for error offsets, counted as client.ts's Framer counts)
    offset: u64,
    /// bytes read and not yet sent on (whole messages, then perhaps part of one)
    inbuf: Vec<u8>,
    out: Out,
    server: Option<u32>,
    queue: VecDeque<Pending>,
    pending_ready: u32,
    /// extended-protocol messages sent since the last Sync: the server holds state for them
    partial: bool,
    /// BEGIN / START TRANSACTION sent on the linked server and nothing answered yet: can go elsewhere
    replay: Option<Vec<Vec<u8>>>,
    answered: bool,
    server_sent_fatal: bool,
    /// the proxy's own SET failed: (SQLSTATE, message)
    set_failed: Option<(String, String)>,
    /// asked JavaScript for a server connection, or queued for one here
    waiting: bool,
    waiting_since: Option<Instant>,
    /// not read while its messages wait for a server connection or the server's socket is full
    read_blocked: bool,
    transactions: u64,
    /// bytes still to come of a message being sent on as it arrives (too long to hold whole)
    streaming: usize,
    stats: Arc<RouteStats>,
    /// when the transaction and the request now running were first sent to the server
    xact_start: Option<Instant>,
    query_start: Option<Instant>,
}

impl Client {
    /// the linked server went away: when nothing but BEGIN was sent there and nothing came back,
    /// the BEGIN goes back in front of what the client sent since, to be sent to another server
    /// connection (true); else nothing changes (false)
    fn begin_again(&mut self) -> bool {
        let Some(r) = self.replay.take() else { return false };
        if r.is_empty() || self.answered || self.server_sent_fatal {
            return false;
        }
        let mut again: Vec<u8> = r.concat();
        again.extend_from_slice(&self.inbuf);
        self.inbuf = again;
        self.queue.clear();
        self.pending_ready = 0;
        self.partial = false;
        self.transactions = self.transactions.saturating_sub(1);
        true
    }
}

pub struct Server {
    sock: TcpStream,
    route: String,
    node: String,
    settings: HashMap<String, String>,
    /// server-side statement name → last use (least recently used closed first)
    prepared: HashMap<String, u64>,
    inbuf: Vec<u8>,
    out: Out,
    client: Option<u32>,
    tx_status: u8,
    read_blocked: bool,
    /// session mode: the reset query runs, its answers are read here before the connection is idle
    resetting: bool,
    /// the reset query's error, once one came (its ReadyForQuery may come in a later read)
    reset_failed: Option<String>,
    /// bytes still to come of a row or COPY data message being sent on to the client as it arrives
    streaming: usize,
    /// when it was last made idle (meaningful while it is in the idle list)
    idle_since: Instant,
    /// past --server-lifetime: closed instead of made idle
    retire: bool,
}

impl Server {
    fn touch(&mut self, name: &str, clock: &mut u64) {
        *clock += 1;
        if let Some(v) = self.prepared.get_mut(name) {
            *v = *clock;
        }
    }
    fn add_prepared(&mut self, name: String, clock: &mut u64) {
        *clock += 1;
        self.prepared.insert(name, *clock);
    }
    fn least_recent(&self) -> Option<String> {
        self.prepared.iter().min_by_key(|(_, &v)| v).map(|(k, _)| k.clone())
    }
}

fn client_token(id: u32) -> Token {
    Token((id as usize) << 1)
}
fn server_token(id: u32) -> Token {
    Token(((id as usize) << 1) | 1)
}
/// drains live on tokens of their own (the id space above every client and server)
const DRAIN_BASE: usize = 1 << 40;

/// the bookkeeping of a message sent on as it arrives, unchanged (streamable says which): what
/// to_server does for that kind of message, without its bytes
fn stream_start(c: &mut Client, kind: u8, session: bool) {
    // (a message this long is no BEGIN to send again elsewhere)
    c.replay = None;
    count_request(c, kind);
    if !session && (kind == t::QUERY || kind == t::BIND) {
        c.queue.push_back(Pending::new(kind, Act::Fwd));
    }
}

/// the next bytes of a message sent on as it arrives (`rest` of it still to come), from `buf` at
/// `off` to `to`; true once it has all gone
fn pass_on(rest: &mut usize, buf: &[u8], off: &mut usize, to: &mut Vec<u8>) -> bool {
    let k = (*rest).min(buf.len() - *off);
    to.extend_from_slice(&buf[*off..*off + k]);
    *rest -= k;
    *off += k;
    *rest == 0
}

/// what a message passed on as it came leaves the server owing: a ReadyForQuery (Query, Sync,
/// FunctionCall), or extended-protocol state until the next Sync
fn count_request(c: &mut Client, kind: u8) {
    match kind {
        t::QUERY | t::SYNC => {
            c.pending_ready += 1;
            c.partial = false;
        }
        t::FUNCTION_CALL => c.pending_ready += 1,
        t::PARSE | t::BIND | t::DESCRIBE | t::EXECUTE | t::CLOSE => c.partial = true,
        _ => {}
    }
}

/// one client message on its way to the linked server (client.ts toServer)
fn to_server(c: &mut Client, s: &mut Server, msg: &[u8], max_prepared: usize, clock: &mut u64, session: bool) {
    let kind = msg[0];
    if let Some(r) = c.replay.as_mut() {
        if kind == t::QUERY && is_begin(query_text(msg)) {
            r.push(msg.to_vec());
        } else {
            c.replay = None;
        }
    }
    if session {
        // the connection is the client's for its whole session: everything goes as it came, only
        // counted (what is pending when the client leaves decides whether the connection is reused)
        count_request(c, kind);
        return s.out.buf.extend_from_slice(msg);
    }
    match kind {
        t::QUERY => {
            c.pending_ready += 1;
            c.partial = false;
            c.queue.push_back(Pending::new(kind, Act::Fwd));
            if starts_with_listen(query_text(msg)) {
                s.out.buf.extend_from_slice(&query_message(&not_supported("LISTEN")));
            } else {
                s.out.buf.extend_from_slice(msg);
            }
        }
        t::SYNC | t::FUNCTION_CALL => {
            c.pending_ready += 1;
            if kind == t::SYNC {
                c.partial = false;
            }
            c.queue.push_back(Pending::new(kind, Act::Fwd));
            s.out.buf.extend_from_slice(msg);
        }
        t::FLUSH => s.out.buf.extend_from_slice(msg),
        t::PARSE => {
            c.partial = true;
            let Some((name, at)) = cstr_at(msg, 5) else {
                // malformed: the server says so
                c.queue.push_back(Pending::new(kind, Act::Fwd));
                return s.out.buf.extend_from_slice(msg);
            };
            if name.is_empty() {
                c.queue.push_back(Pending::new(kind, Act::Fwd));
                return s.out.buf.extend_from_slice(msg);
            }
            let rest = &msg[at..];
            let query = cstr_at(rest, 0).map(|(q, _)| q).unwrap_or(rest);
            if starts_with_listen(query) {
                c.queue.push_back(Pending::new(kind, Act::Fwd));
                let mut body = vec![0u8];
                body.extend_from_slice(not_supported("LISTEN").as_bytes());
                body.push(0);
                body.extend_from_slice(&rest[(query.len() + 1).min(rest.len())..]);
                return s.out.buf.extend_from_slice(&message(t::PARSE, &body));
            }
            let srv = server_name(rest);
            let mut body = Vec::with_capacity(srv.len() + 1 + rest.len());
            body.extend_from_slice(srv.as_bytes());
            body.push(0);
            body.extend_from_slice(rest);
            let parse = message(t::PARSE, &body);
            let known = s.prepared.contains_key(&srv);
            if known {
                s.touch(&srv, clock);
                c.queue.push_back(Pending::new(kind, Act::Fake(PARSE_COMPLETE)));
            } else {
                make_room(c, s, max_prepared);
                s.add_prepared(srv.clone(), clock);
                s.out.buf.extend_from_slice(&parse);
                c.queue.push_back(Pending { t: kind, act: Act::Fwd, prepared: Some(srv.clone()), evicted: None });
            }
            c.statements.insert(name.to_vec(), Statement { server: srv.into(), parse: parse.into() });
        }
        t::BIND => {
            c.partial = true;
            let named = cstr_at(msg, 5).and_then(|(_, at)| cstr_at(msg, at).map(|(st, at2)| (at, st, at2)));
            if let Some((portal_end, st, at2)) = named.filter(|(_, st, _)| !st.is_empty()) {
                if let Some(stmt) = c.statements.get(st) {
                    let (srv, parse) = (stmt.server.clone(), stmt.parse.clone());
                    ensure_prepared(c, s, &srv, &parse, max_prepared, clock);
                    let mut body = Vec::with_capacity(msg.len() + srv.len());
                    body.extend_from_slice(&msg[5..portal_end]);
                    body.extend_from_slice(srv.as_bytes());
                    body.push(0);
                    body.extend_from_slice(&msg[at2..]);
                    c.queue.push_back(Pending::new(kind, Act::Fwd));
                    return s.out.buf.extend_from_slice(&message(t::BIND, &body));
                }
            }
            c.queue.push_back(Pending::new(kind, Act::Fwd));
            s.out.buf.extend_from_slice(msg);
        }
        t::DESCRIBE | t::CLOSE => {
            c.partial = true;
            let target = if msg.len() > 5 && msg[5] == b'S' { cstr_at(msg, 6).map(|(n, _)| n).filter(|n| !n.is_empty()) } else { None };
            if let Some(name) = target {
                if kind == t::CLOSE {
                    if c.statements.remove(name).is_some() {
                        // kept prepared on the server for others; the client's name is gone
                        c.queue.push_back(Pending::new(kind, Act::Fake(CLOSE_COMPLETE)));
                        return;
                    }
                } else if let Some(stmt) = c.statements.get(name) {
                    let (srv, parse) = (stmt.server.clone(), stmt.parse.clone());
                    ensure_prepared(c, s, &srv, &parse, max_prepared, clock);
                    let mut body = vec![b'S'];
                    body.extend_from_slice(srv.as_bytes());
                    body.push(0);
                    c.queue.push_back(Pending::new(kind, Act::Fwd));
                    return s.out.buf.extend_from_slice(&message(kind, &body));
                }
            }
            c.queue.push_back(Pending::new(kind, Act::Fwd));
            s.out.buf.extend_from_slice(msg);
        }
        t::EXECUTE => {
            c.partial = true;
            c.queue.push_back(Pending::new(kind, Act::Fwd));
            s.out.buf.extend_from_slice(msg);
        }
        // CopyData, CopyDone, CopyFail: answered as part of the Query / Execute that started the COPY
        _ => s.out.buf.extend_from_slice(msg),
    }
}

fn ensure_prepared(c: &mut Client, s: &mut Server, srv: &str, parse: &[u8], max_prepared: usize, clock: &mut u64) {
    if s.prepared.contains_key(srv) {
        return s.touch(srv, clock);
    }
    make_room(c, s, max_prepared);
    s.add_prepared(srv.to_string(), clock);
    c.queue.push_back(Pending { t: t::PARSE, act: Act::Swallow, prepared: Some(srv.to_string()), evicted: None });
    s.out.buf.extend_from_slice(parse);
}

/// before one more statement is prepared on `s`: close the least recently used beyond `max_prepared`
fn make_room(c: &mut Client, s: &mut Server, max_prepared: usize) {
    while s.prepared.len() >= max_prepared.max(1) {
        let Some(lru) = s.least_recent() else { break };
        s.prepared.remove(&lru);
        let mut body = vec![b'S'];
        body.extend_from_slice(lru.as_bytes());
        body.push(0);
        s.out.buf.extend_from_slice(&message(t::CLOSE, &body));
        c.queue.push_back(Pending { t: t::CLOSE, act: Act::Swallow, prepared: None, evicted: Some(lru) });
    }
}

/// answers the proxy gives itself, once every answer before them has gone to the client
fn flush_fakes(c: &mut Client) {
    while let Some(Pending { act: Act::Fake(reply), .. }) = c.queue.front() {
        c.out.buf.extend_from_slice(reply);
        c.queue.pop_front();
    }
}

/// one server message for the linked client (client.ts onServerMessage); Ok(true): the transaction is over
fn from_server(c: &mut Client, s: &mut Server, msg: &[u8], clock: &mut u64) -> Result<bool, (String, String)> {
    let kind = msg[0];
    let body = &msg[5..];
    let head = c.queue.front().map(|p| (p.t, p.act));
    let swallow_query = matches!(head, Some((t::QUERY, Act::Swallow)));
    match kind {
        b'Z' => {
            let st = body.first().copied().unwrap_or(b'I');
            s.tx_status = st;
            c.pending_ready = c.pending_ready.saturating_sub(1);
            if let Some((_, act)) = head {
                c.queue.pop_front();
                if act == Act::Swallow {
                    if let Some(f) = c.set_failed.take() {
                        return Err(f);
                    }
                    return Ok(false);
                }
            }
            c.out.buf.extend_from_slice(msg);
            c.stats.queries.fetch_add(1, Ordering::Relaxed);
            let idle = st == b'I';
            if idle {
                c.stats.xacts.fetch_add(1, Ordering::Relaxed);
            }
            if c.pending_ready == 0 {
                let now = Instant::now();
                if let Some(t) = c.query_start.take() {
                    c.stats.query_us.fetch_add(now.duration_since(t).as_micros() as u64, Ordering::Relaxed);
                }
                if idle {
                    if let Some(t) = c.xact_start.take() {
                        c.stats.xact_us.fetch_add(now.duration_since(t).as_micros() as u64, Ordering::Relaxed);
                    }
                }
            }
            return Ok(st == b'I' && c.pending_ready == 0 && !c.partial && c.streaming == 0 && c.queue.is_empty());
        }
        b'S' => {
            if swallow_query {
                return Ok(false);
            }
            if let Some((k, at)) = cstr_at(body, 0) {
                let v = cstr_at(body, at).map(|(v, _)| v).unwrap_or_default();
                let k = String::from_utf8_lossy(k).into_owned();
                let v = String::from_utf8_lossy(v).into_owned();
                let lk = k.to_lowercase();
                if TRACKED.contains(&lk.as_str()) {
                    match c.settings.iter_mut().find(|x| x.lname == lk) {
                        Some(x) => x.value = v.clone(),
                        None => c.settings.push(Setting { lname: lk.clone(), name: k, value: v.clone() }),
                    }
                }
                s.settings.insert(lk, v);
            }
            c.out.buf.extend_from_slice(msg);
            return Ok(false);
        }
        b'N' | b'A' => {
            // notices and notifications belong to no request
            if !swallow_query {
                c.out.buf.extend_from_slice(msg);
            }
            return Ok(false);
        }
        b'E' => {
            let (sev, code, m) = error_fields(body);
            if crate::relay::is_fatal(&sev) {
                // the server is going away before it answered a BEGIN: sent again elsewhere, the client never knows
                if c.replay.as_ref().is_some_and(|r| !r.is_empty()) && !c.answered {
                    return Ok(false);
                }
                c.server_sent_fatal = true;
            }
            let Some((ht, act)) = head else {
                c.out.buf.extend_from_slice(msg);
                return Ok(false);
            };
            if ht == t::QUERY || ht == t::FUNCTION_CALL {
                if act == Act::Swallow {
                    c.set_failed = Some((code, m));
                } else {
                    c.out.buf.extend_from_slice(msg);
                }
                return Ok(false);
            }
            // extended protocol: the server skips everything up to the Sync
            c.out.buf.extend_from_slice(msg);
            while c.queue.front().is_some_and(|p| p.t != t::SYNC) {
                let p = c.queue.pop_front().unwrap();
                if let Some(n) = p.prepared {
                    s.prepared.remove(&n);
                }
                if let Some(n) = p.evicted {
                    s.add_prepared(n, clock);
                }
            }
            return Ok(false);
        }
        _ => {}
    }
    let Some((ht, act)) = head else {
        c.out.buf.extend_from_slice(msg);
        return Ok(false);
    };
    if act != Act::Swallow {
        c.out.buf.extend_from_slice(msg);
    }
    if completes(kind, ht) {
        c.queue.pop_front();
    }
    Ok(false)
}

// ---------------------------------------------------------------- the loop

struct Engine {
    poll: Poll,
    sink: Arc<dyn PoolSink>,
    links: Arc<Mutex<IdMap<u32>>>,
    clients: IdMap<Client>,
    servers: IdMap<Server>,
    /// route → idle server connections (on the primary when they were put there), the most recently used last
    idle: HashMap<String, Vec<u32>>,
    /// route → clients waiting for a connection of that route to come back
    waiters: HashMap<String, VecDeque<u32>>,
    primary: Option<String>,
    paused: bool,
    max_prepared: usize,
    /// session mode (else transaction mode)
    session: bool,
    /// session mode: the reset query as a Query message (None: no reset)
    reset: Option<Vec<u8>>,
    /// how long a client may wait here for a connection of a full pool, and what it is then told (a
    /// FATAL ErrorResponse) before it is closed (PgBouncer's query_wait_timeout; None: no limit)
    wait_limit: Option<(Duration, Vec<u8>)>,
    /// when the first client waiting here reaches the limit (None: nobody waits, or no limit)
    next_expiry: Option<Instant>,
    counters: Arc<PoolCounters>,
    /// route and node (`route\0node`) → connections to close rather than keep, so that JavaScript's
    /// pool has room for clients the loop does not carry (TLS) that wait for that full pool
    give_back: HashMap<String, u32>,
    clock: u64,
    drains: HashMap<usize, Drain>,
    next_drain: usize,
    buf: Vec<u8>,
}

impl Engine {
    fn emit(&self, kind: &'static str, client: u32, server: u32, detail: String, lost: bool) {
        self.sink.emit(PoolEvent { kind, client, server, detail, lost });
    }

    fn drain_socket(&mut self, sock: TcpStream, out: Vec<u8>) {
        let mut d = Drain { sock, out, off: 0, deadline: Instant::now() + DRAIN_LIMIT };
        if !d.step() {
            let tok = DRAIN_BASE + self.next_drain;
            self.next_drain += 1;
            if self.poll.registry().register(&mut d.sock, Token(tok), Interest::WRITABLE).is_ok() {
                self.drains.insert(tok, d);
            }
        }
    }

    // ------------------------------------------------------------ clients

    fn add_client(&mut self, id: u32, mut sock: TcpStream, route: String, settings: Vec<(String, String)>, max_frontend: u32, offset: u64) {
        let stats = self.counters.route(&route);
        if self.poll.registry().register(&mut sock, client_token(id), Interest::READABLE).is_err() {
            self.emit("client-closed", id, 0, "could not register the client's socket".into(), false);
            return;
        }
        let settings = settings.into_iter().map(|(name, value)| Setting { lname: name.to_lowercase(), name, value }).collect();
        let c = Client {
            sock,
            route,
            settings,
            statements: HashMap::new(),
            max_frontend,
            offset,
            inbuf: Vec::new(),
            out: Out::new(),
            server: None,
            queue: VecDeque::new(),
            pending_ready: 0,
            partial: false,
            replay: None,
            answered: false,
            server_sent_fatal: false,
            set_failed: None,
            waiting: false,
            waiting_since: None,
            read_blocked: false,
            transactions: 0,
            streaming: 0,
            stats,
            xact_start: None,
            query_start: None,
        };
        self.clients.insert(id, c);
        self.client_readable(id, false);
    }

    /// read the client until the read would block (or until its messages must wait), and send them on
    fn client_readable(&mut self, id: u32, short_read_drains: bool) {
        loop {
            let Some(c) = self.clients.get_mut(&id) else { return };
            // messages that wait for a server connection, or a server whose socket is full: not read now
            let blocked = match c.server {
                None => !c.inbuf.is_empty() && c.waiting,
                Some(sid) => self.servers.get(&sid).is_some_and(|s| s.out.pending()),
            };
            if blocked {
                c.read_blocked = true;
                return;
            }
            c.read_blocked = false;
            let n = match c.sock.read(&mut self.buf) {
                Ok(0) => return self.close_client(id, None, "client closed"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.close_client(id, None, &format!("client error: {e}")),
            };
            c.inbuf.extend_from_slice(&self.buf[..n]);
            c.stats.bytes_from_clients.fetch_add(n as u64, Ordering::Relaxed);
            self.pump_client(id);
            if short_read_drains && n < CHUNK {
                return;
            }
        }
    }

    /// send the client's whole messages to its server connection (linking one first)
    fn pump_client(&mut self, id: u32) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        let inbuf = std::mem::take(&mut c.inbuf);
        let mut off = 0;
        let mut terminate = false;
        let mut violation: Option<String> = None;
        let mut need_server = false;
        let mut lost_mid_message = false;
        loop {
            // the rest of a message being sent on as it arrives
            if c.streaming > 0 {
                let Some(s) = c.server.and_then(|sid| self.servers.get_mut(&sid)) else {
                    lost_mid_message = true;
                    break;
                };
                if !pass_on(&mut c.streaming, &inbuf, &mut off, &mut s.out.buf) {
                    break;
                }
                continue;
            }
            let n = match whole_message(&inbuf[off..], c.max_frontend, c.offset + off as u64) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    // a long message is not held whole (a client could make the proxy hold 1 GB):
                    // once its start is here it goes to the server as it comes, as PostgreSQL reads it
                    let have = inbuf.len() - off;
                    if have >= 5 {
                        let len = declared_length(&inbuf[off..]);
                        if len >= STREAM_ABOVE && have >= STREAM_HEAD && streamable(&inbuf[off..], self.session) {
                            let Some(sid) = c.server else {
                                need_server = true;
                                break;
                            };
                            let Some(s) = self.servers.get_mut(&sid) else { break };
                            stream_start(c, inbuf[off], self.session);
                            s.out.buf.extend_from_slice(&inbuf[off..]);
                            c.streaming = len - have;
                            off = inbuf.len();
                        }
                    }
                    break;
                }
                Err(e) => {
                    violation = Some(e);
                    break;
                }
            };
            if inbuf[off] == t::TERMINATE {
                terminate = true;
                break;
            }
            let Some(sid) = c.server else {
                need_server = true;
                break;
            };
            let Some(s) = self.servers.get_mut(&sid) else { break };
            to_server(c, s, &inbuf[off..off + n], self.max_prepared, &mut self.clock, self.session);
            off += n;
        }
        c.inbuf = inbuf;
        if off > 0 {
            c.inbuf.drain(..off);
            c.offset += off as u64;
            // something went to the server: a request (and perhaps a transaction) runs from now
            if c.server.is_some() && c.query_start.is_none() {
                let now = Instant::now();
                c.query_start = Some(now);
                c.xact_start.get_or_insert(now);
            }
        }
        if let Some(sid) = c.server {
            // the proxy's own answers (a Parse the server connection already has) count as sent to the client
            let before = c.out.buf.len();
            flush_fakes(c);
            let faked = (c.out.buf.len() - before) as u64;
            if faked > 0 {
                c.stats.bytes_to_clients.fetch_add(faked, Ordering::Relaxed);
            }
            if let Some(s) = self.servers.get_mut(&sid) {
                if s.out.pending() {
                    self.flush_server(sid);
                }
            }
            self.flush_client(id);
        }
        if lost_mid_message {
            let err = error_response("FATAL", "08006", "pgha-proxy: the server connection went away in the middle of a message of this client", None, None);
            return self.close_client(id, Some(err), "its server connection went away in the middle of a message");
        }
        if let Some(v) = violation {
            // as the TypeScript pool and the relay: FATAL 08P01 naming the byte, then closed
            let err = error_response("FATAL", "08P01", &format!("pgha-proxy: {v}"), None, None);
            return self.close_client(id, Some(err), &format!("client protocol violation: {v}"));
        }
        if terminate {
            return self.close_client(id, None, "client terminated");
        }
        if need_server {
            self.need_server(id);
        }
    }

    fn need_server(&mut self, id: u32) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        if c.waiting || c.server.is_some() {
            return;
        }
        if !self.paused && self.waiters.get(&c.route).is_none_or(|w| w.is_empty()) {
            if let Some(sid) = self.take_idle(id) {
                return self.link(id, sid);
            }
        }
        let Some(c) = self.clients.get_mut(&id) else { return };
        c.waiting = true;
        c.waiting_since = Some(Instant::now());
        self.emit("acquire", id, 0, String::new(), false);
    }

    /// JavaScript says the route's pool is full: wait here for a connection to come back
    fn wait(&mut self, id: u32) {
        if self.clients.get(&id).is_none_or(|c| c.server.is_some()) {
            return;
        }
        if !self.paused {
            if let Some(sid) = self.take_idle(id) {
                return self.link(id, sid);
            }
        }
        let Some(c) = self.clients.get(&id) else { return };
        let route = c.route.clone();
        // every later waiter's deadline is later than the first's: only an empty schedule is set here
        if let (Some((limit, _)), None) = (&self.wait_limit, self.next_expiry) {
            self.next_expiry = Some(c.waiting_since.unwrap_or_else(Instant::now) + *limit);
        }
        self.waiters.entry(route).or_default().push_back(id);
    }

    /// clients that waited the limit for a connection are told so and closed; the next deadline is set
    fn expire_waiters(&mut self) {
        let Some((limit, error)) = &self.wait_limit else { return };
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for &id in self.waiters.values().flatten() {
            let Some(since) = self.clients.get(&id).and_then(|c| c.waiting_since) else { continue };
            let due = since + *limit;
            if due <= now {
                expired.push(id);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        self.next_expiry = next;
        let error = error.clone();
        for id in expired {
            // (these words are how JavaScript tells this end from others: NATIVE_WAIT_TIMEOUT in native-pool.ts)
            self.close_client(id, Some(error.clone()), "waited --pool-wait-timeout for a server connection");
        }
    }

    /// an idle connection of the client's route on the primary (others found on the way are closed)
    fn take_idle(&mut self, id: u32) -> Option<u32> {
        let primary = self.primary.as_deref()?;
        let c = self.clients.get(&id)?;
        let v = self.idle.get_mut(c.route.as_str())?;
        let mut stale = Vec::new();
        let mut found = None;
        while let Some(sid) = v.pop() {
            if self.servers.get(&sid).is_some_and(|s| s.node == primary) {
                found = Some(sid);
                break;
            }
            stale.push(sid);
        }
        for sid in stale {
            self.close_server(sid, false, "its node is no longer the primary");
        }
        found
    }

    fn link(&mut self, id: u32, sid: u32) {
        let (Some(c), Some(s)) = (self.clients.get_mut(&id), self.servers.get_mut(&sid)) else { return };
        c.waiting = false;
        if let Some(since) = c.waiting_since.take() {
            c.stats.wait_us.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
            c.stats.waits.fetch_add(1, Ordering::Relaxed);
        }
        c.server = Some(sid);
        c.transactions += 1;
        c.replay = Some(Vec::new());
        c.answered = false;
        c.server_sent_fatal = false;
        s.client = Some(id);
        self.links.lock().unwrap().insert(id, sid);
        // settings the client asked for that the server connection does not have
        let mut sets = Vec::new();
        for st in &c.settings {
            if s.settings.get(&st.lname) == Some(&st.value) {
                continue;
            }
            sets.push(format!("SET {} = {}", quote_ident(&st.name), quote_literal(&st.value)));
            s.settings.insert(st.lname.clone(), st.value.clone());
        }
        if !sets.is_empty() {
            c.queue.push_back(Pending::new(t::QUERY, Act::Swallow));
            c.pending_ready += 1;
            s.out.buf.extend_from_slice(&query_message(&sets.join("; ")));
        }
        self.pump_client(id);
        // bytes the client sent while it waited are read now
        if self.clients.get(&id).is_some_and(|c| c.read_blocked) {
            self.client_readable(id, false);
        }
        // and what the server sent since it went idle (nothing, normally)
        if self.servers.get(&sid).is_some_and(|s| s.read_blocked) {
            self.server_readable(sid, false);
        }
    }

    fn flush_client(&mut self, id: u32) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        if !c.out.pending() {
            return;
        }
        if let Err(e) = c.out.flush_to(&mut c.sock, self.poll.registry(), client_token(id)) {
            self.close_client(id, None, &format!("client error: {e}"));
        }
    }

    /// end a client: its server connection back to the pool when clean (else cancelled and closed),
    /// `error` written first when its stream is between two messages, then FIN and close
    fn close_client(&mut self, id: u32, error: Option<Vec<u8>>, why: &str) {
        self.unlink(id, true);
        let Some(mut c) = self.clients.remove(&id) else { return };
        if let Some(w) = self.waiters.get_mut(&c.route) {
            w.retain(|&x| x != id);
        }
        let _ = self.poll.registry().deregister(&mut c.sock);
        // (what goes to the client is always whole messages: the error can follow)
        let mut out = c.out.buf.split_off(c.out.off);
        if let Some(e) = error {
            out.extend_from_slice(&e);
        }
        self.drain_socket(c.sock, out);
        self.emit("client-closed", id, 0, why.to_string(), false);
    }

    fn fail_client(&mut self, id: u32, error: Vec<u8>) {
        self.close_client(id, Some(error), "ended by the proxy");
    }

    // ------------------------------------------------------------ servers

    fn add_server(&mut self, init: ServerInit) -> Option<u32> {
        let ServerInit { id, mut sock, route, node, settings, prepared } = init;
        if self.poll.registry().register(&mut sock, server_token(id), Interest::READABLE).is_err() {
            self.emit("server-closed", 0, id, "could not register the server's socket".into(), false);
            return None;
        }
        let mut s = Server { sock, route, node, settings: settings.into_iter().collect(), prepared: HashMap::new(), inbuf: Vec::new(), out: Out::new(), client: None, tx_status: b'I', read_blocked: false, resetting: false, reset_failed: None, streaming: 0, idle_since: Instant::now(), retire: false };
        for p in prepared {
            s.add_prepared(p, &mut self.clock);
        }
        self.servers.insert(id, s);
        Some(id)
    }

    fn give_server(&mut self, client: u32, init: ServerInit) {
        let Some(sid) = self.add_server(init) else {
            if let Some(c) = self.clients.get_mut(&client) {
                c.waiting = false;
            }
            return self.need_server(client);
        };
        match self.clients.get(&client) {
            Some(c) if c.server.is_none() => self.link(client, sid),
            _ => self.release_server(sid, true),
        }
        self.server_readable(sid, false);
    }

    fn flush_server(&mut self, sid: u32) {
        let Some(s) = self.servers.get_mut(&sid) else { return };
        if let Err(e) = s.out.flush_to(&mut s.sock, self.poll.registry(), server_token(sid)) {
            self.server_gone(sid, &e.to_string());
        }
    }

    fn server_readable(&mut self, sid: u32, short_read_drains: bool) {
        loop {
            let Some(s) = self.servers.get_mut(&sid) else { return };
            if let Some(cid) = s.client {
                if self.clients.get(&cid).is_some_and(|c| c.out.pending()) {
                    s.read_blocked = true;
                    return;
                }
            }
            s.read_blocked = false;
            let n = match s.sock.read(&mut self.buf) {
                Ok(0) => return self.server_gone(sid, "connection closed"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.server_gone(sid, &e.to_string()),
            };
            let Some(cid) = s.client else {
                if s.resetting {
                    s.inbuf.extend_from_slice(&self.buf[..n]);
                    if !self.reset_answer(sid) {
                        return;
                    }
                    continue;
                }
                // an idle server said something (a FATAL before it closes): it is no longer usable
                return self.close_server(sid, true, "an idle pooled server connection spoke (a FATAL before it closes)");
            };
            s.inbuf.extend_from_slice(&self.buf[..n]);
            let Some(c) = self.clients.get_mut(&cid) else { return };
            let inbuf = std::mem::take(&mut s.inbuf);
            let before = c.out.buf.len();
            let mut off = 0;
            let mut release = false;
            let mut failed: Option<(String, String)> = None;
            let mut violation: Option<String> = None;
            loop {
                // the rest of a long row or COPY data message, sent on as it arrives
                if s.streaming > 0 {
                    if !pass_on(&mut s.streaming, &inbuf, &mut off, &mut c.out.buf) {
                        break;
                    }
                    continue;
                }
                let n = match server_message(&inbuf[off..], &s.node) {
                    Ok(Some(n)) => n,
                    Ok(None) => {
                        // a long DataRow or CopyData for the client is not held whole either
                        let have = inbuf.len() - off;
                        if have >= 5 && (inbuf[off] == b'D' || inbuf[off] == b'd') && c.queue.front().is_none_or(|p| p.act != Act::Swallow) {
                            let len = declared_length(&inbuf[off..]);
                            if len >= STREAM_ABOVE {
                                c.out.buf.extend_from_slice(&inbuf[off..]);
                                s.streaming = len - have;
                                off = inbuf.len();
                            }
                        }
                        break;
                    }
                    Err(v) => {
                        violation = Some(v);
                        break;
                    }
                };
                let msg = &inbuf[off..off + n];
                off += n;
                match from_server(c, s, msg, &mut self.clock) {
                    Ok(r) => release |= r,
                    Err(f) => {
                        failed = Some(f);
                        break;
                    }
                }
                flush_fakes(c);
            }
            s.inbuf = inbuf;
            if off > 0 {
                s.inbuf.drain(..off);
            }
            if c.out.buf.len() > before {
                c.answered = true;
                c.stats.bytes_to_clients.fetch_add((c.out.buf.len() - before) as u64, Ordering::Relaxed);
            }
            if let Some((code, m)) = failed {
                let err = error_response("FATAL", if code.is_empty() { "08P01" } else { &code }, &format!("pgha-proxy: a startup setting of this client failed on the server: {m}"), None, None);
                c.out.buf.extend_from_slice(&err);
                return self.close_client(cid, None, "a startup setting failed on the server");
            }
            if let Some(v) = violation {
                let err = error_response("FATAL", "08P01", &format!("pgha-proxy: {v}"), None, None);
                c.out.buf.extend_from_slice(&err);
                self.close_client(cid, None, &v);
                return self.close_server(sid, false, &v);
            }
            self.flush_client(cid);
            if release && !self.session && self.servers.get(&sid).is_some_and(|s| s.client == Some(cid)) {
                self.unlink(cid, true);
                // the client's next messages may already be here
                if self.clients.get(&cid).is_some_and(|c| !c.inbuf.is_empty()) {
                    self.pump_client(cid);
                }
            }
            if short_read_drains && n < CHUNK {
                return;
            }
        }
    }

    /// the client is done with its server connection (its transaction ended, or it went away)
    fn unlink(&mut self, id: u32, reusable: bool) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        let Some(sid) = c.server.take() else { return };
        self.links.lock().unwrap().remove(&id);
        let Some(s) = self.servers.get_mut(&sid) else { return };
        s.client = None;
        let clean = reusable && c.pending_ready == 0 && !c.partial && c.streaming == 0 && s.streaming == 0 && s.tx_status == b'I' && c.queue.is_empty() && s.inbuf.is_empty();
        let retire = s.retire;
        let cancel = !clean && c.pending_ready > 0;
        c.queue.clear();
        c.pending_ready = 0;
        c.partial = false;
        c.replay = None;
        if cancel {
            self.emit("cancel", id, sid, String::new(), false);
        }
        // (a connection past its lifetime is closed at release: no reset for it)
        if clean && self.session && !retire {
            return self.reset_server(sid);
        }
        self.release_server(sid, clean);
    }

    /// session mode: a connection its client left cleanly runs the reset query before it is idle
    fn reset_server(&mut self, sid: u32) {
        let (Some(s), Some(q)) = (self.servers.get_mut(&sid), self.reset.as_ref()) else {
            return self.release_server(sid, true);
        };
        s.resetting = true;
        s.out.buf.extend_from_slice(q);
        self.flush_server(sid);
    }

    /// the reset query's answers (in `inbuf`): at its ReadyForQuery the connection goes back to the
    /// pool, or is closed when the reset failed. false: the connection is no longer read here
    fn reset_answer(&mut self, sid: u32) -> bool {
        let Some(s) = self.servers.get_mut(&sid) else { return false };
        let inbuf = std::mem::take(&mut s.inbuf);
        let mut off = 0;
        let mut done: Option<u8> = None;
        loop {
            let n = match server_message(&inbuf[off..], &s.node) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(why) => {
                    self.close_server(sid, true, &why);
                    return false;
                }
            };
            let body = &inbuf[off + 5..off + n];
            match inbuf[off] {
                b'Z' => done = Some(body.first().copied().unwrap_or(b'I')),
                b'E' => s.reset_failed = Some(error_fields(body).2),
                b'S' => {
                    if let Some((k, at)) = cstr_at(body, 0) {
                        let v = cstr_at(body, at).map(|(v, _)| v).unwrap_or_default();
                        s.settings.insert(String::from_utf8_lossy(k).to_lowercase(), String::from_utf8_lossy(v).into_owned());
                    }
                }
                _ => {}
            }
            off += n;
            if done.is_some() {
                break;
            }
        }
        s.inbuf = inbuf;
        s.inbuf.drain(..off);
        let Some(st) = done else { return true };
        s.resetting = false;
        s.tx_status = st;
        // (DISCARD ALL drops what was prepared; session mode never relies on the list anyway)
        s.prepared.clear();
        if let Some(m) = s.reset_failed.take() {
            self.close_server(sid, false, &format!("the server reset query failed: {m}"));
            return false;
        }
        if st != b'I' || !s.inbuf.is_empty() {
            self.close_server(sid, false, "the server reset query left the connection in a transaction");
            return false;
        }
        self.release_server(sid, true);
        // linked to a waiting client now, or idle: read on as such
        true
    }

    /// a server connection back to the pool: to the first client waiting for its route, or idle
    fn release_server(&mut self, sid: u32, clean: bool) {
        let Some(s) = self.servers.get_mut(&sid) else { return };
        if !clean || self.primary.as_deref() != Some(s.node.as_str()) {
            return self.close_server(sid, false, if clean { "its node is no longer the primary" } else { "released in the middle of a transaction" });
        }
        if s.retire {
            return self.close_server(sid, false, SERVER_LIFETIME);
        }
        // (empty but while JavaScript's pool has clients waiting: no key built per transaction)
        if !self.give_back.is_empty() {
            if let Some(n) = self.give_back.get_mut(&format!("{}\0{}", s.route, s.node)).filter(|n| **n > 0) {
                *n -= 1;
                return self.close_server(sid, false, GIVEN_BACK);
            }
        }
        if !self.paused {
            while let Some(cid) = self.waiters.get_mut(s.route.as_str()).and_then(|w| w.pop_front()) {
                if self.clients.get(&cid).is_some_and(|c| c.server.is_none()) {
                    return self.link(cid, sid);
                }
            }
        }
        s.idle_since = Instant::now();
        match self.idle.get_mut(s.route.as_str()) {
            Some(v) => v.push(sid),
            None => {
                self.idle.insert(s.route.clone(), vec![sid]);
            }
        }
    }

    /// close a server connection from the pool's side (`lost`: it failed or spoke out of turn)
    fn close_server(&mut self, sid: u32, lost: bool, why: &str) {
        let Some(mut s) = self.servers.remove(&sid) else { return };
        if let Some(v) = self.idle.get_mut(s.route.as_str()) {
            v.retain(|&x| x != sid);
        }
        let _ = self.poll.registry().deregister(&mut s.sock);
        if lost {
            drop(s.sock);
        } else {
            let mut out = s.out.buf.split_off(s.out.off);
            out.extend_from_slice(TERMINATE_MSG);
            self.drain_socket(s.sock, out);
        }
        self.emit("server-closed", 0, sid, why.to_string(), lost);
        // the pool has room again: the first client waiting for this route asks JavaScript for a
        // connection (after the event above, so the pool counts this one gone)
        while let Some(cid) = self.waiters.get_mut(s.route.as_str()).and_then(|w| w.pop_front()) {
            if let Some(c) = self.clients.get_mut(&cid).filter(|c| c.server.is_none()) {
                c.waiting = false;
                self.need_server(cid);
                break;
            }
        }
    }

    /// the server ended the connection (or it failed)
    fn server_gone(&mut self, sid: u32, why: &str) {
        let Some(s) = self.servers.get(&sid) else { return };
        let node = s.node.clone();
        let cid = s.client;
        self.close_server(sid, true, why);
        // its idle neighbours on that node are suspect too (a postmaster killed: its backends exit
        // one by one): closed now, before a transaction is sent to one (JavaScript has the node checked)
        self.close_idle(&node);
        let Some(cid) = cid else { return };
        let Some(c) = self.clients.get_mut(&cid) else { return };
        c.server = None;
        self.links.lock().unwrap().remove(&cid);
        if c.begin_again() {
            // nothing but BEGIN went there and nothing came back: begin again on a server connection that works
            return self.pump_client(cid);
        }
        if c.server_sent_fatal {
            return self.close_client(cid, None, &format!("server ended the session: {why}"));
        }
        let err = if self.primary.as_deref() != Some(node.as_str()) {
            error_response("FATAL", "57P01", &format!("terminating connection because of failover: {node} is no longer the primary"), None, Some("The transaction in flight was lost; reconnect and retry it: new transactions go to the current primary."))
        } else {
            error_response("FATAL", "08006", &format!("pgha-proxy: lost the server connection to {node} with a transaction in flight: {why}"), None, None)
        };
        self.close_client(cid, Some(err), why);
    }

    // ------------------------------------------------------------ the cluster

    fn set_primary(&mut self, p: Option<String>) {
        if self.primary == p {
            return;
        }
        self.primary = p;
        // clients waiting for a connection of the old primary look again
        let waiting: Vec<u32> = self.waiters.values_mut().flat_map(|w| w.drain(..)).collect();
        for cid in waiting {
            if let Some(c) = self.clients.get_mut(&cid) {
                c.waiting = false;
                self.need_server(cid);
            }
        }
    }

    /// the node is no longer where transactions go: close what is idle there, end transactions in flight
    fn drain_node(&mut self, node: &str, why: &str) {
        self.close_idle(node);
        let linked: Vec<(u32, u32)> = self.servers.iter().filter(|(_, s)| s.node == node).filter_map(|(&sid, s)| s.client.map(|c| (c, sid))).collect();
        for (cid, sid) in linked {
            let Some(c) = self.clients.get_mut(&cid) else { continue };
            if c.begin_again() {
                // only a BEGIN went there: it begins again on the new primary
                c.server = None;
                self.links.lock().unwrap().remove(&cid);
                if let Some(s) = self.servers.get_mut(&sid) {
                    s.client = None;
                }
                self.close_server(sid, false, why);
                self.pump_client(cid);
                continue;
            }
            if let Some(s) = self.servers.get_mut(&sid) {
                s.client = None;
            }
            c.server = None;
            self.links.lock().unwrap().remove(&cid);
            self.close_server(sid, false, why);
            let err = error_response("FATAL", "57P01", &format!("terminating connection because of failover: {why}"), None, Some("The transaction in flight was lost; reconnect and retry it: new transactions go to the current primary."));
            self.close_client(cid, Some(err), why);
        }
    }

    fn close_idle(&mut self, node: &str) {
        let ids: Vec<u32> = self.idle.values().flatten().copied().filter(|sid| self.servers.get(sid).is_some_and(|s| s.node == node)).collect();
        for sid in ids {
            self.close_server(sid, false, "closed with the idle connections of its node");
        }
    }

    /// JavaScript's pool of this route and node is full of the loop's connections while `n` of its
    /// own clients wait: close up to `n` idle ones now, and the next ones released (0: none)
    fn give_back(&mut self, route: String, node: String, n: u32) {
        let key = format!("{route}\0{node}");
        if n == 0 {
            self.give_back.remove(&key);
            return;
        }
        let idle: Vec<u32> = self.idle.get(&route).map(|v| v.iter().copied().filter(|sid| self.servers.get(sid).is_some_and(|s| s.node == node)).collect()).unwrap_or_default();
        let mut left = n;
        for sid in idle.into_iter().take(n as usize) {
            self.close_server(sid, false, GIVEN_BACK);
            left -= 1;
        }
        if left > 0 {
            self.give_back.insert(key, left);
        } else {
            self.give_back.remove(&key);
        }
    }

    /// close the connections idle for `idle` or longer; `retire` (past --server-lifetime): closed now
    /// when idle, else when their client lets them go
    fn expire(&mut self, idle: Option<Duration>, retire: Vec<u32>) {
        for sid in retire {
            let Some(s) = self.servers.get_mut(&sid) else { continue };
            s.retire = true;
            if s.client.is_none() && !s.resetting {
                self.close_server(sid, false, SERVER_LIFETIME);
            }
        }
        let Some(limit) = idle else { return };
        let now = Instant::now();
        let old: Vec<u32> = self.idle.values().flatten().copied().filter(|sid| self.servers.get(sid).is_some_and(|s| now.duration_since(s.idle_since) >= limit)).collect();
        for sid in old {
            self.close_server(sid, false, "idle longer than --server-idle-timeout");
        }
    }

    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if paused {
            return;
        }
        // waiters first get what is idle
        let waiting: Vec<u32> = self.waiters.values_mut().flat_map(|w| w.drain(..)).collect();
        for cid in waiting {
            if self.clients.get(&cid).is_none_or(|c| c.server.is_some()) {
                continue;
            }
            match self.take_idle(cid) {
                Some(sid) => self.link(cid, sid),
                None => {
                    let route = self.clients[&cid].route.clone();
                    self.waiters.entry(route).or_default().push_back(cid);
                }
            }
        }
    }

    fn snapshot(&self) -> String {
        let mut out = String::from("{\"clients\":[");
        for (i, (id, c)) in self.clients.iter().enumerate() {
            let state = if c.server.is_some() { "active" } else if c.waiting { "waiting" } else { "idle" };
            let wait_ms = c.waiting_since.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0);
            let server = c.server.map(|s| s.to_string()).unwrap_or_else(|| "null".into());
            out.push_str(&format!("{}[{id},\"{state}\",{server},{},{},{wait_ms}]", if i > 0 { "," } else { "" }, c.transactions, c.statements.len()));
        }
        out.push_str("],\"servers\":[");
        for (i, (id, s)) in self.servers.iter().enumerate() {
            let state = if s.client.is_some() || s.resetting { "active" } else { "idle" };
            let client = s.client.map(|s| s.to_string()).unwrap_or_else(|| "null".into());
            out.push_str(&format!("{}[{id},\"{state}\",{client},{}]", if i > 0 { "," } else { "" }, s.prepared.len()));
        }
        out.push_str("]}");
        out
    }

    fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Stop => return false,
            Command::AddClient { id, sock, route, settings, max_frontend, offset } => self.add_client(id, sock, route, settings, max_frontend, offset),
            Command::GiveServer { client, server } => self.give_server(client, server),
            Command::AddIdleServer(init) => {
                if let Some(sid) = self.add_server(init) {
                    self.release_server(sid, true);
                    self.server_readable(sid, false);
                }
            }
            Command::Wait { client } => self.wait(client),
            Command::FailClient { client, error } => self.fail_client(client, error),
            Command::SetPrimary(p) => self.set_primary(p),
            Command::DrainNode { node, why } => self.drain_node(&node, &why),
            Command::CloseIdle { node } => self.close_idle(&node),
            Command::CloseServer { id } => {
                if let Some(cid) = self.servers.get(&id).and_then(|s| s.client) {
                    self.unlink(cid, false);
                }
                self.close_server(id, false, "closed by the pool");
            }
            Command::SetPaused(p) => self.set_paused(p),
            Command::GiveBack { route, node, n } => self.give_back(route, node, n),
            Command::Expire { idle, retire } => self.expire(idle, retire),
            Command::Snapshot(tx) => {
                let _ = tx.send(self.snapshot());
            }
        }
        true
    }

    fn event(&mut self, token: usize, readable: bool, writable: bool, plain: bool) {
        if token >= DRAIN_BASE {
            if let Some(d) = self.drains.get_mut(&token) {
                if d.step() {
                    if let Some(mut d) = self.drains.remove(&token) {
                        let _ = self.poll.registry().deregister(&mut d.sock);
                    }
                }
            }
            return;
        }
        let id = (token >> 1) as u32;
        if token & 1 == 0 {
            if writable {
                self.flush_client(id);
                // the client drained: its server is read again
                if let Some(sid) = self.clients.get(&id).and_then(|c| if c.out.pending() { None } else { c.server }) {
                    if self.servers.get(&sid).is_some_and(|s| s.read_blocked) {
                        self.server_readable(sid, false);
                    }
                }
            }
            if readable {
                self.client_readable(id, plain);
            }
        } else {
            if writable {
                self.flush_server(id);
                if let Some(cid) = self.servers.get(&id).and_then(|s| if s.out.pending() { None } else { s.client }) {
                    if self.clients.get(&cid).is_some_and(|c| c.read_blocked) {
                        self.client_readable(cid, false);
                    }
                }
            }
            if readable {
                self.server_readable(id, plain);
            }
        }
    }
}

fn run(poll: Poll, rx: mpsc::Receiver<Command>, sink: Arc<dyn PoolSink>, links: Arc<Mutex<IdMap<u32>>>, mode: PoolMode, counters: Arc<PoolCounters>) {
    let mut e = Engine {
        poll,
        sink,
        links,
        clients: IdMap::default(),
        servers: IdMap::default(),
        idle: HashMap::new(),
        waiters: HashMap::new(),
        primary: None,
        paused: false,
        max_prepared: mode.max_prepared,
        session: mode.session,
        reset: mode.reset_query.filter(|q| !q.trim().is_empty()).map(|q| query_message(&q)),
        wait_limit: mode.wait_limit,
        next_expiry: None,
        counters,
        give_back: HashMap::new(),
        clock: 0,
        drains: HashMap::new(),
        next_drain: 0,
        buf: vec![0u8; CHUNK],
    };
    let mut events = Events::with_capacity(1024);
    loop {
        let mut timeout = if e.drains.is_empty() { None } else { Some(Duration::from_millis(500)) };
        if let Some(due) = e.next_expiry {
            let left = due.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        if let Err(err) = e.poll.poll(&mut events, timeout) {
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if e.next_expiry.is_some_and(|due| due <= Instant::now()) {
            e.expire_waiters();
        }
        if !e.drains.is_empty() {
            let now = Instant::now();
            e.drains.retain(|_, d| d.deadline > now);
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok(cmd) = rx.try_recv() {
                    if !e.command(cmd) {
                        return;
                    }
                }
                continue;
            }
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let plain = ev.is_readable() && !ev.is_read_closed() && !ev.is_error() && !ev.is_writable();
            e.event(ev.token().0, readable, ev.is_writable() || ev.is_error(), plain);
        }
    }
}

/// how the pool pools
pub struct PoolMode {
    /// session mode (a client keeps its connection until it leaves), else transaction mode
    pub session: bool,
    /// transaction mode: statements kept prepared per server connection (least recently used closed first)
    pub max_prepared: usize,
    /// session mode: run on a connection its client left, before another client gets it (None or blank: none)
    pub reset_query: Option<String>,
    /// how long a client may wait in the loop for a connection of a full pool, and the FATAL
    /// ErrorResponse it is then sent before it is closed (None: no limit)
    pub wait_limit: Option<(Duration, Vec<u8>)>,
}

/// The pool's loop, on its own thread.
pub struct PoolRelay {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    links: Arc<Mutex<IdMap<u32>>>,
    counters: Arc<PoolCounters>,
}

fn dup_stream(fd: i32) -> std::io::Result<TcpStream> {
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if d < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let std = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(d) };
    std.set_nonblocking(true)?;
    Ok(TcpStream::from_std(std))
}

impl PoolRelay {
    pub fn start(sink: Arc<dyn PoolSink>, mode: PoolMode) -> std::io::Result<PoolRelay> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let links = Arc::new(Mutex::new(IdMap::default()));
        let l = links.clone();
        let counters = Arc::new(PoolCounters::default());
        let cs = counters.clone();
        let thread = std::thread::Builder::new()
            .name("pgha-pool".into())
            .spawn(move || {
                let s = sink.clone();
                // a bug here must not leave every pooled client hanging on a dead loop: JavaScript hears of it
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(poll, rx, sink, l, mode, cs))) {
                    let why = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    s.emit(PoolEvent { kind: "failed", client: 0, server: 0, detail: why, lost: false });
                }
            })?;
        Ok(PoolRelay { tx, waker, thread: Some(thread), links, counters })
    }

    /// route → its clients' totals: [transactions, queries, bytes from clients, bytes to clients,
    /// µs in transactions, µs in queries, µs waited for a server connection, waits]
    pub fn route_stats(&self) -> Vec<(String, [u64; 8])> {
        self.counters.routes.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }

    fn send(&self, c: Command) -> std::io::Result<()> {
        self.tx.send(c).map_err(|_| std::io::Error::other("pool thread is gone"))?;
        self.waker.wake()
    }

    pub fn add_client(&self, id: u32, fd: i32, route: String, settings: Vec<(String, String)>, max_frontend: u32, offset: u64) -> std::io::Result<()> {
        let sock = dup_stream(fd)?;
        self.send(Command::AddClient { id, sock, route, settings, max_frontend, offset })
    }

    pub fn server_init(id: u32, fd: i32, route: String, node: String, settings: Vec<(String, String)>, prepared: Vec<String>) -> std::io::Result<ServerInit> {
        Ok(ServerInit { id, sock: dup_stream(fd)?, route, node, settings, prepared })
    }

    pub fn give_server(&self, client: u32, server: ServerInit) -> std::io::Result<()> {
        self.send(Command::GiveServer { client, server })
    }

    pub fn add_idle_server(&self, server: ServerInit) -> std::io::Result<()> {
        self.send(Command::AddIdleServer(server))
    }

    pub fn wait(&self, client: u32) -> std::io::Result<()> {
        self.send(Command::Wait { client })
    }

    pub fn fail_client(&self, client: u32, error: Vec<u8>) -> std::io::Result<()> {
        self.send(Command::FailClient { client, error })
    }

    pub fn set_primary(&self, node: Option<String>) -> std::io::Result<()> {
        self.send(Command::SetPrimary(node))
    }

    pub fn drain_node(&self, node: String, why: String) -> std::io::Result<()> {
        self.send(Command::DrainNode { node, why })
    }

    pub fn close_idle(&self, node: String) -> std::io::Result<()> {
        self.send(Command::CloseIdle { node })
    }

    pub fn close_server(&self, id: u32) -> std::io::Result<()> {
        self.send(Command::CloseServer { id })
    }

    /// close connections idle for `idle_ms` or longer (None: keep them); `retire`: connections past
    /// their lifetime, closed when idle (now, or once their client lets them go)
    pub fn expire(&self, idle_ms: Option<u32>, retire: Vec<u32>) -> std::io::Result<()> {
        self.send(Command::Expire { idle: idle_ms.map(|ms| Duration::from_millis(ms as u64)), retire })
    }

    /// JavaScript's pool of (route, node) is full and `n` of its own clients wait (0: none)
    pub fn give_back(&self, route: String, node: String, n: u32) -> std::io::Result<()> {
        self.send(Command::GiveBack { route, node, n })
    }

    pub fn set_paused(&self, paused: bool) -> std::io::Result<()> {
        self.send(Command::SetPaused(paused))
    }

    /// the server connection a client is linked to now
    pub fn linked_server(&self, client: u32) -> Option<u32> {
        self.links.lock().unwrap().get(&client).copied()
    }

    /// clients and server connections as JSON (for SHOW CLIENTS / SERVERS / POOLS)
    pub fn snapshot(&self) -> std::io::Result<String> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Snapshot(tx))?;
        rx.recv_timeout(Duration::from_secs(2)).map_err(|e| std::io::Error::other(format!("pool thread did not answer: {e}")))
    }

    pub fn stop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PoolRelay {
    fn drop(&mut self) {
        self.stop();
    }
}
