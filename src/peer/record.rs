//! The peer's closing record (`--record FILE`): one JSON object written
//! when the peer leaves with the verified file, so scripts and tests read
//! how a run ended from data rather than from log wording, which may
//! change. Written only on success; a failure is the exit status and the
//! one `swarm: ` line.
//!
//! ```text
//! {"event":"done","file":"copy.bin","sha256":"…","left":"released",
//!  "from_owner":0,"from_ring":1048576,"reused":0,
//!  "sources":[{"name":"peer 9002","bytes":1048576}]}
//! ```
//!
//! `left` is `released` (the upload neighbour holds every chunk),
//! `swarm_complete` (the owner reports every peer holds the file) or
//! `lingered` (no upload neighbour asked for anything for `--linger`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::to_hex;
use crate::status::quote;

use super::{LeaveWhy, Report};

impl Report {
    /// The closing record, as one line of JSON.
    pub fn record(&self) -> String {
        let left = match self.left {
            Some(LeaveWhy::Released) => "released",
            Some(LeaveWhy::SwarmComplete) => "swarm_complete",
            Some(LeaveWhy::Lingered) => "lingered",
            None => "unknown",
        };
        let sources: Vec<String> = self
            .by_source
            .iter()
            .map(|(name, bytes)| format!("{{\"name\":{},\"bytes\":{bytes}}}", quote(name)))
            .collect();
        format!(
            "{{\"event\":\"done\",\"file\":{},\"sha256\":\"{}\",\"left\":\"{left}\",\
             \"from_owner\":{},\"from_ring\":{},\"reused\":{},\"sources\":[{}]}}\n",
            quote(&self.path.to_string_lossy()),
            to_hex(&self.digest),
            self.from_owner,
            self.from_ring,
            self.reused,
            sources.join(",")
        )
    }

    /// Writes [`Report::record`] to `path`.
    pub fn write_record(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.record())
            .map_err(|e| Error::io_write("write the closing record", path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_record_is_one_line_of_json_with_every_field() {
        let report = Report {
            path: PathBuf::from("dir/a \"b\".bin"),
            digest: [0xab; 32],
            from_owner: 5,
            from_ring: 7,
            by_source: vec![("the owner".into(), 5), ("peer 9002".into(), 7)],
            reused: 3,
            elapsed: Duration::from_secs(1),
            left: Some(LeaveWhy::Released),
        };
        assert_eq!(
            report.record(),
            format!(
                "{{\"event\":\"done\",\"file\":\"dir/a \\\"b\\\".bin\",\"sha256\":\"{}\",\
                 \"left\":\"released\",\"from_owner\":5,\"from_ring\":7,\"reused\":3,\
                 \"sources\":[{{\"name\":\"the owner\",\"bytes\":5}},\
                 {{\"name\":\"peer 9002\",\"bytes\":7}}]}}\n",
                "ab".repeat(32)
            )
        );
    }
}
