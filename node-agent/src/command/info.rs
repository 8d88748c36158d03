//! Host facts for the internal commands `get_os_info`, `get_cpu_info`, `get_mem_info`,
//! `get_disk_info` and `get_nic_info` (DESIGN §6.2), as the documents of `schemas/*_info.schema.json`
//! ([`schemas::info`]). Read with `sysinfo` (Linux and Windows alike); the disks' block devices
//! come from `/sys/block` on Linux.
//!
//! `sysinfo` calls read `/proc` or the Windows APIs and may block: each runs on the blocking
//! pool. CPU usage needs two readings apart; the wait between them is a `tokio::time` sleep.

use std::path::Path;

use schemas::info::{Disk, NicAddress, Partition};
use schemas::{CpuInfo, DiskInfo, MemInfo, NicInfo, OsInfo};
use serde_json::Value;
use sysinfo::{Disks, Networks, System};

/// Which host fact a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    Os,
    Cpu,
    Mem,
    Disk,
    Nic,
}

/// Reads a fact: `Ok` the JSON document, `Err` the reason it could not be read.
pub(crate) async fn read(fact: Fact) -> Result<Value, String> {
    let doc = match fact {
        Fact::Os => json(blocking(os).await?),
        Fact::Cpu => json(cpu().await?),
        Fact::Mem => json(blocking(mem).await?),
        Fact::Disk => json(blocking(disk).await?),
        Fact::Nic => json(blocking(nic).await?),
    };
    doc.map_err(|e| format!("cannot encode host facts: {e}"))
}

fn json<T: serde::Serialize>(doc: T) -> serde_json::Result<Value> {
    serde_json::to_value(doc)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("reading host facts failed: {e}"))
}

pub(crate) fn os() -> OsInfo {
    OsInfo {
        hostname: System::host_name().unwrap_or_default(),
        os: std::env::consts::OS.to_owned(),
        name: System::name(),
        version: System::os_version(),
        long_version: System::long_os_version(),
        kernel: System::kernel_version(),
        arch: std::env::consts::ARCH.to_owned(),
        uptime: System::uptime(),
        boot_time: System::boot_time(),
    }
}

/// CPU facts with usage measured over [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`].
pub(crate) async fn cpu() -> Result<CpuInfo, String> {
    let system = blocking(|| {
        let mut system = System::new();
        system.refresh_cpu_all();
        system
    })
    .await?;
    tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
    blocking(move || {
        let mut system = system;
        system.refresh_cpu_usage();
        cpu_info(&system)
    })
    .await
}

fn cpu_info(system: &System) -> CpuInfo {
    let cpus = system.cpus();
    let first = cpus.first();
    let percent = |u: f32| f64::from(u).clamp(0.0, 100.0);
    CpuInfo {
        cores: cpus.len().max(1),
        physical_cores: System::physical_core_count().filter(|n| *n > 0),
        model: first
            .map(|c| c.brand().trim().to_owned())
            .unwrap_or_default(),
        vendor: first.map(|c| c.vendor_id().to_owned()).unwrap_or_default(),
        frequency_mhz: first.map(|c| c.frequency()).unwrap_or(0),
        usage: percent(system.global_cpu_usage()),
        per_core: cpus.iter().map(|c| percent(c.cpu_usage())).collect(),
    }
}

pub(crate) fn mem() -> MemInfo {
    let mut system = System::new();
    system.refresh_memory();
    MemInfo {
        total: system.total_memory(),
        available: system.available_memory(),
        free: system.free_memory(),
        used: system.used_memory(),
        swap_total: system.total_swap(),
        swap_free: system.free_swap(),
        swap_used: system.used_swap(),
    }
}

pub(crate) fn disk() -> DiskInfo {
    let disks = Disks::new_with_refreshed_list();
    let partitions = disks
        .list()
        .iter()
        .map(|d| Partition {
            device: d.name().to_string_lossy().into_owned(),
            mount_point: d.mount_point().display().to_string(),
            fs: d.file_system().to_string_lossy().into_owned(),
            total: d.total_space(),
            available: d.available_space(),
            kind: match d.kind() {
                sysinfo::DiskKind::HDD => "HDD",
                sysinfo::DiskKind::SSD => "SSD",
                sysinfo::DiskKind::Unknown(_) => "unknown",
            }
            .to_owned(),
            removable: d.is_removable(),
            read_only: d.is_read_only(),
        })
        .collect();
    DiskInfo {
        disks: block_devices(Path::new("/sys/block")),
        partitions,
    }
}

/// Block devices under a `/sys/block`-like dir, without loop, ram and zram devices; empty when
/// the dir does not exist (not Linux).
pub(crate) fn block_devices(sys_block: &Path) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let dir = entry.path();
            let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
            let number = |file: &str| read(file).and_then(|s| s.trim().parse::<u64>().ok());
            let mut partitions: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|p| p.path().join("partition").exists())
                .map(|p| p.file_name().to_string_lossy().into_owned())
                .collect();
            partitions.sort();
            Some(Disk {
                // `size` is in 512-byte sectors whatever the device's sector size.
                size: number("size").unwrap_or(0) * 512,
                removable: number("removable") == Some(1),
                rotational: number("queue/rotational").map(|r| r == 1),
                partitions,
                name,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

pub(crate) fn nic() -> NicInfo {
    let networks = Networks::new_with_refreshed_list();
    let mut nics: Vec<schemas::info::Nic> = networks
        .list()
        .iter()
        .map(|(name, data)| schemas::info::Nic {
            name: name.clone(),
            mac: data.mac_address().to_string(),
            mtu: data.mtu(),
            addresses: data
                .ip_networks()
                .iter()
                .map(|n| NicAddress {
                    addr: n.addr.to_string(),
                    prefix: n.prefix,
                })
                .collect(),
            received: data.total_received(),
            transmitted: data.total_transmitted(),
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    NicInfo { nics }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers on this machine validate against the schemas of `schemas/`.
    #[tokio::test]
    async fn real_answers_validate_against_their_schemas() {
        for (fact, schema) in [
            (Fact::Os, "os_info"),
            (Fact::Cpu, "cpu_info"),
            (Fact::Mem, "mem_info"),
            (Fact::Disk, "disk_info"),
            (Fact::Nic, "nic_info"),
        ] {
            let path = format!(
                "{}/../schemas/{schema}.schema.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let validator =
                jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
            let doc = read(fact).await.unwrap();
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{schema}: {errors:?}\n{doc:#}");
        }
    }

    #[test]
    fn facts_of_this_machine_are_plausible() {
        let os = os();
        assert_eq!(os.os, std::env::consts::OS);
        assert!(!os.hostname.is_empty());
        let mem = mem();
        assert!(mem.total > 0 && mem.available <= mem.total, "{mem:?}");
        assert!(disk().partitions.iter().any(|p| p.total > 0));
        assert!(nic().nics.iter().any(|n| !n.addresses.is_empty()));
    }

    #[test]
    fn block_devices_read_a_sys_block_tree() {
        let dir = std::env::temp_dir().join(format!("jsagent-sysblock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in [
            ("sda/size", "2048\n"),
            ("sda/removable", "0\n"),
            ("sda/queue/rotational", "1\n"),
            ("sda/sda1/partition", "1\n"),
            ("sda/sda2/partition", "2\n"),
            ("sda/power/control", "auto\n"),
            ("loop0/size", "8\n"),
        ] {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let disks = block_devices(&dir);
        assert_eq!(
            disks,
            [Disk {
                name: "sda".into(),
                size: 2048 * 512,
                removable: false,
                rotational: Some(true),
                partitions: vec!["sda1".into(), "sda2".into()],
            }]
        );
        assert!(block_devices(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
