//! End-to-end tests: the real server on 127.0.0.1:0, spoken to over HTTP.

mod helpers;
mod images;
mod service;
mod tensor_api;
