//! End-to-end suite: drives the real `passerelle` binary and the store against the machine's
//! real Postgres (and, for the pipeline, RabbitMQ). Every test gets its own database, so the
//! suite runs in parallel.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod api;
mod config_cli;
mod conflicts;
mod demo;
mod dry_run;
mod dynamics;
mod erp;
mod limiter;
mod migrate;
mod model;
mod netsuite;
mod odoo;
mod outage;
mod pipeline;
mod proxy;
mod quickbooks;
mod sage;
mod sap_b1;
mod vault;
mod worker;
mod xero;
mod xero_spec;
