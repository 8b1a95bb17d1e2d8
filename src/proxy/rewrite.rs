//! Upstream base URL to public base URL, in headers and Bundle bodies.
