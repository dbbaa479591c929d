//! Plain data types: the records the store reads and writes and the services hand each
//! other (projects, deploys, previews, backups, accounts, audit entries, log lines, metric
//! points, volume and database records, the asset index, health check settings, one-off
//! runs, services).
//! Invariant: nothing here reads the store, the engine or the clock, or imports an adapter
//! or a service; the methods kept with a type are pure functions of its value. The service
//! modules re-export their types from here, so `crate::deploy::Deploy` still names them.

pub mod account;
pub mod asset;
pub mod audit;
pub mod backup;
pub mod build;
pub mod database;
pub mod deploy;
pub mod health;
pub mod image;
pub mod job;
pub mod logs;
pub mod metrics;
pub mod preview;
pub mod project;
pub mod run;
pub mod schedule;
pub mod service;
pub mod state_backup;
pub mod volume;
