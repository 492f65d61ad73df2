#![doc = include_str!("../README.md")]

pub mod api_keys;
pub mod config;
pub mod csv_out;
pub mod dashboard;
pub mod db;
pub mod exports;
pub mod queue;
pub mod sessions;
pub mod shutdown;
pub mod signing;
pub mod source;
pub mod statement;
pub mod storage;
pub mod tables;
pub mod workers;
