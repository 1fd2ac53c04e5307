//! ryw-cluster (skeleton)
