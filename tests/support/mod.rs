//! Shared helpers for the end-to-end tests: start a coordinator, connect clients.
