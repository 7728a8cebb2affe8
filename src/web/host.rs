//! The machine the daemon runs on, for the system page: CPU cores and load, memory, and the disk that holds the home
//! (read from `/proc` and `statvfs`). Shown beside the GPUs, and instead of them on a machine without one. A figure
//! that cannot be read is left out; reading never fails a request.

use std::path::Path;

/// What the system page shows of the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    pub cpus: usize,
    /// The load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// Bytes of memory in use (total less available) and in all.
    pub memory: Option<(u64, u64)>,
    /// Bytes used and in all on the file system of the home.
    pub disk: Option<(u64, u64)>,
}

/// Samples the host now; `home` names the disk.
pub fn sample(home: &Path) -> HostSample {
    HostSample {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load: std::fs::read_to_string("/proc/loadavg").ok().and_then(|t| loadavg(&t)),
        memory: std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| meminfo(&t)),
        disk: disk(home),
    }
}

/// The three load averages of `/proc/loadavg`.
pub fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// (used, total) bytes from `/proc/meminfo`: used is `MemTotal - MemAvailable`.
pub fn meminfo(text: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    let total = kib("MemTotal:")? * 1024;
    let available = kib("MemAvailable:")? * 1024;
    Some((total.saturating_sub(available), total))
}

/// (used, total) bytes of the file system holding `path`.
fn disk(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `stat` is written by statvfs before it is read (only on success).
    let stat = unsafe {
        if libc::statvfs(c.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    let block = stat.f_frsize as u64;
    let total = stat.f_blocks as u64 * block;
    let free = stat.f_bavail as u64 * block;
    Some((total.saturating_sub(free), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        assert_eq!(loadavg("0.52 0.48 0.40 2/1234 5678\n"), Some([0.52, 0.48, 0.40]));
        assert_eq!(loadavg("garbage"), None);
        let mem = "MemTotal:       16384 kB\nMemFree:  100 kB\nMemAvailable:    4096 kB\n";
        assert_eq!(meminfo(mem), Some((12288 * 1024, 16384 * 1024)));
        assert_eq!(meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn this_machine_is_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample(dir.path());
        assert!(s.cpus >= 1);
        let (used, total) = s.disk.expect("statvfs of a temporary folder");
        assert!(total > 0 && used <= total);
        if let Some((used, total)) = s.memory {
            assert!(total > 0 && used <= total);
        }
    }
}
