//! Peers and workloads shared by the benchmarks.
