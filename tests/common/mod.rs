//! Helpers shared by integration test binaries (`mod common;`).
#![allow(dead_code)]

pub mod emulator;
