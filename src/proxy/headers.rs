//! What crosses the proxy: hop-by-hop, method-override, identity and forwarding headers.
