//! What the unit tests of several modules share.

use std::path::{Path, PathBuf};

/// A directory of its own under the system's temporary directory, removed (with
/// what it holds) when dropped, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<temp>/<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
