//! berthd as a library: config, the plugin registry, the built-in plugins and the gRPC
//! services. The `berthd` binary is a thin command line over [`daemon::run`].

pub mod builtin;
pub mod config;
pub mod daemon;
pub mod exchange;
pub mod gc;
pub mod registry;
pub mod services;
