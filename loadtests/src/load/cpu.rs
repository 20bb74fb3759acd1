//! CPU time of another process, from /proc: a cost per request that holds on
//! a noisy, shared machine where wall-clock throughput does not.

use std::path::Path;

/// Nanoseconds the process `pid` has spent on a CPU, all threads together.
/// Sums `/proc/PID/task/*/schedstat` (nanosecond resolution); falls back to
/// `/proc/PID/stat` (clock ticks). Threads that already exited are counted by
/// the fallback only, so runs compare like with like.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    if let Ok(entries) = std::fs::read_dir(&tasks) {
        let mut total = 0u64;
        let mut any = false;
        for e in entries.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
                    total += ns;
                    any = true;
                }
            }
        }
        if any {
            return Some(total);
        }
    }
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_cpu_time() {
        let pid = std::process::id();
        let a = super::cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = super::cpu_ns(pid).unwrap();
        assert!(b > a);
        assert!(super::cpu_ns(u32::MAX).is_none());
    }
}
