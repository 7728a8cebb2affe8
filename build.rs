//! Rebuilds the library when a migration is added (`sqlx::migrate!()` embeds `migrations/`), and lets this package's
//! tests find libtorch: the integration tests that look inside a trained model link it through `rush-trainer`, a
//! dev-dependency. The `rush` binary does not link libtorch; `trainer/build.rs` sets `rush-train`'s link flags.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // The RUNPATH trainer/build.rs gives rush-train, for the test binaries only (not `rush`).
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{libtorch}/lib");
    }
}
