//! ryw-bench (skeleton)
