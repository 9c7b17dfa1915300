//! The `breakerd.v1` gRPC API, generated from `proto/breakerd/v1/*.proto` at
//! build time by protox (no system `protoc`).
//!
//! Other languages generate their stubs from the same `.proto` files; this
//! crate is what the Rust server and client share.

#![forbid(unsafe_code)]

/// Messages and services of package `breakerd.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("breakerd.v1");
}

#[cfg(feature = "policy")]
pub mod policy;

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/breakerd_descriptor.bin"));
