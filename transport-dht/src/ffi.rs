//! The safe wrapper over OpenDHT's C API (`opendht-sys`, linked against Debian's
//! `libopendht-c` 2.4). **All `unsafe` of this crate lives in this module**, each block with
//! a `// SAFETY:` line.
//!
//! Ownership rules, so that nothing leaks:
//! - a [`Runner`] owns one `dht_runner` (threaded: OpenDHT runs its own network thread) and is
//!   reference-counted; it is shut down and deleted when the last handle (the runner, or a
//!   [`Listen`] that borrows it) is dropped;
//! - every callback gets a heap *context* (`Box::into_raw`) registered in the runner's table;
//!   the callback that OpenDHT calls last for an operation (`done` of get/put/ping, the
//!   destroy guard of a listen) takes it out of the table and frees it. Contexts still in the
//!   table once `dht_runner_delete` returned (its threads are joined, so no callback can run
//!   any more) are freed then;
//! - a listen token is deleted when its [`Listen`] is dropped, after cancelling the listen;
//! - values are copied out inside the callbacks; C values made for `put` are unreferenced
//!   right after the call (OpenDHT keeps its own reference).
//!
//! Callbacks are bridged into tokio channels; a callback never blocks and never panics across
//! the FFI boundary (sending on a closed channel is ignored).
//!
//! Note on the bindings: `opendht-sys` generates them from a newer header than 2.4; the
//! functions used here have the same signatures in 2.4, and `dht_runner_config` (whose
//! layout differs) is never used: runners start with `dht_runner_run`, OpenDHT's defaults.

use std::collections::HashSet;
use std::ffi::{c_void, CString};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opendht_sys as sys;
use tokio::sync::{mpsc, oneshot};

/// A 20-byte OpenDHT key (an InfoHash).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// The SHA-1 of `data`, the way OpenDHT derives keys from strings.
    pub fn of(data: &[u8]) -> InfoHash {
        use sha1::Digest;
        InfoHash(sha1::Sha1::digest(data).into())
    }

    fn to_c(self) -> sys::dht_infohash {
        sys::dht_infohash { d: self.0 }
    }
}

impl std::fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Display for InfoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Errors of the C layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FfiError {
    /// `dht_runner_new` returned null.
    #[error("OpenDHT could not allocate a runner")]
    Alloc,
    /// `dht_runner_run` failed (e.g. the UDP port is taken).
    #[error("OpenDHT runner could not start on UDP port {port} (code {code})")]
    Run {
        /// The port asked for.
        port: u16,
        /// The C error code.
        code: i32,
    },
    /// A host name contained a NUL byte.
    #[error("invalid host name {0:?}")]
    Host(String),
}

/// How many C-side objects this module holds right now (for leak tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveCounts {
    /// Runners not yet deleted.
    pub runners: usize,
    /// Callback contexts not yet freed.
    pub contexts: usize,
    /// Listen tokens not yet deleted.
    pub tokens: usize,
}

static RUNNERS: AtomicUsize = AtomicUsize::new(0);
static CONTEXTS: AtomicUsize = AtomicUsize::new(0);
static TOKENS: AtomicUsize = AtomicUsize::new(0);

/// The C-side objects alive in this process.
pub fn live_counts() -> LiveCounts {
    LiveCounts {
        runners: RUNNERS.load(Ordering::SeqCst),
        contexts: CONTEXTS.load(Ordering::SeqCst),
        tokens: TOKENS.load(Ordering::SeqCst),
    }
}

/// What a get reports: each value found, then the end.
#[derive(Debug)]
pub enum GetEvent {
    /// One value's data.
    Value(Vec<u8>),
    /// The search ended (`true`: it reached the nodes responsible for the key).
    Done(bool),
}

/// What a listen reports: a value's data, and whether it expired (`true`) or appeared.
pub type ListenEvent = (Vec<u8>, bool);

/// A callback context: the channel a callback feeds.
enum Ctx {
    Done(Option<oneshot::Sender<bool>>),
    Get(mpsc::UnboundedSender<GetEvent>),
    Listen(mpsc::UnboundedSender<ListenEvent>),
}

/// A context as handed to C: the channel plus the table it is registered in.
struct Context {
    ctx: Ctx,
    table: Arc<Table>,
}

/// Contexts handed to C and not yet taken back, by address.
#[derive(Default)]
struct Table(Mutex<HashSet<usize>>);

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<usize>> {
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still consistent (insert/remove are atomic with respect to it).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a context to C.
    fn register(self: &Arc<Self>, ctx: Ctx) -> *mut c_void {
        let raw = Box::into_raw(Box::new(Context {
            ctx,
            table: self.clone(),
        }));
        CONTEXTS.fetch_add(1, Ordering::SeqCst);
        self.lock().insert(raw as usize);
        raw.cast()
    }

    /// Takes a context back from C; `None` if it was already taken.
    fn take(&self, raw: *mut c_void) -> Option<Box<Context>> {
        if !self.lock().remove(&(raw as usize)) {
            return None;
        }
        CONTEXTS.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: `raw` came from `Box::into_raw` in `register` and was still in the table,
        // so it is live and no one else owns it: removing it from the table transferred
        // ownership to us.
        Some(unsafe { Box::from_raw(raw.cast::<Context>()) })
    }

    /// Frees every context left (only once no callback can run any more).
    fn drain(&self) {
        let left: Vec<usize> = self.lock().iter().copied().collect();
        for raw in left {
            drop(self.take(raw as *mut c_void));
        }
    }
}

/// Borrows the context of a callback that is not the last one of its operation.
///
/// # Safety
/// `raw` must be a pointer registered by [`Table::register`] whose final callback has not run.
unsafe fn borrow<'a>(raw: *mut c_void) -> &'a Context {
    // SAFETY: per the function's contract the context is live until its final callback,
    // which OpenDHT runs after every other callback of the operation.
    unsafe { &*raw.cast::<Context>() }
}

/// Copies a value's bytes out of OpenDHT.
///
/// # Safety
/// `value` must be the pointer OpenDHT passed to a value callback.
unsafe fn value_bytes(value: *const sys::dht_value) -> Vec<u8> {
    if value.is_null() {
        return Vec::new();
    }
    // SAFETY: `value` is valid for the duration of the callback (OpenDHT holds the
    // shared_ptr); the view points into the value's data, `size` bytes long.
    unsafe {
        let view = sys::dht_value_get_data(value);
        if view.data.is_null() || view.size == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(view.data, view.size).to_vec()
        }
    }
}

extern "C" fn on_done(ok: bool, user: *mut c_void) {
    // SAFETY: `user` is a registered context; `done` is the last callback of its operation.
    let table = unsafe { borrow(user) }.table.clone();
    if let Some(mut context) = table.take(user) {
        match &mut context.ctx {
            Ctx::Done(tx) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(ok);
                }
            }
            Ctx::Get(tx) => {
                let _ = tx.send(GetEvent::Done(ok));
            }
            Ctx::Listen(_) => {}
        }
    }
}

extern "C" fn on_get(value: *const sys::dht_value, user: *mut c_void) -> bool {
    // SAFETY: `user` is a registered get context; its `done` has not run yet.
    let context = unsafe { borrow(user) };
    // SAFETY: `value` is the value OpenDHT passes to this callback.
    let data = unsafe { value_bytes(value) };
    match &context.ctx {
        Ctx::Get(tx) => tx.send(GetEvent::Value(data)).is_ok(),
        _ => false,
    }
}

extern "C" fn on_listen(value: *const sys::dht_value, expired: bool, user: *mut c_void) -> bool {
    // SAFETY: `user` is a registered listen context; its destroy guard has not run yet.
    let context = unsafe { borrow(user) };
    // SAFETY: `value` is the value OpenDHT passes to this callback.
    let data = unsafe { value_bytes(value) };
    match &context.ctx {
        Ctx::Listen(tx) => tx.send((data, expired)).is_ok(),
        _ => false,
    }
}

extern "C" fn on_listen_end(user: *mut c_void) {
    // SAFETY: `user` is a registered listen context; this destroy guard is its last callback.
    let table = unsafe { borrow(user) }.table.clone();
    drop(table.take(user));
}

extern "C" fn on_shutdown(user: *mut c_void) {
    on_done(true, user)
}

/// The runner itself, shared by [`Runner`] and its [`Listen`]s.
struct Inner {
    ptr: *mut sys::dht_runner,
    table: Arc<Table>,
}

// SAFETY: a threaded DhtRunner is thread-safe (every method posts to its own thread under its
// locks); the raw pointer is only dereferenced by OpenDHT.
unsafe impl Send for Inner {}
// SAFETY: as above, concurrent calls on a DhtRunner are synchronised by OpenDHT.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `dht_runner_new` and is deleted only here, once; deleting
        // joins OpenDHT's threads, so no callback runs after it returns.
        unsafe { sys::dht_runner_delete(self.ptr) };
        RUNNERS.fetch_sub(1, Ordering::SeqCst);
        self.table.drain();
    }
}

/// One OpenDHT node running in this process (its own UDP socket and thread).
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("node_id", &self.node_id())
            .finish()
    }
}

impl Runner {
    /// Starts a node on UDP `port` (0: any free port), all interfaces, OpenDHT's defaults.
    pub fn start(port: u16) -> Result<Runner, FfiError> {
        // SAFETY: no preconditions; a null result is handled below.
        let ptr = unsafe { sys::dht_runner_new() };
        if ptr.is_null() {
            return Err(FfiError::Alloc);
        }
        RUNNERS.fetch_add(1, Ordering::SeqCst);
        let inner = Arc::new(Inner {
            ptr,
            table: Arc::default(),
        });
        // SAFETY: `ptr` is a fresh runner owned by `inner`.
        let code = unsafe { sys::dht_runner_run(ptr, port) };
        if code != 0 {
            return Err(FfiError::Run { port, code });
        }
        Ok(Runner { inner })
    }

    /// The UDP port the node is bound to (IPv4).
    pub fn port(&self) -> u16 {
        // SAFETY: the runner is live while `self` is.
        unsafe { sys::dht_runner_get_bound_port(self.inner.ptr, libc::AF_INET as _) }
    }

    /// The node's id in the DHT.
    pub fn node_id(&self) -> InfoHash {
        // SAFETY: the runner is live while `self` is; the result is a plain value.
        InfoHash(unsafe { sys::dht_runner_get_node_id(self.inner.ptr) }.d)
    }

    /// Whether the node is running.
    pub fn is_running(&self) -> bool {
        // SAFETY: the runner is live while `self` is.
        unsafe { sys::dht_runner_is_running(self.inner.ptr) }
    }

    /// Asks OpenDHT to bootstrap from `host:port` (resolved and pinged in the background).
    pub fn bootstrap(&self, host: &str, port: u16) -> Result<(), FfiError> {
        let c_host = CString::new(host).map_err(|_| FfiError::Host(host.to_owned()))?;
        let c_port = CString::new(port.to_string()).map_err(|_| FfiError::Host(host.to_owned()))?;
        // SAFETY: the runner is live; both strings are NUL-terminated and outlive the call
        // (OpenDHT copies them).
        unsafe { sys::dht_runner_bootstrap(self.inner.ptr, c_host.as_ptr(), c_port.as_ptr()) };
        Ok(())
    }

    /// Pings a node; resolves to whether it answered.
    pub fn ping(&self, addr: SocketAddr) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let user = self.inner.table.register(Ctx::Done(Some(tx)));
        let (storage, len) = sockaddr_of(addr);
        // SAFETY: the runner is live; `storage` holds a valid sockaddr of `len` bytes for the
        // call (OpenDHT copies it); `user` is a registered context freed by `on_done`.
        unsafe {
            sys::dht_runner_ping(
                self.inner.ptr,
                (&storage as *const libc::sockaddr_storage)
                    .cast_mut()
                    .cast(),
                len,
                Some(on_done),
                user,
            )
        };
        rx
    }

    /// Stores `data` under `key`; resolves to whether enough nodes took it.
    pub fn put(&self, key: InfoHash, data: &[u8]) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let hash = key.to_c();
        // SAFETY: `data` is valid for `len` bytes; OpenDHT copies it into a new value.
        let value = unsafe { sys::dht_value_new(data.as_ptr(), data.len()) };
        if value.is_null() {
            let _ = tx.send(false);
            return rx;
        }
        let user = self.inner.table.register(Ctx::Done(Some(tx)));
        // SAFETY: the runner and `value` are live; `hash` outlives the call; `user` is a
        // registered context freed by `on_done`. The put takes its own reference to the
        // value, so ours is released right after.
        unsafe {
            sys::dht_runner_put(self.inner.ptr, &hash, value, Some(on_done), user, false);
            sys::dht_value_unref(value);
        }
        rx
    }

    /// Searches `key`: every value found, then [`GetEvent::Done`].
    pub fn get(&self, key: InfoHash) -> mpsc::UnboundedReceiver<GetEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let hash = key.to_c();
        let user = self.inner.table.register(Ctx::Get(tx));
        // SAFETY: the runner is live; `hash` outlives the call; `user` is a registered
        // context that `on_get` borrows and `on_done` (the last callback) frees.
        unsafe { sys::dht_runner_get(self.inner.ptr, &hash, Some(on_get), Some(on_done), user) };
        rx
    }

    /// Listens on `key`: values present and future, until the [`Listen`] is dropped.
    pub fn listen(&self, key: InfoHash) -> Listen {
        let (tx, rx) = mpsc::unbounded_channel();
        let hash = key.to_c();
        let user = self.inner.table.register(Ctx::Listen(tx));
        // SAFETY: the runner is live; `hash` outlives the call; `user` is a registered
        // context that `on_listen` borrows and `on_listen_end` (the destroy guard, last)
        // frees. The returned token is owned by the `Listen` and deleted in its drop.
        let token = unsafe {
            sys::dht_runner_listen(
                self.inner.ptr,
                &hash,
                Some(on_listen),
                Some(on_listen_end),
                user,
            )
        };
        if !token.is_null() {
            TOKENS.fetch_add(1, Ordering::SeqCst);
        }
        Listen {
            runner: self.inner.clone(),
            key,
            token,
            events: rx,
        }
    }

    /// Shuts the node down cleanly (announces nothing more); resolves when done. The runner
    /// is deleted when the last handle is dropped.
    pub fn shutdown(&self) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let user = self.inner.table.register(Ctx::Done(Some(tx)));
        // SAFETY: the runner is live; `user` is a registered context freed by
        // `on_shutdown` (or by the table when the runner is deleted first).
        unsafe { sys::dht_runner_shutdown(self.inner.ptr, Some(on_shutdown), user) };
        rx
    }
}

/// A live listen; dropping it cancels the listen.
pub struct Listen {
    runner: Arc<Inner>,
    key: InfoHash,
    token: *mut sys::dht_op_token,
    events: mpsc::UnboundedReceiver<ListenEvent>,
}

// SAFETY: the token is only passed back to OpenDHT (thread-safe), from whichever thread drops.
unsafe impl Send for Listen {}
// SAFETY: `&Listen` gives no access to the token.
unsafe impl Sync for Listen {}

impl Listen {
    /// The next value seen (data, expired); `None` once the runner stopped the listen.
    pub async fn next(&mut self) -> Option<ListenEvent> {
        self.events.recv().await
    }

    /// The key listened on.
    pub fn key(&self) -> InfoHash {
        self.key
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        if self.token.is_null() {
            return;
        }
        let hash = self.key.to_c();
        // SAFETY: the runner is live (we hold a reference); the token came from
        // `dht_runner_listen` and is cancelled and deleted exactly once, here. The cancel
        // moves the token's future out, so deleting the husk right after is sound.
        unsafe {
            sys::dht_runner_cancel_listen(self.runner.ptr, &hash, self.token);
            sys::dht_op_token_delete(self.token);
        }
        TOKENS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A `sockaddr_storage` holding `addr`, and its length.
fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in6`.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
