//! `rush doctor`: what libtorch and CUDA look like from inside this binary (version, where libtorch was loaded from,
//! CUDA and cuDNN availability, the devices with their memory, and what a spec's `precision: bf16` means on the GPU
//! and on this CPU). Works, and says so, on a machine without a GPU or driver.

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
    pub cpu_threads: i32,
    /// libtorch exports the functions bf16 autocast needs on CUDA.
    pub cuda_bf16_autocast: bool,
    /// What `precision: bf16` does on this CPU: `bf16 autocast (amx_bf16)`, or `fp32: <why>`.
    pub cpu_bf16: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuInfo {
    pub index: usize,
    pub name: String,
    /// Total memory in bytes, when libtorch reports it.
    pub memory_bytes: Option<u64>,
}

pub fn report() -> Report {
    let libtorch_path = loaded_library("libtorch_cpu.so");
    let libtorch_version = libtorch_path.as_deref().and_then(|p| p.parent()).and_then(read_version);
    let cuda_available = tch::Cuda::is_available();
    let count = if cuda_available { tch::Cuda::device_count().max(0) as usize } else { 0 };
    let devices = (0..count)
        .map(|index| {
            let (name, memory_bytes) = gpu_properties(index).unwrap_or_else(|| ("(name unavailable)".into(), None));
            GpuInfo { index, name, memory_bytes }
        })
        .collect();
    let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
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
        cpu_threads: tch::get_num_threads(),
        cuda_bf16_autocast: super::device::autocast::use_bf16(),
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
            let memory = d.memory_bytes.map(|b| format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64));
            s += &format!("  cuda:{}  {}{}\n", d.index, d.name, memory.unwrap_or_default());
        }
        let cudnn = match self.cudnn_version {
            Some(v) => format!("yes ({v})"),
            None => yes_no(self.cudnn_available).to_string(),
        };
        s += &format!("cudnn           {cudnn}\n");
        s += &format!("cpu threads     {}\n", self.cpu_threads);
        let gpu_bf16 =
            if self.cuda_bf16_autocast { "bf16 autocast" } else { "fp32 (libtorch lacks the autocast dtype setter)" };
        s += &format!("bf16 on cuda    {gpu_bf16}\n");
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

/// A GPU's name and total memory through libtorch's `at::cuda::getDeviceProperties(c10::DeviceIndex)`, whose
/// `cudaDeviceProp` starts with `char name[256]`, then `cudaUUID_t uuid` (16 bytes), `char luid[8]`,
/// `unsigned int luidDeviceNodeMask` and `size_t totalGlobalMem` (at byte 288, after padding; the same from CUDA 10 to
/// 13). Looked up at run time, so a CPU-only libtorch simply has none.
fn gpu_properties(index: usize) -> Option<(String, Option<u64>)> {
    const GET_DEVICE_PROPERTIES: &[u8] = b"_ZN2at4cuda19getDevicePropertiesEa\0";
    let index = i8::try_from(index).ok()?;
    // SAFETY: NUL-terminated name; RTLD_DEFAULT searches the loaded libraries.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, GET_DEVICE_PROPERTIES.as_ptr().cast()) };
    if ptr.is_null() {
        return None;
    }
    type GetProps = unsafe extern "C" fn(i8) -> *const libc::c_char;
    // SAFETY: the function takes an int8 device index (checked < device_count by the caller, so it does not throw)
    // and returns a pointer to a `cudaDeviceProp` that libtorch keeps alive; its first field is a NUL-terminated name
    // within 256 bytes.
    unsafe {
        let get: GetProps = std::mem::transmute::<*mut libc::c_void, GetProps>(ptr);
        let props = get(index);
        if props.is_null() {
            return None;
        }
        let bytes = std::slice::from_raw_parts(props.cast::<u8>(), 256);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let name = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let memory = std::ptr::read_unaligned(props.cast::<u8>().add(288).cast::<u64>());
        // A value outside 1 GiB..4 TiB means the layout is not what we expect: say nothing rather than something wrong.
        let memory = ((1u64 << 30)..(4u64 << 40)).contains(&memory).then_some(memory);
        Some((name, memory))
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
        if !r.cuda_available {
            assert!(r.devices.is_empty());
        }
        // build.rs links libtorch_cuda in whenever the libtorch has it (the pip wheel does).
        assert!(r.libtorch_cuda_path.is_some(), "{}", r.to_text());
        assert!(r.cuda_bf16_autocast, "{}", r.to_text());
        let text = r.to_text();
        assert!(text.contains("bf16 on cuda    bf16 autocast"), "{text}");
        let cpu = text.lines().find(|l| l.starts_with("bf16 on cpu")).unwrap_or_default();
        assert!(cpu.contains("bf16 autocast (") || cpu.contains("fp32: "), "{text}");
    }
}
