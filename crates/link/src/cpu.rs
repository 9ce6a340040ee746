//! The CPU a process used between two looks, from `/proc/<pid>/stat`
//! (Linux; elsewhere every sample is None): FreeSWITCH's for the agent's
//! load reports, switchy's own for the controller's BOTTLENECK diagnosis.

use std::time::Instant;

/// Linux's USER_HZ (the unit of `/proc/<pid>/stat` times).
const CLOCK_TICKS: f64 = 100.0;

/// Samples one process's CPU use.
pub struct ProcessCpu {
    pid: Option<u32>,
    /// Looked up by `comm` (again after the process went away).
    name: Option<&'static str>,
    last: Option<(u64, Instant)>,
}

impl ProcessCpu {
    /// This process, primed: the first sample covers the time since now.
    pub fn own() -> Self {
        let pid = std::process::id();
        ProcessCpu {
            pid: Some(pid),
            name: None,
            last: process_cpu_ticks(pid).map(|t| (t, Instant::now())),
        }
    }

    /// The process named `name` (its `comm`), found when first sampled; the
    /// first sample after finding it is None.
    pub fn named(name: &'static str) -> Self {
        ProcessCpu {
            pid: None,
            name: Some(name),
            last: None,
        }
    }

    /// CPU used since the previous sample, % of one core.
    pub fn sample(&mut self) -> Option<f64> {
        if self.pid.is_none() {
            self.pid = self.name.and_then(find_process);
        }
        let pid = self.pid?;
        let Some(ticks) = process_cpu_ticks(pid) else {
            // Gone (restarted): look it up again next time.
            if self.name.is_some() {
                self.pid = None;
            }
            self.last = None;
            return None;
        };
        let now = Instant::now();
        let (t0, at) = self.last.replace((ticks, now))?;
        let secs = now.duration_since(at).as_secs_f64();
        (secs > 0.0).then(|| ticks.saturating_sub(t0) as f64 / CLOCK_TICKS / secs * 100.0)
    }
}

/// utime + stime of a process, in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The pid of the process whose `comm` is `name` (the lowest, if several).
pub fn find_process(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_sampled_and_a_missing_one_is_none() {
        let mut me = ProcessCpu::own();
        // Burn a little CPU so the second look has something to count.
        let t0 = Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 30 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        if cfg!(target_os = "linux") {
            assert!(me.sample().is_some_and(|p| p >= 0.0));
        }
        let mut none = ProcessCpu::named("no-such-process-name");
        assert_eq!(none.sample(), None);
    }
}
