//! ryw-service (skeleton)
