//! ferry: migrate KMS-encrypted AWS data between regions and accounts.
pub mod aws;
pub mod cli;
pub mod commands;
pub mod exec;
pub mod graph;
pub mod ids;
pub mod journal;
pub mod lookup;
pub mod plan;
pub mod prices;
pub mod quotas;
pub mod report;
pub mod resolve;
pub mod steps;
