//! A temporary directory for unit tests that removes itself when dropped,
//! so `cargo test` leaves nothing behind in the system's temp dir.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory under the system temp dir, named after the test
/// and unique within the process; removed with everything in it on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `swarm-test-<pid>-<name>-<n>` under the temp dir.
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "swarm-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a test directory");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::TestDir;

    #[test]
    fn removes_itself_with_its_contents() {
        let dir = TestDir::new("self");
        let path = dir.path().to_path_buf();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/c"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
