#![allow(dead_code)]
pub mod certs;
pub mod client;
pub mod pg_cluster;
pub mod pgcast;
pub mod raw;
