//! Which device the child trains on and how: the choice (a pure function of the flag, `CUDA_VISIBLE_DEVICES` and what
//! libtorch sees), and the CUDA settings tch 0.24 lacks (bf16 autocast through libtorch's own exported functions,
//! cuDNN benchmark mode). The CPU always runs fp32.

pub use tch::Device;

use crate::core::spec::Precision;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("--device {0:?}: expected `cpu`, `cuda` or `cuda:N`")]
    BadFlag(String),
    #[error("{what} asks for a GPU, but libtorch cannot use CUDA here (run `rush doctor`)")]
    NoCuda { what: String },
    #[error("--device cuda:{index}: only {count} CUDA device(s) visible")]
    NoSuchGpu { index: usize, count: usize },
}

/// What libtorch reports about CUDA on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaView {
    pub available: bool,
    pub device_count: usize,
}

impl CudaView {
    pub fn probe() -> Self {
        let available = tch::Cuda::is_available();
        let device_count = if available { tch::Cuda::device_count().max(0) as usize } else { 0 };
        Self { available, device_count }
    }
}

/// Picks the device: the `--device` flag when given; else the first GPU when `CUDA_VISIBLE_DEVICES` names one; else
/// the CPU. A GPU that was given but cannot be used is an error, never a silent fall-back to the CPU.
pub fn choose(flag: Option<&str>, cuda_visible_devices: Option<&str>, cuda: CudaView) -> Result<Device, DeviceError> {
    if let Some(flag) = flag {
        let index = match flag {
            "cpu" => return Ok(Device::Cpu),
            "cuda" => 0,
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => i,
                _ => return Err(DeviceError::BadFlag(flag.to_string())),
            },
        };
        if !cuda.available {
            return Err(DeviceError::NoCuda { what: format!("--device {flag}") });
        }
        if index >= cuda.device_count {
            return Err(DeviceError::NoSuchGpu { index, count: cuda.device_count });
        }
        return Ok(Device::Cuda(index));
    }
    let names_a_gpu = cuda_visible_devices
        .map(|v| v.split(',').map(str::trim).any(|d| !d.is_empty() && !d.starts_with('-')))
        .unwrap_or(false);
    if !names_a_gpu {
        return Ok(Device::Cpu);
    }
    if !cuda.available || cuda.device_count == 0 {
        let value = cuda_visible_devices.unwrap_or_default();
        return Err(DeviceError::NoCuda { what: format!("CUDA_VISIBLE_DEVICES={value}") });
    }
    Ok(Device::Cuda(0))
}

/// `cpu`, `cuda:0`, ...: the `started` event's device string.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

/// How the forward pass runs on the chosen device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub device: Device,
    /// bf16 autocast around the forward pass (CUDA only).
    pub autocast_bf16: bool,
    /// NHWC strides for inputs and 4-D weights (CUDA only).
    pub channels_last: bool,
}

/// Sets up `device` for training at `precision` and says how it will run. On the CPU that is always fp32 and NCHW.
pub fn prepare(device: Device, precision: Precision) -> Execution {
    if !device.is_cuda() {
        if precision == Precision::Bf16 {
            eprintln!("rush train: the CPU trains in fp32 (the spec's bf16 applies on CUDA only)");
        }
        return Execution { device, autocast_bf16: false, channels_last: false };
    }
    tch::Cuda::cudnn_set_benchmark(true);
    let autocast_bf16 = precision == Precision::Bf16 && autocast::use_bf16();
    if precision == Precision::Bf16 && !autocast_bf16 {
        eprintln!("rush train: libtorch does not export at::autocast::set_autocast_dtype; training in fp32");
    }
    Execution { device, autocast_bf16, channels_last: true }
}

impl Execution {
    /// Runs `f` (the forward pass) under bf16 autocast when asked, else plainly.
    pub fn forward<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.autocast_bf16 { tch::autocast(true, f) } else { f() }
    }
}

/// bf16 autocast for CUDA. `tch::autocast` toggles CUDA autocast with its default dtype (fp16, which would need a loss
/// scaler); libtorch exports the device-generic `at::autocast::set_autocast_dtype(DeviceType, ScalarType)` from
/// libtorch_cpu.so, so we look it up at run time (no link-time dependence on a C++ name) and set bf16 for CUDA on the
/// training thread (the setting is thread-local), then let `tch::autocast` handle nesting and the cast cache.
pub mod autocast {
    /// `at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)`; both are `enum class : int8_t`.
    const SET_AUTOCAST_DTYPE: &[u8] = b"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE\0";
    /// `at::autocast::get_autocast_dtype(c10::DeviceType)`.
    const GET_AUTOCAST_DTYPE: &[u8] = b"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE\0";
    const DEVICE_CUDA: i8 = 1;
    const SCALAR_BFLOAT16: i8 = 15;

    type SetDtype = unsafe extern "C" fn(i8, i8);
    type GetDtype = unsafe extern "C" fn(i8) -> i8;

    fn symbol(name: &[u8]) -> Option<*mut libc::c_void> {
        // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the libraries already loaded (libtorch_cpu.so is a
        // link-time dependency of this binary).
        let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
        (!ptr.is_null()).then_some(ptr)
    }

    /// Makes CUDA autocast use bf16 on this thread; false when libtorch lacks the function.
    pub fn use_bf16() -> bool {
        let (Some(set), Some(get)) = (symbol(SET_AUTOCAST_DTYPE), symbol(GET_AUTOCAST_DTYPE)) else {
            return false;
        };
        // SAFETY: the symbols are libtorch's functions with these C++ signatures; an `enum class : int8_t` argument
        // or result travels like an `i8` in the x86-64 SysV ABI. Neither function throws.
        unsafe {
            let set: SetDtype = std::mem::transmute::<*mut libc::c_void, SetDtype>(set);
            let get: GetDtype = std::mem::transmute::<*mut libc::c_void, GetDtype>(get);
            set(DEVICE_CUDA, SCALAR_BFLOAT16);
            get(DEVICE_CUDA) == SCALAR_BFLOAT16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: CudaView = CudaView { available: true, device_count: 2 };
    const NONE: CudaView = CudaView { available: false, device_count: 0 };

    #[test]
    fn the_flag_wins() {
        assert_eq!(choose(Some("cpu"), Some("0"), GPU), Ok(Device::Cpu));
        assert_eq!(choose(Some("cuda"), None, GPU), Ok(Device::Cuda(0)));
        assert_eq!(choose(Some("cuda:1"), None, GPU), Ok(Device::Cuda(1)));
        assert_eq!(choose(Some("cuda:2"), None, GPU), Err(DeviceError::NoSuchGpu { index: 2, count: 2 }));
        assert!(matches!(choose(Some("cuda"), None, NONE), Err(DeviceError::NoCuda { .. })));
        assert_eq!(choose(Some("gpu"), None, GPU), Err(DeviceError::BadFlag("gpu".into())));
    }

    #[test]
    fn cuda_visible_devices_gives_the_gpu() {
        assert_eq!(choose(None, Some("3"), GPU), Ok(Device::Cuda(0)));
        assert_eq!(choose(None, None, GPU), Ok(Device::Cpu));
        assert_eq!(choose(None, Some(""), GPU), Ok(Device::Cpu));
        assert_eq!(choose(None, Some("-1"), GPU), Ok(Device::Cpu));
        assert_eq!(choose(None, None, NONE), Ok(Device::Cpu));
        let e = choose(None, Some("0"), NONE).unwrap_err().to_string();
        assert!(e.contains("CUDA_VISIBLE_DEVICES=0") && e.contains("rush doctor"), "{e}");
    }

    #[test]
    fn the_cpu_runs_fp32() {
        let ex = prepare(Device::Cpu, Precision::Bf16);
        assert!(!ex.autocast_bf16 && !ex.channels_last);
    }

    #[test]
    fn libtorch_exports_the_autocast_dtype_functions() {
        // The symbols must resolve here, or bf16 silently degrades to fp32 on the GPU machine.
        assert!(autocast::use_bf16());
    }
}
