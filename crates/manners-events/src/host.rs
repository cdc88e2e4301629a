//! Facts about the machine a run is on.

/// Memory available to new allocations (Linux: `MemAvailable` in /proc/meminfo), when known.
/// Readers of models and datasets compare what they are about to load against it, to fail
/// with a message instead of being killed by the kernel.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_mem_available_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(super::parse_meminfo(text), Some(2048 * 1024));
        assert_eq!(super::parse_meminfo("MemTotal: 5 kB\n"), None);
    }
}
