//! Container samples read straight from the kernel's files, as cAdvisor does: the
//! container's cgroup (cgroup v1 or v2) for CPU, memory and block I/O, its init process's
//! `/proc/<pid>/net/dev` for the network, `/proc/stat` for the host's CPU time. Asking the
//! engine's stats API instead costs the engine a collection per container per sample
//! (dockerd spent about 12% of a core on it with 100 containers sampled every 10 s).
//! Invariant: the figures mean what the engine's stats API reports (the same files, the
//! same formulas as `docker stats`), and a container whose files cannot be found or read
//! (a remote engine, another PID namespace) is never guessed at: the caller asks the
//! engine instead.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::runtime::ContainerSample;

/// Where the kernel's files are; the real roots in the daemon, a temporary tree in tests.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// The procfs mount (`/proc`).
    pub proc: PathBuf,
    /// The cgroup mount (`/sys/fs/cgroup`).
    pub cgroup: PathBuf,
}

impl Default for KernelFiles {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            cgroup: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The cgroup directories one container's counters are read from.
#[derive(Debug, Clone, PartialEq)]
pub enum CgroupDirs {
    /// cgroup v1: one hierarchy per controller (block I/O may be absent).
    V1 {
        cpuacct: PathBuf,
        memory: PathBuf,
        blkio: Option<PathBuf>,
    },
    /// cgroup v2: one unified directory.
    V2(PathBuf),
}

/// A container found in the kernel's files: its init process and its cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub pid: u32,
    pub dirs: CgroupDirs,
}

impl KernelFiles {
    /// The cgroup of container `id` whose init process is `pid`, when this process can see
    /// both: the process's cgroup names the container's id and the directories exist.
    pub fn locate(&self, id: &str, pid: u32) -> Option<Located> {
        if pid == 0 || id.len() < 12 {
            return None;
        }
        let memberships =
            fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup")).ok()?;
        let unified = self.cgroup.join("cgroup.controllers").is_file();
        let dirs = if unified {
            let path = memberships
                .lines()
                .find_map(|line| line.strip_prefix("0::"))?;
            CgroupDirs::V2(self.dir(path, id)?)
        } else {
            // `N:controller[,controller...]:path`; the v1 mounts are named after each
            // controller (`/sys/fs/cgroup/memory`, or a symlink to a joint mount).
            let of = |controller: &str| {
                memberships.lines().find_map(|line| {
                    let mut fields = line.splitn(3, ':');
                    let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == controller)
                        .then(|| self.dir(&format!("{controller}{path}"), id))
                        .flatten()
                })
            };
            CgroupDirs::V1 {
                cpuacct: of("cpuacct")?,
                memory: of("memory")?,
                blkio: of("blkio"),
            }
        };
        Some(Located { pid, dirs })
    }

    /// `path` under the cgroup mount, when it names the container and exists.
    fn dir(&self, path: &str, id: &str) -> Option<PathBuf> {
        if !path.contains(id) || path.split('/').any(|part| part == "..") {
            return None;
        }
        let dir = self.cgroup.join(path.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    }

    /// Whether `located.pid` is still the container's init process (a restart gives it a
    /// new one, and the old number may be reused by anything).
    pub fn still_runs(&self, id: &str, located: &Located) -> bool {
        fs::read_to_string(self.proc.join(located.pid.to_string()).join("cgroup"))
            .is_ok_and(|memberships| memberships.contains(id))
    }

    /// The container's counters now. `restart_count` and `cpu_limit_cores` are the
    /// caller's (they come from the engine's inspect).
    pub fn read(&self, located: &Located) -> io::Result<ContainerSample> {
        let (system_cpu_ns, online_cpus) = host_cpu(&read(&self.proc.join("stat"))?)?;
        let host_memory = host_memory(&read(&self.proc.join("meminfo"))?);
        let (net_rx_bytes, net_tx_bytes) = network(&read(
            &self.proc.join(located.pid.to_string()).join("net/dev"),
        )?);
        let mut sample = ContainerSample {
            system_cpu_ns,
            online_cpus,
            net_rx_bytes,
            net_tx_bytes,
            ..ContainerSample::default()
        };
        let (usage, limit, inactive) = match &located.dirs {
            CgroupDirs::V1 {
                cpuacct,
                memory,
                blkio,
            } => {
                sample.cpu_total_ns = number(&read(&cpuacct.join("cpuacct.usage"))?)?;
                let stat = read(&memory.join("memory.stat"))?;
                // As the docker CLI: `total_inactive_file` on v1, `inactive_file` if absent.
                let inactive = stat_value(&stat, "total_inactive_file")
                    .or_else(|| stat_value(&stat, "inactive_file"));
                if let Some(blkio) = blkio {
                    (sample.block_read_bytes, sample.block_write_bytes) = blkio_v1(blkio)?;
                }
                (
                    number(&read(&memory.join("memory.usage_in_bytes"))?)?,
                    number(&read(&memory.join("memory.limit_in_bytes"))?)?,
                    inactive,
                )
            }
            CgroupDirs::V2(dir) => {
                let cpu = read(&dir.join("cpu.stat"))?;
                sample.cpu_total_ns = stat_value(&cpu, "usage_usec")
                    .ok_or_else(|| invalid("cpu.stat has no usage_usec"))?
                    .saturating_mul(1000);
                if let Ok(io) = read(&dir.join("io.stat")) {
                    (sample.block_read_bytes, sample.block_write_bytes) = io_v2(&io);
                }
                let max = read(&dir.join("memory.max"))?;
                let limit = if max.trim() == "max" {
                    u64::MAX
                } else {
                    number(&max)?
                };
                let stat = read(&dir.join("memory.stat"))?;
                (
                    number(&read(&dir.join("memory.current"))?)?,
                    limit,
                    stat_value(&stat, "inactive_file"),
                )
            }
        };
        sample.memory_working_set_bytes = match inactive {
            Some(inactive) if inactive < usage => usage - inactive,
            _ => usage,
        };
        // The engine reports the host's memory when no limit (or a larger one) is set.
        sample.memory_limit_bytes = match host_memory {
            Some(host) if host > 0 && limit > host => host,
            _ => limit,
        };
        Ok(sample)
    }
}

fn read(path: &Path) -> io::Result<String> {
    fs::read_to_string(path)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn number(text: &str) -> io::Result<u64> {
    text.trim()
        .parse()
        .map_err(|_| invalid("a cgroup file did not hold a number"))
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The host's CPU time in nanoseconds and its CPU count from `/proc/stat`, as the engine
/// computes them: user, nice, system, idle, iowait, irq and softirq ticks of the `cpu`
/// line at 100 ticks a second (USER_HZ, fixed by the kernel's ABI), and the `cpuN` lines.
fn host_cpu(stat: &str) -> io::Result<(u64, u32)> {
    let total = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .ok_or_else(|| invalid("/proc/stat has no cpu line"))?
        .split_whitespace()
        .take(7)
        .map(|ticks| ticks.parse::<u64>().unwrap_or(0))
        .sum::<u64>();
    let cpus = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Ok((
        total.saturating_mul(10_000_000),
        u32::try_from(cpus).unwrap_or(u32::MAX).max(1),
    ))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn host_memory(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// Bytes received and sent over every interface but loopback, from `/proc/<pid>/net/dev`
/// (the container's network namespace), as the engine sums its `networks`.
fn network(dev: &str) -> (u64, u64) {
    dev.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            let counters: Vec<u64> = counters
                .split_whitespace()
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            Some((*counters.first()?, *counters.get(8)?))
        })
        .fold((0, 0), |(rx, tx), (r, t)| {
            (rx.saturating_add(r), tx.saturating_add(t))
        })
}

/// Bytes read and written on cgroup v1, from the first of the files runc reads that
/// exists (CFQ's, BFQ's, then the throttle's): `major:minor Op bytes` per line.
fn blkio_v1(dir: &Path) -> io::Result<(u64, u64)> {
    for name in [
        "blkio.io_service_bytes_recursive",
        "blkio.bfq.io_service_bytes_recursive",
        "blkio.throttle.io_service_bytes_recursive",
    ] {
        match read(&dir.join(name)) {
            Ok(text) => {
                return Ok(text.lines().fold((0u64, 0u64), |(r, w), line| {
                    let mut fields = line.split_whitespace();
                    let (Some(_device), Some(op), Some(value)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        return (r, w);
                    };
                    let value: u64 = value.parse().unwrap_or(0);
                    match op {
                        "Read" => (r.saturating_add(value), w),
                        "Write" => (r, w.saturating_add(value)),
                        _ => (r, w),
                    }
                }))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        }
    }
    Ok((0, 0))
}

/// Bytes read and written on cgroup v2, from `io.stat`: `major:minor rbytes=N wbytes=N ...`.
fn io_v2(text: &str) -> (u64, u64) {
    text.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .fold((0u64, 0u64), |(r, w), (key, value)| {
            let value: u64 = value.parse().unwrap_or(0);
            match key {
                "rbytes" => (r.saturating_add(value), w),
                "wbytes" => (r, w.saturating_add(value)),
                _ => (r, w),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ce2aa20e5231938e09886cc83800257a04a0658caea6408ae83ac77356236d23";

    const PROC_STAT: &str = "cpu  5519378 466066 1089902 2163024 37457 0 19095 27460 0 0\n\
        cpu0 2759689 233033 544951 1081512 18728 0 9547 13730 0 0\n\
        cpu1 2759689 233033 544951 1081512 18729 0 9548 13730 0 0\n\
        intr 1 2 3\nctxt 99\n";
    const MEMINFO: &str = "MemTotal:       24683772 kB\nMemFree:         1000 kB\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
        lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
        eth0:     806       9    0    0    0     0          0         0      300       3    0    0    0     0       0          0\n  \
        eth1:      10       1    0    0    0     0          0         0       20       1    0    0    0     0       0          0\n";

    /// A fake `/proc` and `/sys/fs/cgroup` holding `files` (path, content) beside the
    /// host's files and process 4242's network counters and memberships.
    fn tree(cgroup_lines: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, KernelFiles) {
        let dir = tempfile::tempdir().unwrap();
        let kernel = KernelFiles {
            proc: dir.path().join("proc"),
            cgroup: dir.path().join("cgroup"),
        };
        let mut all = vec![
            ("proc/stat", PROC_STAT),
            ("proc/meminfo", MEMINFO),
            ("proc/4242/net/dev", NET_DEV),
            ("proc/4242/cgroup", cgroup_lines),
        ];
        all.extend_from_slice(files);
        for (path, content) in all {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        (dir, kernel)
    }

    #[test]
    fn cgroup_v1_reads_cpuacct_memory_blkio_and_the_network_namespace() {
        let docker = format!("/docker/{ID}");
        let lines =
            format!("7:blkio:{docker}\n4:memory:{docker}\n2:cpu,cpuacct:{docker}\n0::{docker}\n");
        let (_dir, kernel) = tree(
            &lines,
            &[
                (&format!("cgroup/cpuacct{docker}/cpuacct.usage"), "161322894\n"),
                (&format!("cgroup/memory{docker}/memory.usage_in_bytes"), "46264320\n"),
                (
                    &format!("cgroup/memory{docker}/memory.limit_in_bytes"),
                    "9223372036854771712\n",
                ),
                (
                    &format!("cgroup/memory{docker}/memory.stat"),
                    "cache 4096\ninactive_file 4096\ntotal_inactive_file 1000000\n",
                ),
                (
                    &format!("cgroup/blkio{docker}/blkio.throttle.io_service_bytes_recursive"),
                    "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n",
                ),
            ],
        );
        let located = kernel.locate(ID, 4242).expect("located");
        assert!(matches!(
            located.dirs,
            CgroupDirs::V1 { blkio: Some(_), .. }
        ));
        assert!(kernel.still_runs(ID, &located));
        let sample = kernel.read(&located).unwrap();
        assert_eq!(
            sample,
            ContainerSample {
                cpu_total_ns: 161322894,
                system_cpu_ns: (5519378 + 466066 + 1089902 + 2163024 + 37457 + 19095) * 10_000_000,
                online_cpus: 2,
                cpu_limit_cores: None,
                memory_working_set_bytes: 46264320 - 1000000,
                memory_limit_bytes: 24683772 * 1024,
                net_rx_bytes: 816,
                net_tx_bytes: 320,
                block_read_bytes: 4097,
                block_write_bytes: 8192,
                restart_count: 0,
            }
        );
    }

    #[test]
    fn cgroup_v2_reads_the_unified_directory() {
        let scope = format!("/system.slice/docker-{ID}.scope");
        let (_dir, kernel) = tree(
            &format!("0::{scope}\n"),
            &[
                ("cgroup/cgroup.controllers", "cpu io memory pids\n"),
                (
                    &format!("cgroup{scope}/cpu.stat"),
                    "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n",
                ),
                (&format!("cgroup{scope}/memory.current"), "5000\n"),
                (&format!("cgroup{scope}/memory.max"), "9000\n"),
                (
                    &format!("cgroup{scope}/memory.stat"),
                    "anon 3000\ninactive_file 1200\n",
                ),
                (
                    &format!("cgroup{scope}/io.stat"),
                    "254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
                ),
            ],
        );
        let located = kernel.locate(ID, 4242).expect("located");
        assert!(matches!(located.dirs, CgroupDirs::V2(_)));
        let sample = kernel.read(&located).unwrap();
        assert_eq!(sample.cpu_total_ns, 5_000_000);
        assert_eq!(sample.memory_working_set_bytes, 3800);
        assert_eq!(sample.memory_limit_bytes, 9000, "a limit below the host's");
        assert_eq!(
            (sample.block_read_bytes, sample.block_write_bytes),
            (11, 22)
        );
        assert_eq!((sample.net_rx_bytes, sample.net_tx_bytes), (816, 320));
    }

    #[test]
    fn a_process_of_another_container_or_none_is_not_located() {
        let other = "0123456789abcdef0123456789abcdef";
        for lines in [
            format!("4:memory:/docker/{other}\n2:cpuacct:/docker/{other}\n"),
            format!("4:memory:/docker/{ID}\n"),
            format!("4:memory:/docker/{ID}/..\n2:cpuacct:/docker/{ID}/..\n"),
        ] {
            let (_dir, kernel) = tree(&lines, &[]);
            assert_eq!(kernel.locate(ID, 4242), None, "{lines}");
        }
        let (_dir, kernel) = tree("", &[]);
        assert_eq!(kernel.locate(ID, 4343), None, "no such process");
        assert_eq!(kernel.locate(ID, 0), None, "not running");
    }

    #[test]
    fn a_restarted_container_is_no_longer_its_old_process() {
        let docker = format!("/docker/{ID}");
        let (dir, kernel) = tree(
            &format!("4:memory:{docker}\n2:cpuacct:{docker}\n"),
            &[
                (&format!("cgroup/cpuacct{docker}/cpuacct.usage"), "1\n"),
                (
                    &format!("cgroup/memory{docker}/memory.usage_in_bytes"),
                    "1\n",
                ),
            ],
        );
        let located = kernel.locate(ID, 4242).unwrap();
        fs::write(
            dir.path().join("proc/4242/cgroup"),
            "4:memory:/user.slice\n",
        )
        .unwrap();
        assert!(!kernel.still_runs(ID, &located));
    }
}
