//! pgha-proxy's relay: after a session's startup (authentication done, first ReadyForQuery), the
//! JavaScript side hands the client and server sockets over to one epoll loop here, which moves
//! bytes between them without JavaScript in the path. Like the TypeScript relay it follows message
//! boundaries (length words checked on the client side), records each ReadyForQuery's transaction
//! status, notices FATAL errors from the server, and applies backpressure (a side is not read while
//! the other side's data is still pending). Session endings are reported as events; the JavaScript
//! side decides what the client is told and then calls `finish`, after which what is still pending
//! for either side is written out (within `DRAIN_LIMIT`) before the socket is half-closed and closed.
//!
//! mio's epoll is edge-triggered: a side is read until the read would block or says EOF, never
//! left after a short read (data and the peer's FIN can arrive together, and no new edge follows).

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
const CHUNK: usize = 64 * 1024;
/// how long a finished session's last bytes may wait for a peer that does not read
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What the loop tells the JavaScript side.
#[derive(Debug, Clone)]
pub struct RelayEvent {
    pub id: u32,
    /// client-eof (informational: the client closed its side without Terminate, so did the relay
    /// towards the server, and the session goes on until the server closes), client-error,
    /// backend-eof, backend-error, client-protocol, backend-protocol, backend-fatal (informational:
    /// the session goes on until the server closes)
    pub kind: &'static str,
    pub detail: String,
    /// SQLSTATE of a FATAL/PANIC ErrorResponse the server sent, if any
    pub sqlstate: Option<String>,
    /// the client sent Terminate
    pub client_terminated: bool,
    /// the client sent messages since the last ReadyForQuery (a query is running) and did not say
    /// goodbye (Terminate): a client that vanished mid-query
    pub busy: bool,
}

pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, e: RelayEvent);
}

enum Command {
    Add { id: u32, client: TcpStream, backend: TcpStream, max_frontend: u32, status: Arc<AtomicU8> },
    Finish { id: u32, to_client: Option<Vec<u8>>, to_backend: Option<Vec<u8>> },
    /// the tests' stand-in for a loop busy relaying: use this much CPU, then say so
    #[cfg(test)]
    Spin(Duration, mpsc::Sender<()>),
    Stop,
}

/// one loop's counters (each loop has its own, on its own cache line: the loops never write to a
/// shared line on the per-transaction path; `Relay::totals` adds them up)
#[derive(Default)]
#[repr(align(64))]
pub struct Counters {
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub sessions: AtomicU64,
    /// ReadyForQuery messages relayed to clients (one per simple Query or Sync answered)
    pub ready: AtomicU64,
    /// of those, the ones saying idle (`I`): transactions, autocommit statements included, ended
    pub ready_idle: AtomicU64,
}

/// One protocol stream's message boundaries (the Rust twin of proxy/protocol/message-walker.ts).
pub struct Walker {
    header: [u8; 5],
    header_fill: usize,
    remaining: usize,
    kind: u8,
    /// body of the wanted message being gathered, reused from one message to the next
    collect: Vec<u8>,
    collecting: bool,
    max_length: u32,
    collect_types: &'static [u8],
    pub messages: u64,
    pub offset: u64,
}

impl Walker {
    pub fn new(max_length: u32, collect_types: &'static [u8]) -> Self {
        Walker { header: [0; 5], header_fill: 0, remaining: 0, kind: 0, collect: Vec::new(), collecting: false, max_length, collect_types, messages: 0, offset: 0 }
    }

    pub fn at_boundary(&self) -> bool {
        self.header_fill == 0 && self.remaining == 0
    }

    /// walk `data`; `on_message(type, body)` for collected types
    pub fn feed(&mut self, data: &[u8], on_message: &mut dyn FnMut(u8, &[u8])) -> Result<(), String> {
        let n = data.len();
        let mut i = 0;
        while i < n {
            if self.remaining > 0 {
                let take = self.remaining.min(n - i);
                if self.collecting {
                    self.collect.extend_from_slice(&data[i..i + take]);
                }
                i += take;
                self.remaining -= take;
                if self.remaining == 0 {
                    self.finish(on_message);
                }
                continue;
            }
            let take = (5 - self.header_fill).min(n - i);
            self.header[self.header_fill..self.header_fill + take].copy_from_slice(&data[i..i + take]);
            self.header_fill += take;
            i += take;
            if self.header_fill < 5 {
                break;
            }
            self.header_fill = 0;
            let kind = self.header[0];
            let length = i32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
            if length < 4 || length as i64 > self.max_length as i64 {
                let at = self.offset + i as u64 - 5;
                return Err(format!(
                    "invalid message length {} for message type 0x{:02x} at byte {} (expected 4..{})",
                    length as u32, kind, at, self.max_length
                ));
            }
            self.kind = kind;
            self.remaining = length as usize - 4;
            self.collecting = self.collect_types.contains(&kind) && self.remaining <= 64 * 1024;
            self.collect.clear();
            if self.remaining == 0 {
                self.finish(on_message);
            }
        }
        self.offset += n as u64;
        Ok(())
    }

    fn finish(&mut self, on_message: &mut dyn FnMut(u8, &[u8])) {
        self.messages += 1;
        if self.collecting {
            self.collecting = false;
            on_message(self.kind, &self.collect);
        }
    }
}

/// severity and SQLSTATE of an ErrorResponse body. The severity is the non-localized `V` when the
/// server sent one (9.6 and later do), else `S` (translated with lc_messages) — the rule of
/// proxy/protocol/backend-messages.ts errorSeverity(), so both relays decide FATAL alike.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut localized = String::new();
    let mut nonlocalized = String::new();
    let mut code = String::new();
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let field = body[i];
        let end = body[i + 1..].iter().position(|&b| b == 0).map(|p| i + 1 + p).unwrap_or(body.len());
        let value = String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        match field {
            b'V' => nonlocalized = value,
            b'S' => localized = value,
            b'C' => code = value,
            _ => {}
        }
        i = end + 1;
    }
    (if nonlocalized.is_empty() { localized } else { nonlocalized }, code)
}

/// a session end decided by the severity of a server ErrorResponse
pub fn is_fatal(severity: &str) -> bool {
    severity == "FATAL" || severity == "PANIC"
}

struct Direction {
    pending: Vec<u8>,
    pending_off: usize,
}

impl Direction {
    fn has_pending(&self) -> bool {
        self.pending_off < self.pending.len()
    }
}

struct Session {
    client: TcpStream,
    backend: TcpStream,
    c2b: Direction,
    b2c: Direction,
    client_walker: Walker,
    backend_walker: Walker,
    status: Arc<AtomicU8>,
    client_terminated: bool,
    /// the client closed its side (after Terminate or not): nothing more is read from it, while the
    /// server's last answer still goes to it until the server closes
    client_eof: bool,
    messages_at_ready: u64,
    /// the server waits for COPY data (CopyInResponse/CopyBothResponse seen, no CopyDone/CopyFail or
    /// ReadyForQuery since): a client that vanishes now is seen by the server itself
    copy_in: bool,
    /// the session ended on an error of the client's connection (a reset): the server's connection
    /// is reset too when the session is finished without anything for it, as it would be directly
    client_failed: bool,
    backend_fatal: Option<String>,
    ended: bool,
}

impl Session {
    /// a query runs for a client that did not say goodbye (and the server is not reading COPY data
    /// from it): what JavaScript cancels when the client vanishes — the rule of client-session.ts
    fn busy(&self) -> bool {
        !self.client_terminated && !self.copy_in && self.client_walker.messages > self.messages_at_ready
    }
}

/// what a finished session (or a closed pooled connection) still owes one of its peers: written
/// out, then FIN, then closed
pub(crate) struct Drain {
    pub(crate) sock: TcpStream,
    pub(crate) out: Vec<u8>,
    pub(crate) off: usize,
    pub(crate) deadline: Instant,
}

/// close with a TCP reset once the last descriptor of the socket is closed (SO_LINGER 0)
fn reset_on_close(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &l as *const libc::linger as *const libc::c_void, std::mem::size_of::<libc::linger>() as libc::socklen_t);
    }
}

impl Drain {
    /// true when the drain is over (all written and half-closed, or the peer is gone)
    pub(crate) fn step(&mut self) -> bool {
        while self.off < self.out.len() {
            match self.sock.write(&self.out[self.off..]) {
                Ok(0) => return true,
                Ok(n) => self.off += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
        let _ = self.sock.shutdown(Shutdown::Write);
        true
    }
}

/// One epoll loop on its own thread.
struct Loop {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    /// the thread's CPU clock (pthread_getcpuclockid), read when sessions are placed
    cpu_clock: Option<libc::clockid_t>,
}

/// a loop's share of one core over the last sampling window
#[derive(Clone, Copy)]
struct Load {
    at: Instant,
    cpu_ns: u64,
    share: f64,
}

/// how long a loop's CPU share is averaged over before a new session is placed by it
const LOAD_WINDOW: Duration = Duration::from_millis(250);
/// a loop takes new sessions while it used less than this share of a core over the last window
const LOAD_SPREAD: f64 = 0.5;

/// The relay: up to `threads` epoll loops. A new session goes to the first loop that used less than
/// half a core over the last quarter second, else to the least busy one: sessions fill one loop
/// (PgBouncer's shape, and the cheapest — each wake-up serves more sessions) until it is busy, and
/// only then spread over the others, so a busy proxy still uses several cores.
pub struct Relay {
    loops: Vec<Loop>,
    counters: Vec<Arc<Counters>>,
    statuses: Mutex<Placed>,
    loads: Mutex<Vec<Load>>,
}

/// session id → (its loop, its last transaction status)
type Placed = HashMap<u32, (usize, Arc<AtomicU8>)>;

fn thread_cpu_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// the loop a new session goes to, given each loop's share of a core (None: not known)
fn place(shares: &[Option<f64>]) -> usize {
    if let Some(i) = shares.iter().position(|s| s.is_none_or(|s| s < LOAD_SPREAD)) {
        return i;
    }
    shares.iter().enumerate().min_by(|a, b| a.1.unwrap_or(0.0).total_cmp(&b.1.unwrap_or(0.0))).map(|(i, _)| i).unwrap_or(0)
}

impl Relay {
    pub fn start(sink: Arc<dyn EventSink>, threads: usize) -> std::io::Result<Relay> {
        let mut counters = Vec::new();
        let mut loops = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            let c = Arc::new(Counters::default());
            counters.push(c.clone());
            let sink = sink.clone();
            let thread = std::thread::Builder::new().name(format!("pgha-relay-{i}")).spawn(move || run(poll, rx, sink, c))?;
            let cpu_clock = {
                use std::os::unix::thread::JoinHandleExt;
                let mut clock: libc::clockid_t = 0;
                (unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) } == 0).then_some(clock)
            };
            loops.push(Loop { tx, waker, thread: Some(thread), cpu_clock });
        }
        let now = Instant::now();
        let loads = loops.iter().map(|l| Load { at: now, cpu_ns: l.cpu_clock.and_then(thread_cpu_ns).unwrap_or(0), share: 0.0 }).collect();
        Ok(Relay { loops, counters, statuses: Mutex::new(HashMap::new()), loads: Mutex::new(loads) })
    }

    /// the loop for a new session (see `Relay`)
    fn pick_loop(&self) -> usize {
        if self.loops.len() == 1 {
            return 0;
        }
        let mut loads = self.loads.lock().unwrap();
        let now = Instant::now();
        let shares: Vec<Option<f64>> = self
            .loops
            .iter()
            .zip(loads.iter_mut())
            .map(|(l, load)| {
                let cpu = l.cpu_clock.and_then(thread_cpu_ns)?;
                let wall = now.duration_since(load.at);
                if wall >= LOAD_WINDOW {
                    load.share = cpu.saturating_sub(load.cpu_ns) as f64 / wall.as_nanos() as f64;
                    load.at = now;
                    load.cpu_ns = cpu;
                }
                Some(load.share)
            })
            .collect();
        place(&shares)
    }

    /// which loop carries each session: for the tests
    #[cfg(test)]
    fn loop_of(&self, id: u32) -> Option<usize> {
        self.statuses.lock().unwrap().get(&id).map(|(l, _)| *l)
    }

    /// take over a session; the descriptors are duplicated, the caller keeps (and later closes) its own
    pub fn add(&self, id: u32, client_fd: i32, backend_fd: i32, max_frontend: u32) -> std::io::Result<()> {
        let dup = |fd: i32| -> std::io::Result<TcpStream> {
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if d < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let std = unsafe { std::net::TcpStream::from_raw_fd(d) };
            std.set_nonblocking(true)?;
            Ok(TcpStream::from_std(std))
        };
        let client = dup(client_fd)?;
        let backend = dup(backend_fd)?;
        let status = Arc::new(AtomicU8::new(b'I'));
        let l = self.pick_loop();
        self.statuses.lock().unwrap().insert(id, (l, status.clone()));
        self.send(l, Command::Add { id, client, backend, max_frontend, status })
    }

    pub fn finish(&self, id: u32, to_client: Option<Vec<u8>>, to_backend: Option<Vec<u8>>) -> std::io::Result<()> {
        // (a session finished before, or never added: nothing to do)
        let Some((l, _)) = self.statuses.lock().unwrap().remove(&id) else { return Ok(()) };
        self.send(l, Command::Finish { id, to_client, to_backend })
    }

    /// [bytes from clients, bytes to clients, sessions, ReadyForQuery relayed, of those idle], all loops
    pub fn totals(&self) -> [u64; 5] {
        let mut t = [0u64; 5];
        for c in &self.counters {
            for (i, a) in [&c.bytes_from_clients, &c.bytes_to_clients, &c.sessions, &c.ready, &c.ready_idle].into_iter().enumerate() {
                t[i] = t[i].wrapping_add(a.load(Ordering::Relaxed));
            }
        }
        t
    }

    /// per loop: [sessions it carries, CPU seconds its thread used] (NaN where the clock cannot be read)
    pub fn loops(&self) -> Vec<[f64; 2]> {
        self.loops
            .iter()
            .zip(&self.counters)
            .map(|(l, c)| [c.sessions.load(Ordering::Relaxed) as f64, l.cpu_clock.and_then(thread_cpu_ns).map(|ns| ns as f64 / 1e9).unwrap_or(f64::NAN)])
            .collect()
    }

    pub fn tx_status(&self, id: u32) -> Option<u8> {
        self.statuses.lock().unwrap().get(&id).map(|(_, s)| s.load(Ordering::Relaxed))
    }

    fn send(&self, l: usize, c: Command) -> std::io::Result<()> {
        let l = &self.loops[l];
        l.tx.send(c).map_err(|_| std::io::Error::other("relay thread is gone"))?;
        l.waker.wake()
    }

    pub fn stop(&mut self) {
        for l in &self.loops {
            let _ = l.tx.send(Command::Stop);
            let _ = l.waker.wake();
        }
        for l in &mut self.loops {
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

const READY_FOR_QUERY: u8 = b'Z';
const ERROR_RESPONSE: u8 = b'E';
const COPY_IN_RESPONSE: u8 = b'G';
const COPY_BOTH_RESPONSE: u8 = b'W';
const TERMINATE: u8 = b'X';
const COPY_DONE: u8 = b'c';
const COPY_FAIL: u8 = b'f';

fn run(mut poll: Poll, rx: mpsc::Receiver<Command>, sink: Arc<dyn EventSink>, counters: Arc<Counters>) {
    let mut events = Events::with_capacity(1024);
    let mut sessions: HashMap<u32, Session> = HashMap::new();
    // finished sessions' sockets with bytes still to write, by token
    let mut drains: HashMap<usize, Drain> = HashMap::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let timeout = if drains.is_empty() { None } else { Some(Duration::from_millis(500)) };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if !drains.is_empty() {
            // a peer that does not read its last bytes in time is closed anyway
            let now = Instant::now();
            drains.retain(|_, d| d.deadline > now);
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Command::Stop => return,
                        #[cfg(test)]
                        Command::Spin(d, done) => {
                            let cpu = || {
                                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                                Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
                            };
                            let until = cpu() + d;
                            while cpu() < until {
                                std::hint::spin_loop();
                            }
                            let _ = done.send(());
                        }
                        Command::Add { id, mut client, mut backend, max_frontend, status } => {
                            // read interest only; write interest is added while data waits for a full socket
                            let ok = poll.registry().register(&mut client, Token(id as usize * 2), Interest::READABLE).is_ok()
                                && poll.registry().register(&mut backend, Token(id as usize * 2 + 1), Interest::READABLE).is_ok();
                            let mut s = Session {
                                client,
                                backend,
                                c2b: Direction { pending: Vec::new(), pending_off: 0 },
                                b2c: Direction { pending: Vec::new(), pending_off: 0 },
                                client_walker: Walker::new(max_frontend, &[TERMINATE, COPY_DONE, COPY_FAIL]),
                                backend_walker: Walker::new(i32::MAX as u32, &[READY_FOR_QUERY, ERROR_RESPONSE, COPY_IN_RESPONSE, COPY_BOTH_RESPONSE]),
                                status,
                                client_terminated: false,
                                client_eof: false,
                                messages_at_ready: 0,
                                copy_in: false,
                                client_failed: false,
                                backend_fatal: None,
                                ended: false,
                            };
                            counters.sessions.fetch_add(1, Ordering::Relaxed);
                            if !ok {
                                end(&mut poll, id, &mut s, "client-error", "could not register the sockets".into(), &*sink);
                            }
                            sessions.insert(id, s);
                            // bytes may already be waiting in either socket
                            if let Some(s) = sessions.get_mut(&id) {
                                pump(&mut poll, id, s, true, &mut buf, &*sink, &counters, false);
                                pump(&mut poll, id, s, false, &mut buf, &*sink, &counters, false);
                            }
                        }
                        Command::Finish { id, to_client, to_backend } => {
                            if let Some(mut s) = sessions.remove(&id) {
                                if !s.ended {
                                    let _ = poll.registry().deregister(&mut s.client);
                                    let _ = poll.registry().deregister(&mut s.backend);
                                }
                                // what is pending for a side goes first; the proxy's own message
                                // only where that side's stream is between two messages
                                let mut to_c = s.b2c.pending.split_off(s.b2c.pending_off);
                                if let Some(bytes) = to_client {
                                    if s.backend_walker.at_boundary() {
                                        to_c.extend_from_slice(&bytes);
                                    }
                                }
                                let mut to_b = s.c2b.pending.split_off(s.c2b.pending_off);
                                let reset_backend = to_backend.is_none() && s.client_failed;
                                if let Some(bytes) = to_backend {
                                    if s.client_walker.at_boundary() {
                                        to_b.extend_from_slice(&bytes);
                                    }
                                }
                                if reset_backend {
                                    // the client's connection failed: the server's is reset, not
                                    // closed in order (the JavaScript side closes its descriptor too)
                                    counters.sessions.fetch_sub(1, Ordering::Relaxed);
                                    reset_on_close(&s.backend);
                                    continue;
                                }
                                counters.sessions.fetch_sub(1, Ordering::Relaxed);
                                let deadline = Instant::now() + DRAIN_LIMIT;
                                for (token, sock, out) in [(id as usize * 2, s.client, to_c), (id as usize * 2 + 1, s.backend, to_b)] {
                                    let mut d = Drain { sock, out, off: 0, deadline };
                                    // done: dropping the stream closes our duplicate
                                    if !d.step() && poll.registry().register(&mut d.sock, Token(token), Interest::WRITABLE).is_ok() {
                                        drains.insert(token, d);
                                    }
                                }
                            }
                        }
                    }
                }
                continue;
            }
            let t = ev.token().0;
            if let Some(d) = drains.get_mut(&t) {
                if d.step() {
                    if let Some(mut d) = drains.remove(&t) {
                        let _ = poll.registry().deregister(&mut d.sock);
                    }
                }
                continue;
            }
            let id = (t / 2) as u32;
            let is_client = t % 2 == 0;
            let Some(s) = sessions.get_mut(&id) else { continue };
            if s.ended {
                continue;
            }
            if ev.is_writable() {
                // the side that became writable drains what was pending for it, then its source is read again
                let dir = if is_client { &s.b2c } else { &s.c2b };
                if dir.has_pending() {
                    pump(&mut poll, id, s, !is_client, &mut buf, &*sink, &counters, false);
                    let dir = if is_client { &s.b2c } else { &s.c2b };
                    if !s.ended && !dir.has_pending() {
                        let (sock, token) = if is_client { (&mut s.client, Token(id as usize * 2)) } else { (&mut s.backend, Token(id as usize * 2 + 1)) };
                        let _ = poll.registry().reregister(sock, token, Interest::READABLE);
                    }
                }
            }
            if !s.ended && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                let plain = ev.is_readable() && !ev.is_read_closed() && !ev.is_error() && !ev.is_writable();
                pump(&mut poll, id, s, is_client, &mut buf, &*sink, &counters, plain);
            }
        }
    }
}

fn end(poll: &mut Poll, id: u32, s: &mut Session, kind: &'static str, detail: String, sink: &dyn EventSink) {
    if s.ended {
        return;
    }
    s.ended = true;
    s.client_failed = kind == "client-error";
    let _ = poll.registry().deregister(&mut s.client);
    let _ = poll.registry().deregister(&mut s.backend);
    sink.emit(RelayEvent {
        id,
        kind,
        detail,
        sqlstate: s.backend_fatal.clone(),
        client_terminated: s.client_terminated,
        busy: s.busy(),
    });
}

/// move bytes from one side to the other until the source would block, ends, or the destination
/// is full (then the source is not read until the destination drains)
///
/// `short_read_drains`: the caller got a readable event without a hang-up or error flag, so a read
/// shorter than the buffer has emptied the socket — Linux's epoll re-queues an edge-triggered
/// descriptor on every later arrival (data or FIN), so nothing can be left behind without a new
/// event (tokio's PollEvented relies on the same). That saves the read that would only say
/// WouldBlock: one system call per message burst in each direction. With a hang-up flag (a FIN that
/// may have come with the data, which gives no further edge) or from any other caller, the source
/// is read until WouldBlock or EOF.
#[allow(clippy::too_many_arguments)]
fn pump(poll: &mut Poll, id: u32, s: &mut Session, from_client: bool, buf: &mut [u8], sink: &dyn EventSink, counters: &Counters, short_read_drains: bool) {
    loop {
        if s.ended {
            return;
        }
        // what is still pending for the destination goes first
        let (dst, dir) = if from_client { (&mut s.backend, &mut s.c2b) } else { (&mut s.client, &mut s.b2c) };
        if dir.has_pending() {
            match dst.write(&dir.pending[dir.pending_off..]) {
                Ok(n) => {
                    dir.pending_off += n;
                    if dir.has_pending() {
                        continue;
                    }
                    dir.pending.clear();
                    dir.pending_off = 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = if from_client { "backend-error" } else { "client-error" };
                    return end(poll, id, s, kind, e.to_string(), sink);
                }
            }
        }
        if from_client && s.client_eof {
            return;
        }
        // (nothing is pending for the destination from here on: a side is read only then)
        let src = if from_client { &mut s.client } else { &mut s.backend };
        let n = match src.read(buf) {
            Ok(0) => {
                if from_client {
                    // the client closed its side (after Terminate, as a client may that still reads,
                    // or vanishing): as on a direct connection the server sees our side closed —
                    // never a Terminate the client did not send — and what it still answers goes to
                    // the client; the server's close ends the session
                    s.client_eof = true;
                    let _ = s.backend.shutdown(Shutdown::Write);
                    if !s.client_terminated {
                        // no Terminate: JavaScript decides about cancelling a running query
                        sink.emit(RelayEvent {
                            id,
                            kind: "client-eof",
                            detail: "connection closed".into(),
                            sqlstate: s.backend_fatal.clone(),
                            client_terminated: false,
                            busy: s.busy(),
                        });
                    }
                    return;
                }
                return end(poll, id, s, "backend-eof", "connection closed".into(), sink);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                let kind = if from_client { "client-error" } else { "backend-error" };
                return end(poll, id, s, kind, e.to_string(), sink);
            }
        };
        let data = &buf[..n];
        if from_client {
            let mut terminated = false;
            let mut copy_end = false;
            let r = s.client_walker.feed(data, &mut |t, _| {
                if t == TERMINATE {
                    terminated = true;
                } else if t == COPY_DONE || t == COPY_FAIL {
                    copy_end = true;
                }
            });
            if terminated {
                s.client_terminated = true;
            }
            if copy_end {
                s.copy_in = false;
            }
            if let Err(msg) = r {
                return end(poll, id, s, "client-protocol", msg, sink);
            }
            counters.bytes_from_clients.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            let mut ready: Option<u8> = None;
            // every FATAL of this read, in order (one read may hold several messages)
            let mut fatal: Vec<(String, String)> = Vec::new();
            let (mut readies, mut idles) = (0u64, 0u64);
            let mut copy_in: Option<bool> = None;
            let r = s.backend_walker.feed(data, &mut |t, body| {
                if t == COPY_IN_RESPONSE || t == COPY_BOTH_RESPONSE {
                    copy_in = Some(true);
                } else if t == READY_FOR_QUERY && !body.is_empty() {
                    copy_in = Some(false);
                    ready = Some(body[0]);
                    readies += 1;
                    if body[0] == b'I' {
                        idles += 1;
                    }
                } else if t == ERROR_RESPONSE {
                    let (sev, code) = error_fields(body);
                    if is_fatal(&sev) {
                        fatal.push((sev, code));
                    }
                }
            });
            if readies > 0 {
                counters.ready.fetch_add(readies, Ordering::Relaxed);
                counters.ready_idle.fetch_add(idles, Ordering::Relaxed);
            }
            if let Some(st) = ready {
                s.status.store(st, Ordering::Relaxed);
                s.messages_at_ready = s.client_walker.messages;
            }
            if let Some(c) = copy_in {
                s.copy_in = c;
            }
            for (sev, code) in fatal {
                s.backend_fatal = Some(code.clone());
                sink.emit(RelayEvent { id, kind: "backend-fatal", detail: sev, sqlstate: Some(code), client_terminated: s.client_terminated, busy: false });
            }
            if let Err(msg) = r {
                return end(poll, id, s, "backend-protocol", msg, sink);
            }
            counters.bytes_to_clients.fetch_add(n as u64, Ordering::Relaxed);
        }
        let (dst, dir) = if from_client { (&mut s.backend, &mut s.c2b) } else { (&mut s.client, &mut s.b2c) };
        let mut off = 0;
        while off < n {
            match dst.write(&data[off..]) {
                Ok(w) => off += w,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = if from_client { "backend-error" } else { "client-error" };
                    return end(poll, id, s, kind, e.to_string(), sink);
                }
            }
        }
        if off < n {
            // the destination is full: keep the rest and stop reading this side until it drains
            dir.pending.extend_from_slice(&data[off..]);
            let token = Token(id as usize * 2 + usize::from(from_client));
            let _ = poll.registry().reregister(dst, token, Interest::READABLE | Interest::WRITABLE);
            return;
        }
        if short_read_drains && n < buf.len() {
            return;
        }
        // read again: only WouldBlock or EOF says the source is drained (edge-triggered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn walker_same_at_every_split() {
        let mut stream = msg(b'Q', b"SELECT 1\0");
        stream.extend(msg(b'Z', b"T"));
        stream.extend(msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mbye\0\0"));
        stream.extend(msg(b'X', b""));
        let whole = {
            let mut w = Walker::new(1 << 20, b"ZEX");
            let mut seen = Vec::new();
            w.feed(&stream, &mut |t, b| seen.push((t, b.to_vec()))).unwrap();
            assert!(w.at_boundary());
            assert_eq!(w.messages, 4);
            seen
        };
        for cut in 0..=stream.len() {
            let mut w = Walker::new(1 << 20, b"ZEX");
            let mut seen = Vec::new();
            w.feed(&stream[..cut], &mut |t, b| seen.push((t, b.to_vec()))).unwrap();
            w.feed(&stream[cut..], &mut |t, b| seen.push((t, b.to_vec()))).unwrap();
            assert_eq!(seen, whole, "cut at {cut}");
        }
        let mut w = Walker::new(1 << 20, &[]);
        for b in &stream {
            w.feed(std::slice::from_ref(b), &mut |_, _| {}).unwrap();
        }
        assert_eq!((w.messages, w.at_boundary()), (4, true));
    }

    #[test]
    fn walker_refuses_bad_lengths() {
        let mut w = Walker::new(1000, &[]);
        let e = w.feed(&[b'Q', 0x80, 0, 0, 0], &mut |_, _| {}).unwrap_err();
        assert_eq!(e, "invalid message length 2147483648 for message type 0x51 at byte 0 (expected 4..1000)");
        let mut w = Walker::new(1000, &[]);
        assert!(w.feed(&[b'Q', 0, 0, 0, 3], &mut |_, _| {}).is_err());
        let mut w = Walker::new(1000, &[]);
        assert!(w.feed(&[b'Q', 0, 0, 3, 0xe9], &mut |_, _| {}).is_err());
    }

    #[test]
    fn error_fields_reads_severity_and_code() {
        assert_eq!(error_fields(b"SFATAL\0VFATAL\0C57P01\0Mterminating\0\0"), ("FATAL".into(), "57P01".into()));
        assert_eq!(error_fields(b"SERROR\0C42601\0\0"), ("ERROR".into(), "42601".into()));
        // V (never translated) wins over S (lc_messages), wherever it comes; S alone is used as is
        assert_eq!(error_fields(b"SSCHWERWIEGEND\0VFATAL\0C57P01\0\0"), ("FATAL".into(), "57P01".into()));
        assert_eq!(error_fields(b"VFATAL\0SSCHWERWIEGEND\0C57P01\0\0"), ("FATAL".into(), "57P01".into()));
        assert_eq!(error_fields(b"SSCHWERWIEGEND\0C57P01\0\0"), ("SCHWERWIEGEND".into(), "57P01".into()));
        assert_eq!(error_fields(b"SFATAL\0V\0C57P01\0\0"), ("FATAL".into(), "57P01".into()));
        assert!(is_fatal("FATAL") && is_fatal("PANIC") && !is_fatal("SCHWERWIEGEND") && !is_fatal("ERROR"));
    }
    #[test]
    fn sessions_fill_the_first_loop_that_is_not_busy() {
        assert_eq!(place(&[Some(0.0), Some(0.0)]), 0);
        assert_eq!(place(&[Some(0.49), Some(0.0)]), 0);
        assert_eq!(place(&[Some(0.5), Some(0.3)]), 1);
        assert_eq!(place(&[Some(0.5), Some(0.9)]), 0);
        assert_eq!(place(&[Some(0.7), Some(0.2), Some(0.0)]), 1);
        // all busy: the least busy one
        assert_eq!(place(&[Some(0.9), Some(0.6), Some(0.8)]), 1);
        // a loop whose clock cannot be read is taken as not busy
        assert_eq!(place(&[Some(0.9), None]), 1);
    }

    struct NoSink;
    impl EventSink for NoSink {
        fn emit(&self, _: RelayEvent) {}
    }

    /// sockets of a real loopback connection: (the side handed to the relay, its peer)
    fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn a_busy_first_loop_sends_new_sessions_to_the_next() {
        use std::os::fd::AsRawFd;
        let relay = Relay::start(Arc::new(NoSink), 2).unwrap();
        let (client, _cp) = tcp_pair();
        let (backend, _bp) = tcp_pair();
        relay.add(1, client.as_raw_fd(), backend.as_raw_fd(), 1 << 20).unwrap();
        assert_eq!(relay.loop_of(1), Some(0));
        // loop 0 uses 600 ms of CPU: more than half a core over the window since the relay started,
        // unless the machine is so busy that it got less than that
        let (tx, rx) = mpsc::channel();
        relay.send(0, Command::Spin(Duration::from_millis(600), tx)).unwrap();
        rx.recv().unwrap();
        let (client2, _cp2) = tcp_pair();
        let (backend2, _bp2) = tcp_pair();
        relay.add(2, client2.as_raw_fd(), backend2.as_raw_fd(), 1 << 20).unwrap();
        assert_eq!(relay.loop_of(2), Some(1), "loops: {:?}", relay.loops());
        assert!(relay.loops()[0][1] >= 0.6, "loop 0's CPU seconds: {:?}", relay.loops());
    }

    #[test]
    fn idle_relay_puts_every_session_on_one_loop_and_relays_through_it() {
        use std::os::fd::AsRawFd;
        let relay = Relay::start(Arc::new(NoSink), 3).unwrap();
        let mut keep = Vec::new();
        for id in 1..=6u32 {
            let (client, mut client_peer) = tcp_pair();
            let (backend, mut backend_peer) = tcp_pair();
            relay.add(id, client.as_raw_fd(), backend.as_raw_fd(), 1 << 20).unwrap();
            assert_eq!(relay.loop_of(id), Some(0));
            // bytes go through (and a ReadyForQuery is recorded) on the loop the session was given
            client_peer.write_all(&msg(b'Q', b"SELECT 1\0")).unwrap();
            let mut got = [0u8; 14];
            backend_peer.read_exact(&mut got).unwrap();
            assert_eq!(&got[..], &msg(b'Q', b"SELECT 1\0")[..]);
            backend_peer.write_all(&msg(b'Z', b"T")).unwrap();
            let mut z = [0u8; 6];
            client_peer.read_exact(&mut z).unwrap();
            assert_eq!(relay.tx_status(id), Some(b'T'));
            keep.push((client, client_peer, backend, backend_peer));
        }
        for id in 1..=6u32 {
            relay.finish(id, None, None).unwrap();
            assert_eq!(relay.loop_of(id), None);
            // finishing again is a no-op
            relay.finish(id, None, None).unwrap();
        }
    }
}
