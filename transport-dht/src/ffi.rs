//! The safe wrapper over OpenDHT's C API (`opendht-sys`, linked against Debian's
//! `libopendht-c` 2.4). **All `unsafe` of this crate lives in this module**, each block with
//! a `// SAFETY:` line.
//!
//! Ownership rules, so that nothing leaks:
//! - a [`Runner`] owns one `dht_runner` (threaded: OpenDHT runs its own network thread) and is
//!   reference-counted; it is shut down and deleted when the last handle (the runner, or a
//!   [`Listen`] that borrows it) is dropped;
//! - every callback gets a *context* (the channel it feeds) kept in one process-wide
//!   registry, under an id that is never reused; C gets the **id** as its `user` pointer, never
//!   an address. A callback looks its id up in the registry, so one that comes late (after its
//!   operation ended, or after its runner was deleted) finds nothing and does nothing: no
//!   pointer from C is ever dereferenced. The callback that OpenDHT calls last for an
//!   operation (`done` of get/put/ping, the destroy guard of a listen) removes the context;
//!   contexts of a runner still registered once `dht_runner_delete` returned (its threads are
//!   joined, so no callback can run any more) are removed then;
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

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

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

/// A registered context: the channel, and the runner whose operation it serves.
struct Entry {
    ctx: Ctx,
    runner: usize,
}

/// Every context handed to C and not yet taken back, by id. Reached without any pointer from
/// C: a callback passes its `user` value, an id, and finds its context only while it is
/// registered.
static REGISTRY: LazyLock<Mutex<HashMap<usize, Entry>>> = LazyLock::new(Mutex::default);

/// The next context id (0 is never used, so `user` is never null).
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The next runner id (contexts are removed per runner when it is deleted).
static NEXT_RUNNER: AtomicUsize = AtomicUsize::new(1);

fn registry() -> std::sync::MutexGuard<'static, HashMap<usize, Entry>> {
    // A poisoned lock only means another thread panicked while holding it; the map is
    // still consistent (insert/remove are atomic with respect to it).
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a context of `runner`'s; returns the `user` value to hand to C (its id).
fn register(runner: usize, ctx: Ctx) -> *mut c_void {
    let mut map = registry();
    let id = loop {
        // Ids wrap only after usize::MAX registrations; a wrapped id still in use is skipped.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 && !map.contains_key(&id) {
            break id;
        }
    };
    map.insert(id, Entry { ctx, runner });
    CONTEXTS.fetch_add(1, Ordering::SeqCst);
    // An integer carried in a pointer-sized slot; never dereferenced.
    id as *mut c_void
}

/// Takes a context back (its operation ended); `None` if it is not registered (any more).
fn take(user: *mut c_void) -> Option<Ctx> {
    let entry = registry().remove(&(user as usize))?;
    CONTEXTS.fetch_sub(1, Ordering::SeqCst);
    Some(entry.ctx)
}

/// Runs `f` on a registered context (a callback that is not its operation's last); `None`
/// if it is not registered (any more).
fn with_context<T>(user: *mut c_void, f: impl FnOnce(&Ctx) -> T) -> Option<T> {
    registry().get(&(user as usize)).map(|entry| f(&entry.ctx))
}

/// Removes every context of `runner` (only once no callback of it can run any more).
fn drain(runner: usize) {
    let mut map = registry();
    let before = map.len();
    map.retain(|_, e| e.runner != runner);
    CONTEXTS.fetch_sub(before - map.len(), Ordering::SeqCst);
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
    // `done` is the last callback of its operation: the context is taken out, once.
    match take(user) {
        Some(Ctx::Done(Some(tx))) => {
            let _ = tx.send(ok);
        }
        Some(Ctx::Get(tx)) => {
            let _ = tx.send(GetEvent::Done(ok));
        }
        Some(Ctx::Done(None) | Ctx::Listen(_)) | None => {}
    }
}

extern "C" fn on_get(value: *const sys::dht_value, user: *mut c_void) -> bool {
    with_context(user, |ctx| match ctx {
        Ctx::Get(tx) => {
            // SAFETY: `value` is the value OpenDHT passes to this callback.
            let data = unsafe { value_bytes(value) };
            tx.send(GetEvent::Value(data)).is_ok()
        }
        _ => false,
    })
    .unwrap_or(false)
}

extern "C" fn on_listen(value: *const sys::dht_value, expired: bool, user: *mut c_void) -> bool {
    with_context(user, |ctx| match ctx {
        Ctx::Listen(tx) => {
            // SAFETY: `value` is the value OpenDHT passes to this callback.
            let data = unsafe { value_bytes(value) };
            tx.send((data, expired)).is_ok()
        }
        _ => false,
    })
    .unwrap_or(false)
}

extern "C" fn on_listen_end(user: *mut c_void) {
    // The destroy guard is the listen's last callback: the context is taken out, once.
    drop(take(user));
}

extern "C" fn on_shutdown(user: *mut c_void) {
    on_done(true, user)
}

/// The runner itself, shared by [`Runner`] and its [`Listen`]s.
struct Inner {
    ptr: *mut sys::dht_runner,
    /// Its id in the context registry.
    id: usize,
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
        drain(self.id);
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
            id: NEXT_RUNNER.fetch_add(1, Ordering::Relaxed),
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
        let user = register(self.inner.id, Ctx::Done(Some(tx)));
        let (storage, len) = sockaddr_of(addr);
        // SAFETY: the runner is live; `storage` holds a valid sockaddr of `len` bytes for the
        // call (OpenDHT copies it); `user` is a registry id removed by `on_done`.
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
        let user = register(self.inner.id, Ctx::Done(Some(tx)));
        // SAFETY: the runner and `value` are live; `hash` outlives the call; `user` is a
        // registry id removed by `on_done`. The put takes its own reference to the
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
        let user = register(self.inner.id, Ctx::Get(tx));
        // SAFETY: the runner is live; `hash` outlives the call; `user` is a registry id
        // (never dereferenced) that `on_get` looks up and `on_done` (the last callback)
        // removes.
        unsafe { sys::dht_runner_get(self.inner.ptr, &hash, Some(on_get), Some(on_done), user) };
        rx
    }

    /// Listens on `key`: values present and future, until the [`Listen`] is dropped.
    pub fn listen(&self, key: InfoHash) -> Listen {
        let (tx, rx) = mpsc::unbounded_channel();
        let hash = key.to_c();
        let user = register(self.inner.id, Ctx::Listen(tx));
        // SAFETY: the runner is live; `hash` outlives the call; `user` is a registry id
        // (never dereferenced) that `on_listen` looks up and `on_listen_end` (the destroy
        // guard, last) removes. The returned token is owned by the `Listen` and deleted in
        // its drop.
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
        let user = register(self.inner.id, Ctx::Done(Some(tx)));
        // SAFETY: the runner is live; `user` is a registry id (never dereferenced) removed by
        // `on_shutdown` (or by `drain` when the runner is deleted first).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A callback reaches its context through the registry by id, so a late one (after its
    /// operation ended, after its runner was deleted, or for an id never handed out) finds
    /// nothing and touches no memory: the guard prevents a use-after-free, not only a
    /// double free.
    #[test]
    fn late_callbacks_find_nothing_and_do_nothing() {
        // A runner id no real runner has.
        let runner = NEXT_RUNNER.fetch_add(1, Ordering::Relaxed);
        let never = usize::MAX as *mut c_void;
        assert!(!on_get(std::ptr::null(), never));
        assert!(!on_listen(std::ptr::null(), false, never));
        on_done(true, never);
        on_listen_end(never);
        on_shutdown(never);

        let (tx, mut rx) = oneshot::channel();
        let user = register(runner, Ctx::Done(Some(tx)));
        on_done(true, user);
        assert_eq!(rx.try_recv(), Ok(true));
        // The same `done` again: its context is gone, nothing happens.
        on_done(false, user);
        on_listen_end(user);
        assert!(take(user).is_none());

        let (tx, mut rx) = mpsc::unbounded_channel();
        let listen = register(runner, Ctx::Listen(tx));
        assert!(on_listen(std::ptr::null(), false, listen));
        assert_eq!(rx.try_recv(), Ok((Vec::new(), false)));
        let (tx, _get_rx) = mpsc::unbounded_channel();
        let get = register(runner, Ctx::Get(tx));
        assert_ne!(get, listen, "ids are not reused");
        // The runner is deleted: its contexts go; callbacks coming after find nothing.
        drain(runner);
        assert!(!on_listen(std::ptr::null(), true, listen));
        assert!(!on_get(std::ptr::null(), get));
        on_listen_end(listen);
        on_done(true, get);
        assert_eq!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected),
            "the listen's channel was dropped with its context"
        );
    }
}
