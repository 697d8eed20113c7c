//! Needs root. The end-to-end scenarios of issue 3, each on its own cluster of
//! real containerd daemons (CRI pulls, the kubelet's path), a real upstream
//! registry and the real `shoal` binary, all on loopback. Each asserts that
//! the pull succeeded, where every byte came from (the upstream's access log
//! per node address and Shoal's metrics), and a generous time bound; each
//! prints its measured pull times (`[scenario x] ... in N s`).
//!
//! Clusters run one at a time (the harness's machine-wide lock).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod a_upstream_serves_once;
mod b_multi_arch;
mod c_killed_peer;
mod d_blackholed_peer;
mod e_hung_peer;
mod f_killed_mid_layer;
mod g_corrupt_peer;
mod h_withdrawn_image;
mod i_shoal_restart;
mod j_containerd_restart;
mod k_nowhere_to_pull_from;
mod l_corrupt_trusted_peer;
mod support;
