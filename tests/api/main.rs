//! End-to-end tests: the real server on 127.0.0.1:0, spoken to over HTTP.

mod docs_openapi;
mod docs_readme;
mod docs_support;
mod hardening;
mod helpers;
mod hostile;
mod images;
mod issue12;
mod issue13;
mod photos;
mod playground;
mod props;
mod service;
mod streamed;
mod tensor_api;
mod traffic;
