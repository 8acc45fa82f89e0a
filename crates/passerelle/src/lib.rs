//! Passerelle's roles and admin tasks as a library: the worker, the scheduler and the service
//! layer behind the CLI. The `passerelle` binary is a thin `main` over [`commands::run`]; tests
//! build a worker's parts themselves and run one job in-process.

pub mod api;
pub mod app;
pub mod cli;
pub mod commands;
pub mod export;
pub mod outbox;
pub mod output;
pub mod scheduler;
pub mod service;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
