//! napi-rs bindings: this file only converts between JavaScript and the plain Rust modules.
#![deny(clippy::all)]

pub mod crc32c;
pub mod relay;
pub mod pool_protocol;
pub mod pool_relay;
pub mod wal_files;
pub mod wal_scan;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use wal_scan::{Carry, ScanOutput, ScanParams};

/// PostgreSQL CRC-32C of `data`, continuing from a previous finalized value `init`.
#[napi(js_name = "crc32c")]
pub fn crc32c_js(data: &[u8], init: Option<u32>) -> u32 {
    crc32c::crc32c_append(init.unwrap_or(0), data)
}

/// The scan state carried from one call to the next, as JavaScript sees it (wal_scan::Carry in Rust).
/// Its fields are those of ScanCarry in src/formats/wal/contract.ts: tsc checks the two against each
/// other through the generated binding.d.ts (src/native/index.ts).
#[napi(object)]
pub struct JsCarry {
    pub next_page_lsn: BigInt,
    pub next_record_lsn: BigInt,
    pub prev_record_lsn: BigInt,
    pub last_page_tli: u32,
    pub page_magic: u32,
    pub system_id: BigInt,
    pub segment_size: u32,
    pub block_size: u32,
    pub partial: Option<Buffer>,
    pub partial_tot_len: u32,
    pub random_access: bool,
    pub partial_crosses_segment: bool,
}

#[napi(object)]
pub struct JsScanOptions {
    pub buf_lsn: BigInt,
    pub carry: Option<JsCarry>,
    pub mode: String,
    pub start_lsn: Option<BigInt>,
    pub end_lsn: Option<BigInt>,
}

#[napi(object)]
pub struct JsScanResult {
    pub count: u32,
    pub records: Buffer,
    pub stats: Buffer,
    pub end_lsn: Option<BigInt>,
    /// index into END_REASONS (contract.ts)
    pub end_reason: Option<u32>,
    pub end_message: Option<String>,
    pub reached_end_lsn: bool,
    pub carry: JsCarry,
    pub first_record_lsn: BigInt,
    pub last_record_lsn: BigInt,
    pub last_record_end_lsn: BigInt,
}

fn u64_of(b: &BigInt) -> u64 {
    b.get_u64().1
}

fn carry_from_js(c: JsCarry) -> Carry {
    Carry {
        next_page_lsn: u64_of(&c.next_page_lsn),
        next_record_lsn: u64_of(&c.next_record_lsn),
        prev_record_lsn: u64_of(&c.prev_record_lsn),
        last_page_tli: c.last_page_tli,
        page_magic: c.page_magic as u16,
        system_id: u64_of(&c.system_id),
        segment_size: c.segment_size,
        block_size: c.block_size,
        partial: c.partial.map(|b| b.to_vec()),
        partial_tot_len: c.partial_tot_len,
        random_access: c.random_access,
        partial_crosses_segment: c.partial_crosses_segment,
    }
}

fn carry_to_js(c: Carry) -> JsCarry {
    JsCarry {
        next_page_lsn: BigInt::from(c.next_page_lsn),
        next_record_lsn: BigInt::from(c.next_record_lsn),
        prev_record_lsn: BigInt::from(c.prev_record_lsn),
        last_page_tli: c.last_page_tli,
        page_magic: c.page_magic as u32,
        system_id: BigInt::from(c.system_id),
        segment_size: c.segment_size,
        block_size: c.block_size,
        partial: c.partial.map(Buffer::from),
        partial_tot_len: c.partial_tot_len,
        random_access: c.random_access,
        partial_crosses_segment: c.partial_crosses_segment,
    }
}

fn to_js(out: ScanOutput) -> JsScanResult {
    let (end_lsn, end_reason, end_message) = match out.end {
        Some(e) => (Some(BigInt::from(e.lsn)), Some(e.reason), Some(e.message)),
        None => (None, None, None),
    };
    JsScanResult {
        count: out.count,
        records: Buffer::from(out.records),
        stats: Buffer::from(out.stats),
        end_lsn,
        end_reason,
        end_message,
        reached_end_lsn: out.reached_end_lsn,
        carry: carry_to_js(out.carry),
        first_record_lsn: BigInt::from(out.first_record_lsn),
        last_record_lsn: BigInt::from(out.last_record_lsn),
        last_record_end_lsn: BigInt::from(out.last_record_end_lsn),
    }
}

fn params_of(o: &JsScanOptions) -> Result<ScanParams> {
    let records_mode = match o.mode.as_str() {
        "records" => true,
        "stats" => false,
        m => return Err(Error::new(Status::InvalidArg, format!("scanWal: mode must be 'records' or 'stats', got '{m}'"))),
    };
    Ok(ScanParams {
        buf_lsn: u64_of(&o.buf_lsn),
        records_mode,
        start_lsn: o.start_lsn.as_ref().map(u64_of).unwrap_or(0),
        end_lsn: o.end_lsn.as_ref().map(u64_of).unwrap_or(0),
    })
}

/// Scan one buffer of WAL (one or more whole pages) in one call.
#[napi(js_name = "scanWal")]
pub fn scan_wal_js(buf: &[u8], options: JsScanOptions) -> Result<JsScanResult> {
    let params = params_of(&options)?;
    let carry = options.carry.map(carry_from_js);
    wal_scan::scan_wal(buf, &params, carry)
        .map(to_js)
        .map_err(|m| Error::new(Status::InvalidArg, m))
}

pub struct ScanTask {
    buf: Buffer,
    params: ScanParams,
    carry: Option<Carry>,
}

impl Task for ScanTask {
    type Output = ScanOutput;
    type JsValue = JsScanResult;

    fn compute(&mut self) -> Result<Self::Output> {
        wal_scan::scan_wal(&self.buf, &self.params, self.carry.take()).map_err(|m| Error::new(Status::InvalidArg, m))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(to_js(output))
    }
}

/// The same scan on the libuv thread pool, so the caller can read the next file meanwhile.
/// The buffer must not be modified until the promise settles.
#[napi(js_name = "scanWalAsync", ts_return_type = "Promise<JsScanResult>")]
pub fn scan_wal_async(buf: Buffer, options: JsScanOptions) -> Result<AsyncTask<ScanTask>> {
    let params = params_of(&options)?;
    let carry = options.carry.map(carry_from_js);
    Ok(AsyncTask::new(ScanTask { buf, params, carry }))
}

type SharedMap = std::sync::Arc<memmap2::Mmap>;

fn map_file(path: &str, length: usize) -> Result<Option<SharedMap>> {
    if length == 0 {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|e| Error::new(Status::GenericFailure, format!("{path}: {e}")))?;
    // SAFETY: WAL segment files are read-only here; PostgreSQL recycles them by rename, never by
    // truncating in place, and callers pass the length they saw in stat().
    let map = unsafe { memmap2::MmapOptions::new().len(length).populate().map(&file) }
        .map_err(|e| Error::new(Status::GenericFailure, format!("{path}: mmap failed: {e}")))?;
    Ok(Some(std::sync::Arc::new(map)))
}

/// A WAL file mapped into memory; opaque to JavaScript, consumed by `scanMappedAsync`.
#[napi]
pub struct MappedWal {
    inner: Option<SharedMap>,
}

#[napi]
impl MappedWal {
    /// Drop this handle's reference to the mapping now instead of at garbage collection.
    #[napi]
    pub fn release(&mut self) {
        self.inner = None;
    }
}

/// A WAL file mapped into memory (page tables populated) on the thread pool.
pub struct MapTask {
    path: String,
    length: usize,
}

impl Task for MapTask {
    type Output = Option<SharedMap>;
    type JsValue = MappedWal;

    fn compute(&mut self) -> Result<Self::Output> {
        map_file(&self.path, self.length)
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(MappedWal { inner: output })
    }
}

/// Map the first `length` bytes of a file (read-only); resolves to an opaque handle for
/// `scanMappedAsync`. Mapping segment N+1 while N is scanned keeps both cores busy.
#[napi(js_name = "mapWalFileAsync", ts_return_type = "Promise<MappedWal>")]
pub fn map_wal_file_async(path: String, length: u32) -> AsyncTask<MapTask> {
    AsyncTask::new(MapTask { path, length: length as usize })
}

pub struct ScanMappedTask {
    map: Option<SharedMap>,
    params: ScanParams,
    carry: Option<Carry>,
}

impl Task for ScanMappedTask {
    type Output = ScanOutput;
    type JsValue = JsScanResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let bytes: &[u8] = self.map.as_deref().map(|m| &m[..]).unwrap_or(&[]);
        wal_scan::scan_wal(bytes, &self.params, self.carry.take()).map_err(|m| Error::new(Status::InvalidArg, m))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        self.map = None; // unmap as soon as the scan is done
        Ok(to_js(output))
    }
}

/// Scan a mapped file (from `mapWalFileAsync`) on the thread pool.
#[napi(js_name = "scanMappedAsync", ts_return_type = "Promise<JsScanResult>")]
pub fn scan_mapped_async(map: &MappedWal, options: JsScanOptions) -> Result<AsyncTask<ScanMappedTask>> {
    let params = params_of(&options)?;
    let carry = options.carry.map(carry_from_js);
    Ok(AsyncTask::new(ScanMappedTask { map: map.inner.clone(), params, carry }))
}

/// What `scanWalFilesAsync` found over a run of segment files (wal_files::RunResult).
#[napi(object)]
pub struct JsFilesScanResult {
    /// records counted (a double: a long run can pass 2^32)
    pub count: f64,
    /// STATS_SLOTS entries as in JsScanResult.stats
    pub stats: Buffer,
    pub first_record_lsn: Option<BigInt>,
    pub last_record_lsn: Option<BigInt>,
    /// the state after the last file scanned (absent when no file was)
    pub carry: Option<JsCarry>,
    pub end_lsn: Option<BigInt>,
    /// index into END_REASONS (contract.ts); 'truncated' for a file shorter than a segment
    pub end_reason: Option<u32>,
    pub end_message: Option<String>,
    pub files_scanned: u32,
    pub bytes_scanned: f64,
}

/// Bytes scanned so far by the `scanWalFilesAsync` it is given to (read while the scan runs).
#[napi]
pub struct ScanProgress {
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[napi]
impl ScanProgress {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        ScanProgress { bytes: Default::default() }
    }

    #[napi(getter)]
    pub fn bytes(&self) -> f64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64
    }
}

pub struct FilesScanTask {
    files: Vec<wal_files::SegmentInput>,
    segment_size: u32,
    block_size: u32,
    threads: usize,
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Task for FilesScanTask {
    type Output = wal_files::RunResult;
    type JsValue = JsFilesScanResult;

    fn compute(&mut self) -> Result<Self::Output> {
        wal_files::scan_files(&self.files, self.segment_size, self.block_size, self.threads, &self.progress).map_err(|m| Error::new(Status::GenericFailure, m))
    }

    fn resolve(&mut self, _env: Env, r: Self::Output) -> Result<Self::JsValue> {
        let stats = Buffer::from(r.stats_bytes());
        let (end_lsn, end_reason, end_message) = match r.end {
            Some(e) => (Some(BigInt::from(e.lsn)), Some(e.reason), Some(e.message)),
            None => (None, None, None),
        };
        Ok(JsFilesScanResult {
            count: r.count as f64,
            stats,
            first_record_lsn: r.first.map(BigInt::from),
            last_record_lsn: r.last.map(BigInt::from),
            carry: r.carry.map(carry_to_js),
            end_lsn,
            end_reason,
            end_message,
            files_scanned: r.files_scanned,
            bytes_scanned: r.bytes_scanned as f64,
        })
    }
}

/// Scan consecutive segment files (`paths[i]` starts at `bufLsns[i]`) for statistics on `threads`
/// threads (0: one per core) off the JavaScript thread; the result is that of one sequential pass
/// (wal_files.rs). Each file's first min(size, segmentSize) bytes are scanned, rounded down to
/// whole pages of `blockSize`.
#[napi(js_name = "scanWalFilesAsync", ts_return_type = "Promise<JsFilesScanResult>")]
pub fn scan_wal_files_async(paths: Vec<String>, buf_lsns: Vec<BigInt>, segment_size: u32, block_size: u32, threads: u32, progress: Option<&ScanProgress>) -> Result<AsyncTask<FilesScanTask>> {
    if paths.len() != buf_lsns.len() {
        return Err(Error::new(Status::InvalidArg, format!("scanWalFilesAsync: {} paths but {} LSNs", paths.len(), buf_lsns.len())));
    }
    if block_size == 0 || !block_size.is_power_of_two() || segment_size == 0 || !segment_size.is_multiple_of(block_size) {
        return Err(Error::new(Status::InvalidArg, format!("scanWalFilesAsync: segment size {segment_size} is not a multiple of a block size {block_size}")));
    }
    let threads = if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads as usize };
    let files = paths.into_iter().zip(buf_lsns.iter()).map(|(path, l)| wal_files::SegmentInput { path, buf_lsn: u64_of(l) }).collect();
    Ok(AsyncTask::new(FilesScanTask { files, segment_size, block_size, threads, progress: progress.map(|p| p.bytes.clone()).unwrap_or_default() }))
}

pub struct Sha256FileTask {
    path: String,
}

impl Task for Sha256FileTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<Self::Output> {
        use sha2::{Digest, Sha256};
        let file = std::fs::File::open(&self.path).map_err(|e| Error::new(Status::GenericFailure, format!("{}: {e}", self.path)))?;
        let len = file.metadata().map_err(|e| Error::new(Status::GenericFailure, format!("{}: {e}", self.path)))?.len();
        let mut h = Sha256::new();
        if len > 0 {
            // SAFETY: a file this process just wrote and fsynced, not modified while hashed
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::new(Status::GenericFailure, format!("{}: mmap failed: {e}", self.path)))?;
            h.update(&map[..]);
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// SHA-256 (hex) of a whole file, computed on the thread pool.
#[napi(js_name = "sha256FileAsync", ts_return_type = "Promise<string>")]
pub fn sha256_file_async(path: String) -> AsyncTask<Sha256FileTask> {
    AsyncTask::new(Sha256FileTask { path })
}

// ---------------------------------------------------------------- pgha-proxy relay

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

#[napi(object)]
pub struct JsRelayEvent {
    pub id: u32,
    pub kind: String,
    pub detail: String,
    pub sqlstate: Option<String>,
    pub client_terminated: bool,
    pub busy: bool,
}

type RelayCallback = ThreadsafeFunction<JsRelayEvent, (), JsRelayEvent, Status, false, true>;

struct TsfnSink(RelayCallback);

impl relay::EventSink for TsfnSink {
    fn emit(&self, e: relay::RelayEvent) {
        self.0.call(
            JsRelayEvent { id: e.id, kind: e.kind.to_string(), detail: e.detail, sqlstate: e.sqlstate, client_terminated: e.client_terminated, busy: e.busy },
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// The proxy's native relay: epoll loops on their own threads (`threads`, default 1) carrying the
/// handed-over sessions.
#[napi]
pub struct ProxyRelay {
    inner: relay::Relay,
}

#[napi]
impl ProxyRelay {
    #[napi(constructor, ts_args_type = "onEvent: (event: JsRelayEvent) => void, threads?: number")]
    pub fn new(on_event: RelayCallback, threads: Option<u32>) -> Result<Self> {
        let threads = threads.unwrap_or(1).clamp(1, 64) as usize;
        let inner = relay::Relay::start(std::sync::Arc::new(TsfnSink(on_event)), threads).map_err(|e| Error::from_reason(format!("relay: {e}")))?;
        Ok(ProxyRelay { inner })
    }

    /// take over a session (the descriptors are duplicated; the caller keeps its own)
    #[napi]
    pub fn add(&self, id: u32, client_fd: i32, backend_fd: i32, max_frontend_length: u32) -> Result<()> {
        self.inner.add(id, client_fd, backend_fd, max_frontend_length).map_err(|e| Error::from_reason(format!("relay add: {e}")))
    }

    /// end a session: `toClient` is written only between two server messages, `toBackend` only
    /// between two client messages; then the relay's descriptors are closed
    #[napi]
    pub fn finish(&self, id: u32, to_client: Option<Buffer>, to_backend: Option<Buffer>) -> Result<()> {
        self.inner
            .finish(id, to_client.map(|b| b.to_vec()), to_backend.map(|b| b.to_vec()))
            .map_err(|e| Error::from_reason(format!("relay finish: {e}")))
    }

    /// transaction status of the last ReadyForQuery (I, T, E)
    #[napi]
    pub fn tx_status(&self, id: u32) -> Option<String> {
        self.inner.tx_status(id).map(|b| (b as char).to_string())
    }

    /// [bytes from clients, bytes to clients, sessions, ReadyForQuery relayed, of those idle]
    #[napi]
    pub fn counters(&self) -> Vec<f64> {
        self.inner.totals().iter().map(|&v| v as f64).collect()
    }

    /// per loop, in order: the sessions it carries and the CPU seconds its thread used
    #[napi]
    pub fn loops(&self) -> Vec<Vec<f64>> {
        self.inner.loops().into_iter().map(|l| l.to_vec()).collect()
    }
}

// ---------------------------------------------------------------- pgha-proxy transaction pool

#[napi(object)]
pub struct JsPoolEvent {
    /// acquire, client-closed, server-closed, cancel, failed (the loop itself stopped on an error)
    pub kind: String,
    pub client: u32,
    pub server: u32,
    pub detail: String,
    /// server-closed: the server or the network ended it, not the pool
    pub lost: bool,
}

type PoolCallback = ThreadsafeFunction<JsPoolEvent, (), JsPoolEvent, Status, false, true>;

struct PoolTsfnSink(PoolCallback);

impl pool_relay::PoolSink for PoolTsfnSink {
    fn emit(&self, e: pool_relay::PoolEvent) {
        self.0.call(JsPoolEvent { kind: e.kind.to_string(), client: e.client, server: e.server, detail: e.detail, lost: e.lost }, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    let mut it = flat.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::from_reason(format!("pool {what}: {e}"))
}

/// what the clients of one route (user NUL database) did in the loop: PgBouncer's SHOW STATS totals
#[napi(object)]
pub struct JsRouteStats {
    pub route: String,
    /// ReadyForQuery `I` relayed (transactions, autocommit statements included)
    pub xacts: f64,
    /// ReadyForQuery relayed
    pub queries: f64,
    pub bytes_from_clients: f64,
    pub bytes_to_clients: f64,
    pub xact_us: f64,
    pub query_us: f64,
    /// waits for a server connection of a full pool, and microseconds waited in all
    pub wait_us: f64,
    pub waits: f64,
}

/// The proxy's transaction pool loop (native/src/pool_relay.rs): clients and server connections
/// handed over after login; a server connection changes hands at ReadyForQuery `I` in the loop.
#[napi]
pub struct ProxyPool {
    inner: pool_relay::PoolRelay,
}

#[napi]
impl ProxyPool {
    /// `session`: session mode (else transaction mode); `resetQuery`: session mode's reset query (null: none);
    /// `waitLimitMs`: how long a client may wait in the loop for a connection of a full pool (0: no
    /// limit), `waitError` the FATAL ErrorResponse it is then sent before it is closed
    #[napi(constructor, ts_args_type = "onEvent: (event: JsPoolEvent) => void, maxPrepared: number, primary: string | null, session: boolean, resetQuery: string | null, waitLimitMs: number, waitError: Buffer")]
    pub fn new(on_event: PoolCallback, max_prepared: u32, primary: Option<String>, session: bool, reset_query: Option<String>, wait_limit_ms: u32, wait_error: Buffer) -> Result<Self> {
        let wait_limit = (wait_limit_ms > 0).then(|| (std::time::Duration::from_millis(wait_limit_ms as u64), wait_error.to_vec()));
        let mode = pool_relay::PoolMode { session, max_prepared: max_prepared.max(1) as usize, reset_query, wait_limit };
        let inner = pool_relay::PoolRelay::start(std::sync::Arc::new(PoolTsfnSink(on_event)), mode).map_err(io_err("start"))?;
        inner.set_primary(primary).map_err(io_err("start"))?;
        Ok(ProxyPool { inner })
    }

    /// a logged-in client (after its ReadyForQuery); `settings` flat: name, value, name, value…;
    /// `offset`: bytes of its stream already framed (its errors name the byte as the TypeScript pool does)
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn add_client(&self, id: u32, fd: i32, route: String, settings: Vec<String>, max_frontend_length: u32, offset: u32) -> Result<()> {
        self.inner.add_client(id, fd, route, pairs(settings), max_frontend_length, offset as u64).map_err(io_err("add client"))
    }

    /// a server connection for a client that asked (`acquire`): linked to it at once
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn give_server(&self, client: u32, id: u32, fd: i32, route: String, node: String, settings: Vec<String>, prepared: Vec<String>) -> Result<()> {
        let init = pool_relay::PoolRelay::server_init(id, fd, route, node, pairs(settings), prepared).map_err(io_err("give server"))?;
        self.inner.give_server(client, init).map_err(io_err("give server"))
    }

    /// a logged-in server connection nobody waits for: idle in the pool
    #[napi]
    pub fn add_idle_server(&self, id: u32, fd: i32, route: String, node: String, settings: Vec<String>, prepared: Vec<String>) -> Result<()> {
        let init = pool_relay::PoolRelay::server_init(id, fd, route, node, pairs(settings), prepared).map_err(io_err("add server"))?;
        self.inner.add_idle_server(init).map_err(io_err("add server"))
    }

    /// the client's pool is full: it waits in the loop for a connection of its route to come back
    #[napi]
    pub fn wait(&self, client: u32) -> Result<()> {
        self.inner.wait(client).map_err(io_err("wait"))
    }

    /// end a client with this ErrorResponse
    #[napi]
    pub fn fail_client(&self, client: u32, error: Buffer) -> Result<()> {
        self.inner.fail_client(client, error.to_vec()).map_err(io_err("fail client"))
    }

    #[napi]
    pub fn set_primary(&self, node: Option<String>) -> Result<()> {
        self.inner.set_primary(node).map_err(io_err("set primary"))
    }

    /// the node no longer takes transactions: idle connections closed, transactions in flight ended
    #[napi]
    pub fn drain_node(&self, node: String, why: String) -> Result<()> {
        self.inner.drain_node(node, why).map_err(io_err("drain node"))
    }

    #[napi]
    pub fn close_idle(&self, node: String) -> Result<()> {
        self.inner.close_idle(node).map_err(io_err("close idle"))
    }

    /// JavaScript's pool of (route, node) is full and `n` clients the loop does not carry wait: the
    /// loop closes up to `n` of its connections there as they are (or go) idle (0: none wait)
    #[napi]
    pub fn give_back(&self, route: String, node: String, n: u32) -> Result<()> {
        self.inner.give_back(route, node, n).map_err(io_err("give back"))
    }

    /// per route (user NUL database): what its clients did (transactions, queries, bytes, time in
    /// transactions and queries, waits for a server connection)
    #[napi]
    pub fn route_stats(&self) -> Vec<JsRouteStats> {
        self.inner
            .route_stats()
            .into_iter()
            .map(|(route, v)| {
                let [xacts, queries, bytes_from_clients, bytes_to_clients, xact_us, query_us, wait_us, waits] = v.map(|x| x as f64);
                JsRouteStats { route, xacts, queries, bytes_from_clients, bytes_to_clients, xact_us, query_us, wait_us, waits }
            })
            .collect()
    }

    /// close the connections idle for `idleMs` or longer (null: keep them); `retire`: connections
    /// past their lifetime, closed when idle (now, or once their client lets them go)
    #[napi]
    pub fn expire(&self, idle_ms: Option<u32>, retire: Vec<u32>) -> Result<()> {
        self.inner.expire(idle_ms, retire).map_err(io_err("expire"))
    }

    #[napi]
    pub fn close_server(&self, id: u32) -> Result<()> {
        self.inner.close_server(id).map_err(io_err("close server"))
    }

    #[napi]
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.inner.set_paused(paused).map_err(io_err("pause"))
    }

    /// the server connection the client is on now
    #[napi]
    pub fn linked_server(&self, client: u32) -> Option<u32> {
        self.inner.linked_server(client)
    }

    /// {"clients":[[id,state,server,transactions,statements,waitMs]…],"servers":[[id,state,client,prepared]…]}
    #[napi]
    pub fn snapshot(&self) -> Result<String> {
        self.inner.snapshot().map_err(io_err("snapshot"))
    }

    #[napi]
    pub fn stop(&mut self) {
        self.inner.stop();
    }
}
