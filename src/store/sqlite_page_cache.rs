//! SQLite's default page cache, wrapped so that a commit does not walk the whole cache.
//!
//! When a B-tree page splits, `balance_nonroot` sorts the new pages by number by
//! swapping them through a temporary number, the page that holds the file's lock bytes
//! (`PENDING_BYTE / page size + 1`, page 262,145 with 4 KiB pages). The default cache
//! remembers the largest number it has seen, and at the end of every transaction the
//! pager asks it to drop the pages past the end of the file: with that temporary number
//! remembered, the cache scans its whole hash table (4,096 slots and every page it holds,
//! at our 16 MB cache) although there is nothing to drop. After a split that is every
//! commit: 2.5 % of the hub's CPU under ingest, 1.5 % on user-targeted messages.
//!
//! This wrapper keeps the largest page number really in use (the temporary one left
//! out) and passes a truncation on only when a page at or past the limit may exist: one
//! it tracked, or the temporary one if the cache still holds it. Everything else goes
//! straight to the default cache.
//!
//! SQLite takes a page cache only before it initialises; [`install`] must run before
//! anything else touches SQLite (it does: every path that opens a database calls
//! `sqlite_wal_writes::install` first, which calls this). Late, it changes nothing.

use libsqlite3_sys as ffi;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The byte range SQLite locks, at 1 GiB into the file (`PENDING_BYTE` in `sqlite3.c`).
const PENDING_BYTE: u32 = 0x4000_0000;

/// The default cache's methods.
struct Inner(ffi::sqlite3_pcache_methods2);
// SAFETY: SQLite's default methods are plain functions and a null argument, read-only.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();

/// Truncations passed over that the default cache would have answered with a scan.
static SCANS_AVOIDED: AtomicU64 = AtomicU64::new(0);

/// How many whole-cache scans the wrapper has saved since the process started.
pub fn scans_avoided() -> u64 {
    SCANS_AVOIDED.load(Ordering::Relaxed)
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    &INNER.get().expect("page cache methods used before install").0
}

/// One connection's cache (SQLite calls a cache from one connection at a time).
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The page number `balance_nonroot` borrows while it swaps two pages.
    swap_key: c_uint,
    /// The largest page number handed out or moved to, the swap number left out.
    max_key: c_uint,
    /// A page went through the swap number since the default cache last truncated, so
    /// it remembers that number as its largest.
    swapped: bool,
}

/// Whether a truncation at `limit` may drop something, given the largest tracked page
/// number and, when the swap number is at or past the limit, whether that page is held.
fn truncation_needed(limit: c_uint, max_key: c_uint, swap_page_held: impl FnOnce() -> bool, swap_key: c_uint) -> bool {
    limit <= max_key || (swap_key >= limit && swap_page_held())
}

/// Installs the wrapper as SQLite's page cache. Returns whether it took effect: SQLite
/// refuses a new cache once it has initialised.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sqlite3_config with these options reads or copies one
        // sqlite3_pcache_methods2; both live for the whole process.
        unsafe {
            let mut default = std::mem::zeroed::<ffi::sqlite3_pcache_methods2>();
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default as *mut _) != ffi::SQLITE_OK
                || default.xCreate.is_none()
            {
                return false;
            }
            if INNER.set(Inner(default)).is_err() {
                return false;
            }
            let ours = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: std::ptr::null_mut(),
                xInit: Some(init),
                xShutdown: Some(shutdown),
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const _) == ffi::SQLITE_OK
        }
    })
}

unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *(p as *mut Cache)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    match inner().xInit {
        Some(f) => f(inner().pArg),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    if let Some(f) = inner().xShutdown {
        f(inner().pArg);
    }
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let Some(f) = inner().xCreate else { return std::ptr::null_mut() };
    let p = f(page_size, extra, purgeable);
    if p.is_null() {
        return p;
    }
    let swap_key = PENDING_BYTE / page_size.max(1) as u32 + 1;
    Box::into_raw(Box::new(Cache { inner: p, swap_key, max_key: 0, swapped: false })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = inner().xCachesize {
        f(cache(p).inner, n);
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    inner().xPagecount.map_or(0, |f| f(cache(p).inner))
}

unsafe extern "C" fn fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
    let c = cache(p);
    let Some(f) = inner().xFetch else { return std::ptr::null_mut() };
    let page = f(c.inner, key, create);
    if !page.is_null() && key != c.swap_key && key > c.max_key {
        c.max_key = key;
    }
    page
}

unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    if let Some(f) = inner().xUnpin {
        f(cache(p).inner, page, discard);
    }
}

unsafe extern "C" fn rekey(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, old: c_uint, new: c_uint) {
    let c = cache(p);
    if let Some(f) = inner().xRekey {
        f(c.inner, page, old, new);
    }
    if new == c.swap_key {
        c.swapped = true;
    } else if new > c.max_key {
        c.max_key = new;
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = cache(p);
    let Some(f) = inner().xTruncate else { return };
    let (inner_cache, swap_key) = (c.inner, c.swap_key);
    // Looking the swap page up pins it if it is there; the truncation then drops it,
    // pinned or not.
    let swap_page_held = || inner().xFetch.is_some_and(|fetch| !fetch(inner_cache, swap_key, 0).is_null());
    if truncation_needed(limit, c.max_key, swap_page_held, swap_key) {
        f(c.inner, limit);
        c.max_key = c.max_key.min(limit.saturating_sub(1));
        c.swapped = false;
    } else if c.swapped {
        SCANS_AVOIDED.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = Box::from_raw(p as *mut Cache);
    if let Some(f) = inner().xDestroy {
        f(c.inner);
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = inner().xShrink {
        f(cache(p).inner);
    }
}

#[cfg(test)]
mod tests {
    use super::truncation_needed;

    const SWAP: u32 = 262_145;

    #[test]
    fn a_truncation_past_every_tracked_page_is_skipped_unless_the_swap_page_is_held() {
        assert!(!truncation_needed(101, 100, || false, SWAP));
        assert!(truncation_needed(101, 100, || true, SWAP));
    }

    #[test]
    fn a_truncation_at_or_below_a_tracked_page_goes_through() {
        assert!(truncation_needed(100, 100, || panic!("not asked"), SWAP));
        assert!(truncation_needed(1, 100, || panic!("not asked"), SWAP));
    }

    #[test]
    fn the_swap_page_below_the_limit_is_not_looked_up() {
        // A database past 1 GiB: the swap number is inside the file and never dropped.
        assert!(!truncation_needed(SWAP + 10, SWAP + 5, || panic!("not asked"), SWAP));
    }
}
