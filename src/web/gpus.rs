//! GPU utilisation and memory for the system page and `/metrics`, read through NVML where a GPU and its driver are
//! present. Without them (a CPU machine, a container without the driver) the probe says why and the pages show it:
//! it never fails a request.

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

/// Samples every GPU (NVML is loaded once per process; loading it fails cleanly without a driver).
pub fn sample() -> GpuReport {
    let nvml = match NVML.get_or_init(|| Nvml::init().map_err(|e| e.to_string())) {
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
}
