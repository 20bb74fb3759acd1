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

/// Nanoseconds the process `pid` has spent on a CPU and waiting on a run
/// queue (runnable but not running), all its threads together, from
/// `/proc/PID/task/*/schedstat`. The wait says whether the process had to
/// share its core.
pub fn run_and_wait_ns(pid: u32) -> Option<(u64, u64)> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let mut total = (0u64, 0u64);
    let mut any = false;
    for e in std::fs::read_dir(&tasks).ok()?.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            if let (Some(Some(run)), Some(Some(wait))) = (f.next(), f.next()) {
                total = (total.0.saturating_add(run), total.1.saturating_add(wait));
                any = true;
            }
        }
    }
    any.then_some(total)
}

/// One core's time since boot from `/proc/stat`, in clock ticks.
pub fn core_ticks(cpu: usize) -> Option<CoreTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu}");
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let f: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    if f.len() < 8 {
        return None;
    }
    let all: u64 = f.iter().sum();
    Some(CoreTicks { busy: all.saturating_sub(f[3]).saturating_sub(f[4]), nice: f[1], all })
}

/// A core's clock ticks (see [`core_ticks`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreTicks {
    /// Not idle (niced work included).
    pub busy: u64,
    /// Niced user time: other people's builds, in practice.
    pub nice: u64,
    pub all: u64,
}

impl CoreTicks {
    /// Busy and niced shares of the time between `self` and a later reading.
    pub fn shares_until(&self, later: &CoreTicks) -> (f64, f64) {
        let all = later.all.saturating_sub(self.all).max(1) as f64;
        (later.busy.saturating_sub(self.busy) as f64 / all, later.nice.saturating_sub(self.nice) as f64 / all)
    }
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
        let (run, _wait) = super::run_and_wait_ns(pid).unwrap();
        assert!(run >= b);
        assert!(super::run_and_wait_ns(u32::MAX).is_none());
        let t = super::core_ticks(0).unwrap();
        assert!(t.all > 0 && t.busy <= t.all && t.nice <= t.busy);
        assert!(super::core_ticks(1 << 20).is_none());
    }
}
