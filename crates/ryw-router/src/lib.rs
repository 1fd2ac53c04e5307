//! ryw-router (skeleton)
