//! System metrics for the agent, from the `sysinfo` crate, under the wire's names:
//! `cpu_percent`, `memory_percent`, `memory_total_mb`, `memory_used_mb`, `disk_percent`,
//! `disk_total_gb`, `disk_used_gb`, `network_rx_bytes`, `network_tx_bytes`, `load_1m`,
//! `load_5m`, `load_15m`, `uptime_seconds` (also the heartbeat's own `uptime_seconds`), and
//! `os_info` {`distribution`, `version`, `kernel`, `architecture`}.

use serde_json::{Map, Value, json};
use sysinfo::{Disks, Networks, System};

/// One beat's sample.
pub struct Sample {
    /// The numeric metrics.
    pub metrics: Map<String, Value>,
    /// `os_info`.
    pub os_info: Value,
    /// The machine's uptime, seconds.
    pub uptime_seconds: u64,
}

/// Keeps the `sysinfo` handles between beats (CPU usage is measured between two refreshes).
pub struct SystemSampler {
    system: System,
    disks: Disks,
    networks: Networks,
}

impl SystemSampler {
    /// Reads the first values (the first CPU figure covers the time until the first beat).
    pub fn new() -> anyhow::Result<Self> {
        let mut system = System::new()?;
        system.refresh_cpu_usage();
        Ok(Self {
            system,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
        })
    }

    /// Refreshes and samples.
    pub fn sample(&mut self) -> Sample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        const MB: f64 = 1024.0 * 1024.0;
        const GB: f64 = 1024.0 * MB;
        let total = self.system.total_memory() as f64;
        let used = self.system.used_memory() as f64;
        let (disk_total, disk_free) = self.disks.iter().fold((0u64, 0u64), |(t, f), d| {
            (
                t.saturating_add(d.total_space()),
                f.saturating_add(d.available_space()),
            )
        });
        let disk_used = disk_total.saturating_sub(disk_free) as f64;
        let (rx, tx) = self.networks.values().fold((0u64, 0u64), |(r, t), n| {
            (
                r.saturating_add(n.total_received()),
                t.saturating_add(n.total_transmitted()),
            )
        });
        let uptime_seconds = System::uptime().unwrap_or(0);
        let mut metrics = Map::new();
        let mut put = |name: &str, value: f64| {
            if value.is_finite() {
                metrics.insert(name.to_owned(), json!(round2(value)));
            }
        };
        put("cpu_percent", f64::from(self.system.global_cpu_usage()));
        put("memory_total_mb", total / MB);
        put("memory_used_mb", used / MB);
        put("memory_percent", percent(used, total));
        put("disk_total_gb", disk_total as f64 / GB);
        put("disk_used_gb", disk_used / GB);
        put("disk_percent", percent(disk_used, disk_total as f64));
        // Byte counters stay exact integers (within I-JSON's 2^53).
        metrics.insert("network_rx_bytes".into(), json!(rx.min(1 << 53)));
        metrics.insert("network_tx_bytes".into(), json!(tx.min(1 << 53)));
        if let Ok(load) = System::load_average() {
            let mut put = |name: &str, value: f64| {
                if value.is_finite() {
                    metrics.insert(name.to_owned(), json!(round2(value)));
                }
            };
            put("load_1m", load.one);
            put("load_5m", load.five);
            put("load_15m", load.fifteen);
        }
        metrics.insert("uptime_seconds".into(), json!(uptime_seconds));
        let os_info = json!({
            "distribution": System::name().unwrap_or_else(|_| System::distribution_id()),
            "version": System::os_version().unwrap_or_default(),
            "kernel": System::kernel_version().unwrap_or_default(),
            "architecture": System::cpu_arch(),
        });
        Sample {
            metrics,
            os_info,
            uptime_seconds,
        }
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part * 100.0 / whole).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_names_every_metric_and_the_os() {
        let sample = SystemSampler::new().expect("sysinfo").sample();
        for name in [
            "cpu_percent",
            "memory_percent",
            "memory_total_mb",
            "memory_used_mb",
            "disk_percent",
            "disk_total_gb",
            "disk_used_gb",
            "network_rx_bytes",
            "network_tx_bytes",
            "uptime_seconds",
        ] {
            assert!(
                sample.metrics[name].is_number(),
                "{name}: {:?}",
                sample.metrics
            );
        }
        assert!(sample.metrics["memory_total_mb"].as_f64().unwrap_or(0.0) > 0.0);
        for member in ["distribution", "version", "kernel", "architecture"] {
            assert!(sample.os_info[member].is_string(), "{member}");
        }
    }
}
