//! Host facts answered by the agent's internal commands (DESIGN §6.2): the `data` of
//! `get_os_info`, `get_cpu_info`, `get_mem_info`, `get_disk_info` and `get_nic_info`.
//! Sizes are bytes, times seconds; fields the platform cannot tell are `null` or empty.

use serde::{Deserialize, Serialize};

/// `get_os_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsInfo {
    pub hostname: String,
    /// `linux`, `windows`, `macos`, … (Rust's `std::env::consts::OS`).
    pub os: String,
    /// Distribution or product name, e.g. `Debian GNU/Linux`, `Windows`.
    pub name: Option<String>,
    /// OS version, e.g. `12` or `11 (26100)`.
    pub version: Option<String>,
    pub long_version: Option<String>,
    pub kernel: Option<String>,
    /// CPU architecture, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// Seconds since boot.
    pub uptime: u64,
    /// Boot time, seconds since the epoch.
    pub boot_time: u64,
}

/// `get_cpu_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Logical cores.
    pub cores: usize,
    pub physical_cores: Option<usize>,
    pub model: String,
    pub vendor: String,
    pub frequency_mhz: u64,
    /// Whole-machine usage in percent (0–100), measured over a short interval.
    pub usage: f64,
    /// Usage per logical core, in percent.
    pub per_core: Vec<f64>,
}

/// `get_mem_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub free: u64,
    pub used: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub swap_used: u64,
}

/// `get_disk_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Block devices (Linux: `/sys/block`, without loop and ram devices; empty elsewhere).
    pub disks: Vec<Disk>,
    /// Mounted file systems.
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Device name, e.g. `sda`, `nvme0n1`.
    pub name: String,
    pub size: u64,
    pub removable: bool,
    /// Spinning disk (`false` for SSDs and virtual disks); `null` when unknown.
    pub rotational: Option<bool>,
    /// Its partitions' device names, e.g. `sda1`.
    pub partitions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    /// Device, e.g. `/dev/sda1` or `C:`.
    pub device: String,
    pub mount_point: String,
    pub fs: String,
    pub total: u64,
    pub available: u64,
    /// `HDD`, `SSD` or `unknown`.
    pub kind: String,
    pub removable: bool,
    pub read_only: bool,
}

/// `get_nic_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicInfo {
    pub nics: Vec<Nic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub mtu: u64,
    pub addresses: Vec<NicAddress>,
    /// Bytes received and sent since boot.
    pub received: u64,
    pub transmitted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicAddress {
    /// IPv4 or IPv6 address.
    pub addr: String,
    /// Prefix length of its network.
    pub prefix: u8,
}
