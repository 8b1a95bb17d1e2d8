//! Fleet mode (feature `redis`) against real Redis servers on loopback ports: Debian's
//! `redis-server`, installed by `.ci/run` when missing, started and stopped by the tests.
