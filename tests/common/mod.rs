#![allow(dead_code)]
pub mod pg_cluster;
pub mod pgcast;
