#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod api_keys;
pub mod audit;
pub mod config;
pub mod csv_out;
pub mod dashboard;
pub mod db;
pub mod exports;
pub mod failure;
pub mod logging;
pub mod metrics;
pub mod operators;
pub mod queue;
pub mod requesters;
pub mod secrets;
pub mod sessions;
pub mod shutdown;
pub mod signing;
pub mod source;
pub mod statement;
pub mod storage;
pub mod storage_checks;
pub mod tables;
pub mod tls;
pub mod uploads;
pub mod workers;
