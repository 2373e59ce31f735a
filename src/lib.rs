//! tether
#![warn(unreachable_pub, missing_docs)]

pub mod codec;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
mod mux;
mod wire;

pub use config::{Config, ConfigError};
