//! Fixtures for unit tests: a temporary directory that removes itself
//! when dropped, so `cargo test` leaves nothing behind in the system's
//! temp dir, and a sample file split by an owner.

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

/// `len` test bytes, in a pattern that repeats only every 251 bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// `len` [`pattern`] bytes written to `input.bin` in a fresh directory and
/// split by an owner into `owner/` in fixed 1024-byte chunks: the
/// directory, the bytes and the owner's store, holding every chunk.
pub fn split_sample(name: &str, len: usize) -> (TestDir, Vec<u8>, crate::store::Store) {
    let dir = TestDir::new(name);
    let data = pattern(len);
    let file = dir.join("input.bin");
    std::fs::write(&file, &data).unwrap();
    let (store, kept) = crate::store::split(
        &file,
        &dir.join("owner"),
        1024,
        crate::manifest::Chunking::Fixed,
    )
    .unwrap();
    assert_eq!(kept, 0);
    (dir, data, store)
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
