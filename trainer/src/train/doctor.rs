//! `rush doctor`: what libtorch and CUDA look like from inside this binary (version, where libtorch was loaded from,
//! CUDA and cuDNN availability, the devices with their memory and compute capability, whether the trainer's bf16
//! autocast works on the GPU, and what a spec's `precision: bf16` means on this CPU). Works, and says so, on a machine
//! without a GPU or driver.

use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// From the libtorch install's `version.py` / `build-version`, when found.
    pub libtorch_version: Option<String>,
    /// The libtorch_cpu.so this process loaded.
    pub libtorch_path: Option<PathBuf>,
    /// The libtorch the binary was built against.
    pub libtorch_build_dir: String,
    pub tch_version: &'static str,
    /// The libtorch_cuda.so this process loaded: CUDA kernels are linked in (absent: a CPU-only build).
    pub libtorch_cuda_path: Option<PathBuf>,
    pub cuda_available: bool,
    pub cuda_visible_devices: Option<String>,
    pub devices: Vec<GpuInfo>,
    pub cudnn_available: bool,
    pub cudnn_version: Option<i64>,
    /// Whether a bf16 spec trains under bf16 autocast here: CUDA is available, libtorch exports the autocast dtype
    /// functions the trainer uses (`train::device::autocast`), and the first GPU computes in bf16 (sm 8.0 or later).
    pub bf16_autocast: bool,
    pub cpu_threads: i32,
    /// What `precision: bf16` does on this CPU: `bf16 autocast (amx_bf16)`, or `fp32: <why>` (`device::CpuBf16`).
    pub cpu_bf16: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuInfo {
    pub index: usize,
    pub name: String,
    /// Global memory in bytes, as CUDA reports it.
    pub memory_bytes: Option<u64>,
    /// `major.minor`, e.g. `9.0` for an H100.
    pub compute_capability: Option<String>,
}

pub fn report() -> Report {
    let libtorch_path = loaded_library("libtorch_cpu.so");
    let libtorch_version = libtorch_path.as_deref().and_then(|p| p.parent()).and_then(read_version);
    let cuda_available = tch::Cuda::is_available();
    let count = if cuda_available { tch::Cuda::device_count().max(0) as usize } else { 0 };
    let devices: Vec<GpuInfo> = (0..count)
        .map(|index| match gpu_properties(index) {
            Some(p) => GpuInfo {
                index,
                name: p.name,
                memory_bytes: Some(p.memory_bytes),
                compute_capability: Some(format!("{}.{}", p.major, p.minor)),
            },
            None => GpuInfo { index, name: "(name unavailable)".into(), memory_bytes: None, compute_capability: None },
        })
        .collect();
    let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
    let bf16_hardware = devices.first().and_then(|d| d.compute_capability.as_deref()).is_some_and(computes_bf16);
    let bf16_autocast = cuda_available && bf16_hardware && super::device::autocast::use_bf16();
    Report {
        libtorch_version,
        libtorch_path,
        libtorch_build_dir: env!("RUSH_LIBTORCH_BUILD_DIR").to_string(),
        tch_version: "0.24",
        libtorch_cuda_path: loaded_library("libtorch_cuda.so"),
        cuda_available,
        cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        devices,
        cudnn_available,
        cudnn_version: cudnn_available.then(tch::utils::version_cudnn),
        bf16_autocast,
        cpu_threads: tch::get_num_threads(),
        cpu_bf16: match super::device::CpuBf16::here() {
            super::device::CpuBf16::Autocast(feature) => format!("bf16 autocast ({feature})"),
            super::device::CpuBf16::Fp32(why) => format!("fp32: {why}"),
        },
    }
}

impl Report {
    pub fn to_text(&self) -> String {
        let or_unknown = |o: Option<String>| o.unwrap_or_else(|| "unknown".into());
        let mut s = String::new();
        s += &format!("libtorch        {}\n", or_unknown(self.libtorch_version.clone()));
        s += &format!("loaded from     {}\n", or_unknown(self.libtorch_path.as_ref().map(|p| p.display().to_string())));
        s += &format!("built against   {}\n", self.libtorch_build_dir);
        s += &format!("tch             {}\n", self.tch_version);
        let cuda_lib = self.libtorch_cuda_path.as_ref().map(|p| p.display().to_string());
        s += &format!("libtorch_cuda   {}\n", cuda_lib.unwrap_or_else(|| "not loaded (a CPU-only build)".into()));
        s += &format!("cuda available  {}\n", yes_no(self.cuda_available));
        if let Some(v) = &self.cuda_visible_devices {
            s += &format!("CUDA_VISIBLE_DEVICES={v}\n");
        }
        s += &format!("devices         {}\n", self.devices.len());
        for d in &self.devices {
            s += &format!("  cuda:{}  {}", d.index, d.name);
            if let Some(bytes) = d.memory_bytes {
                s += &format!(", {:.1} GiB", bytes as f64 / (1u64 << 30) as f64);
            }
            if let Some(cc) = &d.compute_capability {
                s += &format!(", sm {cc}");
            }
            s += "\n";
        }
        let cudnn = match self.cudnn_version {
            Some(v) => format!("yes ({v})"),
            None => yes_no(self.cudnn_available).to_string(),
        };
        s += &format!("cudnn           {cudnn}\n");
        s += &format!("bf16 autocast   {}\n", yes_no(self.bf16_autocast));
        s += &format!("cpu threads     {}\n", self.cpu_threads);
        s += &format!("bf16 on cpu     {}\n", self.cpu_bf16);
        if !self.cuda_available {
            s += "training runs on the CPU here\n";
        }
        s
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The path of a shared library this process has mapped, from `/proc/self/maps`.
pub fn loaded_library(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|n| n == file_name))
        .map(PathBuf::from)
}

/// The version of the libtorch whose `lib/` folder is `lib_dir`: a pip install has `torch/version.py`, a libtorch zip
/// has `build-version`.
fn read_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let v = text.lines().find_map(|l| l.strip_prefix("__version__ = ")).map(|v| v.trim().trim_matches('\''));
        if let Some(v) = v {
            return Some(v.trim_matches('"').to_string());
        }
    }
    ["build-version", "version.txt"]
        .iter()
        .find_map(|f| std::fs::read_to_string(root.join(f)).ok())
        .map(|s| s.trim().to_string())
}

/// Whether a GPU of this compute capability (`major.minor`) computes in bf16 (Ampere, sm 8.0, and later).
fn computes_bf16(capability: &str) -> bool {
    capability.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_some_and(|major| major >= 8)
}

/// What `rush doctor` reads of one GPU's `cudaDeviceProp`.
struct DeviceProps {
    name: String,
    memory_bytes: u64,
    major: i32,
    minor: i32,
}

/// Byte offsets in CUDA's `cudaDeviceProp` (driver_types.h, the same from CUDA 10 to 13): `char name[256]`, a 16-byte
/// uuid, `char luid[8]`, `unsigned luidDeviceNodeMask`, then (8-aligned) `size_t totalGlobalMem` at 288, ... and
/// `int major, minor` at 360 and 364.
const PROP_TOTAL_GLOBAL_MEM: usize = 288;
const PROP_MAJOR: usize = 360;
const PROP_MINOR: usize = 364;

/// A GPU's properties through libtorch's `at::cuda::getDeviceProperties(c10::DeviceIndex)`, which returns its
/// `cudaDeviceProp`. Looked up at run time, so a CPU-only libtorch simply has none.
fn gpu_properties(index: usize) -> Option<DeviceProps> {
    const GET_DEVICE_PROPERTIES: &[u8] = b"_ZN2at4cuda19getDevicePropertiesEa\0";
    let index = i8::try_from(index).ok()?;
    // SAFETY: NUL-terminated name; RTLD_DEFAULT searches the loaded libraries.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, GET_DEVICE_PROPERTIES.as_ptr().cast()) };
    if ptr.is_null() {
        return None;
    }
    type GetProps = unsafe extern "C" fn(i8) -> *const libc::c_char;
    // SAFETY: the function takes an int8 device index (checked < device_count by the caller, so it does not throw)
    // and returns a pointer to a `cudaDeviceProp` that libtorch keeps alive (about 1 KiB): its first field is a
    // NUL-terminated name within 256 bytes, and the fields read below lie within its first 368 bytes.
    unsafe {
        let get: GetProps = std::mem::transmute::<*mut libc::c_void, GetProps>(ptr);
        let props = get(index);
        if props.is_null() {
            return None;
        }
        let bytes = std::slice::from_raw_parts(props.cast::<u8>(), PROP_MINOR + 4);
        let end = bytes[..256].iter().position(|&b| b == 0).unwrap_or(256);
        let field = |at: usize, len: usize| &bytes[at..at + len];
        let int = |at: usize| i32::from_ne_bytes(field(at, 4).try_into().unwrap_or_default());
        Some(DeviceProps {
            name: String::from_utf8_lossy(&bytes[..end]).into_owned(),
            memory_bytes: u64::from_ne_bytes(field(PROP_TOTAL_GLOBAL_MEM, 8).try_into().unwrap_or_default()),
            major: int(PROP_MAJOR),
            minor: int(PROP_MINOR),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loaded_libtorch_and_its_version() {
        let r = report();
        let path = r.libtorch_path.as_ref().expect("libtorch_cpu.so is mapped");
        assert!(path.is_absolute() && path.exists(), "{path:?}");
        let v = r.libtorch_version.as_deref().expect("version");
        assert!(v.starts_with("2.11.0"), "{v}");
        assert!(r.to_text().contains("libtorch        2.11.0"), "{}", r.to_text());
        assert!(r.to_text().contains("bf16 autocast   "), "{}", r.to_text());
        if !r.cuda_available {
            assert!(r.devices.is_empty() && !r.bf16_autocast);
        }
        for d in &r.devices {
            assert!(d.memory_bytes.is_some_and(|b| b >= 1 << 30), "{d:?}");
            assert!(d.compute_capability.as_deref().is_some_and(|c| c.contains('.')), "{d:?}");
        }
        // build.rs links libtorch_cuda in whenever the libtorch has it (the pip wheel does).
        assert!(r.libtorch_cuda_path.is_some(), "{}", r.to_text());
        let text = r.to_text();
        let cpu = text.lines().find(|l| l.starts_with("bf16 on cpu")).unwrap_or_default();
        assert!(cpu.contains("bf16 autocast (") || cpu.contains("fp32: "), "{text}");
    }

    #[test]
    fn bf16_needs_ampere_or_later() {
        assert!(computes_bf16("8.0") && computes_bf16("9.0") && computes_bf16("10.0"));
        assert!(!computes_bf16("7.5") && !computes_bf16("") && !computes_bf16("x.y"));
    }
}
