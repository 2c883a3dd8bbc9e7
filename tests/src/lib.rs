//! Test support for Hawser: a test double of kube-apiserver (never part of the
//! product), and a harness that runs the real `hawser` binary around it.

pub mod apiserver;
pub mod harness;
