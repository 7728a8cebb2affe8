//! The integration tests: whole flows through the real binary and real files, one module per area.

mod asha;
mod bench;
mod browser;
mod cli;
mod code;
mod common;
mod daemon;
mod data;
mod emoji;
mod gpu_accept;
mod light;
mod reliability;
mod scale;
mod slurm;
mod slurm_daemon;
mod spec;
mod speed;
mod submit;
mod submit_files;
mod train;
mod users;
mod views;
mod web;
mod web_browser;
