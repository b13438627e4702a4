//! Process limits.

/// Raises the open-file limit to the hard limit (every socket is a descriptor); returns
/// the limit in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// How many malloc arenas to allow: one per worker thread, unless the operator chose
/// with `MALLOC_ARENA_MAX` (`None`: leave the allocator as it is).
///
/// glibc gives every thread that meets a busy arena a new one, up to 8 per core. The
/// hub's threads hand their allocations to one another (a worker builds a batch, the
/// persistence thread stores and frees it), so each extra arena mostly adds cross-arena
/// frees and heaps grown with `mprotect`; on the benchmark (README, Performance) one
/// arena per worker took ~4 % off the CPU per message and ~8 % off the RSS per busy
/// socket, and the slow outliers among runs went.
pub fn malloc_arena_cap(workers: usize, operator_choice: Option<&str>) -> Option<usize> {
    match operator_choice {
        Some(_) => None,
        None => Some(workers.max(1)),
    }
}

/// Applies [`malloc_arena_cap`]; call before any thread starts. Returns the cap set.
pub fn cap_malloc_arenas(workers: usize) -> Option<usize> {
    let cap = malloc_arena_cap(workers, std::env::var("MALLOC_ARENA_MAX").ok().as_deref())?;
    set_arena_max(cap).then_some(cap)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(cap: usize) -> bool {
    let cap = libc::c_int::try_from(cap).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes the allocator's tuning; it returns 1 on success.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, cap) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_cap: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_arena_per_worker_unless_the_operator_chose() {
        assert_eq!(malloc_arena_cap(1, None), Some(1));
        assert_eq!(malloc_arena_cap(4, None), Some(4));
        assert_eq!(malloc_arena_cap(0, None), Some(1));
        assert_eq!(malloc_arena_cap(4, Some("2")), None);
        assert_eq!(malloc_arena_cap(1, Some("")), None);
    }
}
