//! The event log of a run folder, `metrics.jsonl`: one [`TrainEvent`] per line as JSON (the
//! `serde` feature). The trainer appends to it; reports, plots and experiments read it back.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::TrainEvent;

/// The file name of a run's event log inside its run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One event as its log line (no newline).
pub fn event_line(ev: &TrainEvent) -> String {
    serde_json::to_string(ev).expect("events serialise")
}

/// Every event of an event log, in order. Lines that do not parse (a line cut short by a
/// killed process, a newer event kind) are skipped.
pub fn read_events(path: &Path) -> std::io::Result<Vec<TrainEvent>> {
    let f = File::open(path)?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_and_a_cut_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("manners-events-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let p = dir.join(METRICS_FILE);
        let evs = [
            TrainEvent::Warning {
                step: 1,
                message: "a".into(),
            },
            TrainEvent::Paused {
                step: 2,
                paused: true,
            },
        ];
        let mut text: String = evs.iter().map(|e| event_line(e) + "\n").collect();
        text.push_str("{\"event\":\"step\",\"st");
        std::fs::write(&p, text).unwrap_or_default();
        let back = read_events(&p).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(back, evs);
    }
}
