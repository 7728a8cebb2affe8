//! The benchmarks that time libtorch in this process: `rush bench train` ([`train_step`]) and `rush bench epoch`
//! ([`epoch`]). Their arguments, the table and the reference scripts are `rush::cli::bench`'s.

pub mod epoch;
pub mod train_step;
