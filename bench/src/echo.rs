//! The generated code of `proto/bench/v1/echo.proto` (see build.rs).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("bench.v1");
