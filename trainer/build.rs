//! Links libtorch_cuda into `rush-train` (the one binary that links libtorch), so CUDA kernels register on a GPU
//! machine.
//!
//! rustc links with `--as-needed`, which drops libtorch_cuda.so (nothing references its symbols directly), and then
//! `tch::Cuda::is_available()` is false even with a GPU. We force it in and bake RUNPATHs for the local libtorch and
//! the GPU machine's install, so the binary finds libtorch without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    let has_cuda =
        lib_dir.as_deref().map(|d| std::path::Path::new(d).join("libtorch_cuda.so").exists()).unwrap_or(false);
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    if let Some(dir) = &lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    // The GPU machine's PyTorch install (shared/TORCH.md); harmless where it does not exist.
    println!("cargo:rustc-link-arg=-Wl,-rpath,/opt/torch/.venv/lib/python3.12/site-packages/torch/lib");
    println!("cargo:rustc-env=RUSH_LIBTORCH_BUILD_DIR={}", lib_dir.unwrap_or_default());
}
