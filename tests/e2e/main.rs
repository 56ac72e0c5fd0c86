//! End-to-end tests: the real `tracelake` binary, driven by real clients.

mod bad_input;
#[cfg(feature = "ballista")]
mod ballista;
mod cli;
mod datadir_compat;
mod demo;
mod durability;
mod injection;
mod jaeger;
mod loadgen;
mod metrics_storage;
mod multinode;
mod native_api;
mod node_sdk;
mod otlp;
mod otlp_metrics;
mod overload;
mod plugin;
mod prometheus;
mod python_sdk;
mod s3;
mod sampling;
mod server;
mod service_map;
mod sql;
mod tempo;
mod tempo_metrics;
mod tenancy;
mod tls;
mod ui;
mod xray;
mod xray_shapes;
