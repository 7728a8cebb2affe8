//! GPU utilisation and memory for the system page and `/metrics`, and the daemon's count of GPUs, read through NVML
//! where a GPU and its driver are present. Without them (a CPU machine, a container without the driver) the probe says
//! why and the pages show it: it never fails a request, and the count is 0.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

/// One GPU as NVML reports it now.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    /// Percent of the last sample period a kernel ran.
    pub util_percent: u32,
    pub memory_used: u64,
    pub memory_total: u64,
    pub temperature_c: Option<u32>,
}

/// The GPUs of this machine, or why they cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuReport {
    Gpus(Vec<GpuSample>),
    Unavailable(String),
}

static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();

/// What the pages say on a machine whose NVIDIA driver (its NVML library) cannot be loaded.
pub const NO_GPU: &str = "no NVIDIA GPU: NVML, the NVIDIA driver's monitoring library, is not installed here";

/// NVML, loaded once per process (the driver's library is opened at run time; loading fails cleanly without it).
fn nvml() -> &'static Result<Nvml, String> {
    NVML.get_or_init(|| Nvml::init().map_err(|e| e.to_string()))
}

/// How many GPUs a child started here would see: NVML's devices, narrowed by `CUDA_VISIBLE_DEVICES` as the CUDA
/// runtime reads it ([`visible_count`]); 0 where NVML cannot be loaded. The daemon's slots come from this, without
/// loading libtorch or CUDA.
pub fn visible_gpus() -> u32 {
    let Ok(nvml) = nvml() else { return 0 };
    let Ok(count) = nvml.device_count() else { return 0 };
    let uuids: Vec<String> =
        (0..count).map(|i| nvml.device_by_index(i).and_then(|d| d.uuid()).unwrap_or_default()).collect();
    visible_count(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(), &uuids)
}

/// The number of devices CUDA shows given `CUDA_VISIBLE_DEVICES` (`None`: unset) and the machine's GPUs (their UUIDs,
/// `GPU-...`, in NVML's order). Unset, every GPU. Set, its comma-separated entries in order, each an index or a UUID
/// (or a unique prefix of one), up to the first that names no GPU or one already named: CUDA ignores that one and
/// everything after it, so `""` and `-1` show none. A MIG instance (`MIG-...`) counts as one device.
pub fn visible_count(cuda_visible_devices: Option<&str>, uuids: &[String]) -> u32 {
    let Some(list) = cuda_visible_devices else { return uuids.len() as u32 };
    let mut seen: Vec<String> = Vec::new();
    for entry in list.split(',').map(str::trim) {
        let device = if entry.starts_with("MIG-") {
            Some(entry.to_string())
        } else if let Ok(index) = entry.parse::<usize>() {
            (index < uuids.len()).then(|| format!("#{index}"))
        } else if entry.starts_with("GPU-") {
            let mut matching = uuids.iter().enumerate().filter(|(_, u)| u.starts_with(entry));
            match (matching.next(), matching.next()) {
                (Some((index, _)), None) => Some(format!("#{index}")),
                _ => None,
            }
        } else {
            None
        };
        match device {
            Some(d) if !seen.contains(&d) => seen.push(d),
            _ => break,
        }
    }
    seen.len() as u32
}

/// Samples every GPU.
pub fn sample() -> GpuReport {
    let nvml = match nvml() {
        Ok(n) => n,
        Err(e) => {
            // The loader's own words (a missing libnvidia-ml.so) mean nothing to most readers: the log keeps them.
            tracing::debug!("NVML: {e}");
            return GpuReport::Unavailable(NO_GPU.to_string());
        }
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return GpuReport::Unavailable(format!("NVML: {e}")),
    };
    let mut out = Vec::with_capacity(count as usize);
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else { continue };
        let util = device.utilization_rates().map(|u| u.gpu).unwrap_or(0);
        let (used, total) = device.memory_info().map(|m| (m.used, m.total)).unwrap_or((0, 0));
        out.push(GpuSample {
            index,
            name: device.name().unwrap_or_else(|_| format!("GPU {index}")),
            util_percent: util,
            memory_used: used,
            memory_total: total,
            temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
        });
    }
    GpuReport::Gpus(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_never_panics_and_reports_sane_numbers() {
        match sample() {
            GpuReport::Gpus(gpus) => {
                for g in gpus {
                    assert!(g.util_percent <= 100, "{g:?}");
                    assert!(g.memory_used <= g.memory_total, "{g:?}");
                }
            }
            GpuReport::Unavailable(why) => assert!(why.contains("NVML"), "{why}"),
        }
    }

    #[test]
    fn cuda_visible_devices_narrows_the_count_as_cuda_does() {
        let uuids: Vec<String> = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-abcd-3333"].map(String::from).to_vec();
        assert_eq!(visible_count(None, &uuids), 3, "unset: every GPU");
        assert_eq!(visible_count(None, &[]), 0, "no GPU");
        assert_eq!(visible_count(Some(""), &uuids), 0, "empty: none (a CPU slot)");
        assert_eq!(visible_count(Some("-1"), &uuids), 0);
        assert_eq!(visible_count(Some("2"), &uuids), 1);
        assert_eq!(visible_count(Some("2,0"), &uuids), 2);
        assert_eq!(visible_count(Some("0, 1"), &uuids), 2, "spaces around an entry");
        assert_eq!(visible_count(Some("0,7,1"), &uuids), 1, "an index past the last GPU ends the list");
        assert_eq!(visible_count(Some("1,1"), &uuids), 1, "a GPU named twice ends the list");
        assert_eq!(visible_count(Some("0"), &[]), 0, "an index on a machine without GPUs");
        assert_eq!(visible_count(Some("GPU-bbbb"), &uuids), 1, "a unique UUID prefix");
        assert_eq!(visible_count(Some("GPU-a"), &uuids), 0, "an ambiguous prefix names no GPU");
        assert_eq!(visible_count(Some("GPU-abcd-3333,2"), &uuids), 1, "the same GPU by UUID and by index");
        assert_eq!(visible_count(Some("MIG-1234"), &uuids), 1);
        assert_eq!(visible_count(Some("cpu"), &uuids), 0);
    }
}
