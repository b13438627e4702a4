//! Maps and sets keyed by ids (user and notification UUIDs), hashed with foldhash.
//!
//! std's SipHash guards against keys chosen to collide; these keys are UUIDs that a
//! signed token or a trusted service names, and foldhash's per-process random seed is
//! guard enough. SipHash was ~4 % of a broadcast delivery's instructions on the request
//! thread and ~2.5 % on the SQLite writer (callgrind).

/// The hasher of every map below.
pub type IdHasher = foldhash::fast::RandomState;
/// A `HashMap` keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHasher>;
/// A `HashSet` of ids.
pub type IdSet<K> = std::collections::HashSet<K, IdHasher>;
/// A `DashMap` keyed by ids.
pub type IdDashMap<K, V> = dashmap::DashMap<K, V, IdHasher>;

/// An empty map with room for `n` entries.
pub fn map_with_capacity<K, V>(n: usize) -> IdMap<K, V> {
    IdMap::with_capacity_and_hasher(n, IdHasher::default())
}

/// An empty set with room for `n` ids.
pub fn set_with_capacity<K>(n: usize) -> IdSet<K> {
    IdSet::with_capacity_and_hasher(n, IdHasher::default())
}
