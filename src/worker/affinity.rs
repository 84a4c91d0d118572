//! Pinning the compute threads, one per CPU, where the process owns exactly that many.
//!
//! Left to the scheduler, the pool's two threads on the 2-vCPU reference VM were often
//! found on the same CPU for seconds at a time: their spinners (`spin_while`) look busy,
//! and a busy, cache-hot thread is not migrated to the idle core. A forked convolution
//! then ran its halves one after the other: SqueezeNet's 1×1 took 46 µs instead of 26–31,
//! CIFAR's 3×3 27 instead of 18. Pinned, each thread keeps its own core.
//!
//! Pinning is only safe when the CPUs are the process's own: an affinity mask of exactly
//! as many CPUs as the pool has threads (a cpuset, a VM, `taskset`). With more CPUs
//! allowed than threads (a container limited by CFS quota on a large host) other work
//! shares those CPUs, and the scheduler must stay free to move the threads, so nothing is
//! pinned. Config `pin_threads = false` turns it off everywhere.

#![allow(unsafe_code)]

/// The CPUs the calling thread may run on, in increasing order; `None` where the mask
/// cannot be read (not Linux, or the call failed).
pub(super) fn allowed_cpus() -> Option<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is a plain bit array; all zeros is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; the kernel writes at most `size_of` bytes
        // into `set`, which lives for the call.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return None;
        }
        let cpus = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` < CPU_SETSIZE, the set's capacity in bits.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect();
        Some(cpus)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The CPU for each of `threads` pool threads, or `None` to leave them to the scheduler:
/// `Some` only when `enabled` and `allowed` holds exactly `threads` CPUs.
pub(super) fn plan(
    enabled: bool,
    threads: usize,
    allowed: Option<Vec<usize>>,
) -> Option<Vec<usize>> {
    allowed.filter(|cpus| enabled && threads > 1 && cpus.len() == threads)
}

/// Restricts the calling thread to `cpu`; false if the kernel refused (the thread then
/// runs where it did before).
pub(super) fn pin_current_thread(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        // SAFETY: as in `allowed_cpus`: a zeroed set is empty, `cpu` < CPU_SETSIZE.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; the kernel reads `size_of` bytes of `set`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_only_when_the_process_owns_exactly_one_cpu_per_thread() {
        assert_eq!(plan(true, 2, Some(vec![3, 5])), Some(vec![3, 5]));
        // More CPUs than threads: others share them, the scheduler decides.
        assert_eq!(plan(true, 2, Some(vec![0, 1, 2, 3])), None);
        // Fewer CPUs than threads: two threads would share one CPU.
        assert_eq!(plan(true, 4, Some(vec![0, 1])), None);
        assert_eq!(plan(false, 2, Some(vec![0, 1])), None);
        assert_eq!(plan(true, 1, Some(vec![0])), None);
        assert_eq!(plan(true, 2, None), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only() {
        let allowed = allowed_cpus().expect("affinity mask on Linux");
        assert!(!allowed.is_empty());
        let cpu = *allowed.last().unwrap();
        let seen = std::thread::spawn(move || {
            assert!(pin_current_thread(cpu));
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(seen, Some(vec![cpu]));
        // The spawning thread's mask is untouched.
        assert_eq!(allowed_cpus(), Some(allowed));
    }
}
