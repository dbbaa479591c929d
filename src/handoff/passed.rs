//! Which listening sockets a process was given, read from its environment: systemd's
//! socket activation (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, sd_listen_fds(3)) or a
//! hand-off from the process it replaces (`CANTILA_HANDOFF`). Pure parsing: descriptors
//! are numbers here; `fds` takes ownership of them.

use std::os::fd::RawFd;

/// systemd's first passed descriptor (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: RawFd = 3;

/// The variable a hand-off sets for the new process: `api=7,http=8,https=9,control=10`
/// (`metrics=N` too when that listener exists). Its own name, so systemd's `LISTEN_PID`
/// (which the old process cannot know for a child it has not started yet) plays no part.
pub const HANDOFF_VAR: &str = "CANTILA_HANDOFF";

/// The variables of socket activation; a hand-off removes them from the new process's
/// environment, since they described the old one.
pub const SYSTEMD_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// What a listening socket is for; systemd's `FileDescriptorName=` uses these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Http,
    Https,
    Metrics,
}

impl Role {
    /// The order of `ListenStream=` lines in one socket unit whose sockets carry no names
    /// of their own (systemd then names them all after the unit).
    pub const IN_ORDER: [Role; 4] = [Role::Api, Role::Http, Role::Https, Role::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Http => "http",
            Role::Https => "https",
            Role::Metrics => "metrics",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        Role::IN_ORDER.into_iter().find(|role| role.name() == name)
    }
}

/// Descriptors a process was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Passed {
    pub sockets: Vec<(Role, RawFd)>,
    /// The hand-off's control socket to the process being replaced.
    pub control: Option<RawFd>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {why}")]
pub struct PassedError {
    pub var: &'static str,
    pub why: String,
}

fn invalid(var: &'static str, why: impl Into<String>) -> PassedError {
    PassedError {
        var,
        why: why.into(),
    }
}

/// Socket activation, as sd_listen_fds_with_names(3) reads it: nothing unless `LISTEN_PID`
/// is this process. Named sockets (`api`, `http`, `https`, `metrics`) map by name; unnamed
/// ones (all named alike, after the socket unit) map in the order api, http, https,
/// metrics.
pub fn systemd(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> Result<Option<Passed>, PassedError> {
    let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let for_us = listen_pid
        .trim()
        .parse::<u32>()
        .map_err(|_| invalid("LISTEN_PID", format!("{listen_pid:?} is not a process id")))?;
    if for_us != pid {
        return Ok(None);
    }
    let count = listen_fds
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=Role::IN_ORDER.len()).contains(n))
        .ok_or_else(|| {
            invalid(
                "LISTEN_FDS",
                format!("{listen_fds:?}: Cantila takes 1 to 4 sockets (api, http, https, metrics)"),
            )
        })?;
    let fds = (0..count).map(|i| SD_LISTEN_FDS_START + i as RawFd);
    let names: Vec<&str> = match listen_fdnames {
        Some(names) => names.split(':').collect(),
        None => Vec::new(),
    };
    let named = !names.is_empty() && names.iter().all(|name| Role::parse(name).is_some());
    let sockets: Vec<(Role, RawFd)> = if named {
        if names.len() != count {
            return Err(invalid(
                "LISTEN_FDNAMES",
                format!("{} names for {count} sockets", names.len()),
            ));
        }
        names
            .iter()
            .filter_map(|name| Role::parse(name))
            .zip(fds)
            .collect()
    } else if names.iter().any(|name| Role::parse(name).is_some()) {
        return Err(invalid(
            "LISTEN_FDNAMES",
            format!(
                "{:?} mixes named and unnamed sockets: name every socket api, http, https or metrics (FileDescriptorName=), or none",
                listen_fdnames.unwrap_or_default()
            ),
        ));
    } else {
        Role::IN_ORDER.into_iter().zip(fds).collect()
    };
    refuse_repeats("LISTEN_FDNAMES", &sockets)?;
    Ok(Some(Passed {
        sockets,
        control: None,
    }))
}

/// The hand-off's variable, as `handoff_value` writes it.
pub fn handoff(value: &str) -> Result<Passed, PassedError> {
    let mut passed = Passed::default();
    let mut seen_fds = Vec::new();
    for pair in value.split(',') {
        let (name, fd) = pair
            .split_once('=')
            .ok_or_else(|| invalid(HANDOFF_VAR, format!("{pair:?} is not name=fd")))?;
        let fd = fd
            .parse::<RawFd>()
            .ok()
            .filter(|fd| *fd >= SD_LISTEN_FDS_START)
            .ok_or_else(|| {
                invalid(
                    HANDOFF_VAR,
                    format!("{fd:?} is not a descriptor above stderr"),
                )
            })?;
        if seen_fds.contains(&fd) {
            return Err(invalid(HANDOFF_VAR, format!("descriptor {fd} given twice")));
        }
        seen_fds.push(fd);
        match name {
            "control" if passed.control.is_none() => passed.control = Some(fd),
            _ => {
                let role = Role::parse(name).ok_or_else(|| {
                    invalid(
                        HANDOFF_VAR,
                        format!("unknown socket {name:?} (or given twice)"),
                    )
                })?;
                passed.sockets.push((role, fd));
            }
        }
    }
    refuse_repeats(HANDOFF_VAR, &passed.sockets)?;
    if passed.control.is_none() {
        return Err(invalid(HANDOFF_VAR, "no control socket"));
    }
    Ok(passed)
}

/// What the old process sets `CANTILA_HANDOFF` to.
pub fn handoff_value(sockets: &[(Role, RawFd)], control: RawFd) -> String {
    sockets
        .iter()
        .map(|(role, fd)| format!("{}={fd}", role.name()))
        .chain(std::iter::once(format!("control={control}")))
        .collect::<Vec<_>>()
        .join(",")
}

fn refuse_repeats(var: &'static str, sockets: &[(Role, RawFd)]) -> Result<(), PassedError> {
    for (i, (role, _)) in sockets.iter().enumerate() {
        if sockets[..i].iter().any(|(other, _)| other == role) {
            return Err(invalid(var, format!("two sockets named {}", role.name())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_systemd(
        pid: &str,
        fds: &str,
        names: Option<&str>,
        expected: Result<Option<Vec<(Role, RawFd)>>, &str>,
    ) {
        let got = systemd(Some(pid), Some(fds), names, 42)
            .map(|passed| passed.map(|p| p.sockets))
            .map_err(|err| err.to_string());
        let expected = expected.map_err(str::to_owned);
        assert_eq!(got, expected, "LISTEN_PID={pid} LISTEN_FDS={fds} {names:?}");
    }

    #[test]
    fn systemd_sockets_map_by_name_or_in_order() {
        use Role::*;
        check_systemd(
            "42",
            "3",
            None,
            Ok(Some(vec![(Api, 3), (Http, 4), (Https, 5)])),
        );
        check_systemd(
            "42",
            "3",
            Some("cantila.socket:cantila.socket:cantila.socket"),
            Ok(Some(vec![(Api, 3), (Http, 4), (Https, 5)])),
        );
        check_systemd(
            "42",
            "2",
            Some("https:http"),
            Ok(Some(vec![(Https, 3), (Http, 4)])),
        );
        check_systemd(
            "42",
            "4",
            Some("metrics:api:http:https"),
            Ok(Some(vec![(Metrics, 3), (Api, 4), (Http, 5), (Https, 6)])),
        );
        // Meant for another process (a parent that did not clear them).
        check_systemd("41", "3", None, Ok(None));
        check_systemd(
            "42",
            "0",
            None,
            Err("LISTEN_FDS: \"0\": Cantila takes 1 to 4 sockets (api, http, https, metrics)"),
        );
        check_systemd(
            "42",
            "5",
            None,
            Err("LISTEN_FDS: \"5\": Cantila takes 1 to 4 sockets (api, http, https, metrics)"),
        );
        check_systemd("x", "3", None, Err("LISTEN_PID: \"x\" is not a process id"));
        check_systemd(
            "42",
            "2",
            Some("http:http"),
            Err("LISTEN_FDNAMES: two sockets named http"),
        );
        check_systemd(
            "42",
            "2",
            Some("http:other"),
            Err("LISTEN_FDNAMES: \"http:other\" mixes named and unnamed sockets: name every socket api, http, https or metrics (FileDescriptorName=), or none"),
        );
        check_systemd(
            "42",
            "3",
            Some("api:http"),
            Err("LISTEN_FDNAMES: 2 names for 3 sockets"),
        );
        assert_eq!(systemd(None, Some("3"), None, 42), Ok(None));
    }

    #[test]
    fn the_handoff_variable_round_trips_and_refuses_what_it_never_writes() {
        use Role::*;
        let sockets = vec![(Api, 7), (Http, 8), (Https, 9), (Metrics, 11)];
        let value = handoff_value(&sockets, 10);
        assert_eq!(value, "api=7,http=8,https=9,metrics=11,control=10");
        assert_eq!(
            handoff(&value),
            Ok(Passed {
                sockets,
                control: Some(10)
            })
        );
        let check_err = |value: &str, expected: &str| {
            assert_eq!(
                handoff(value).map_err(|e| e.to_string()),
                Err(expected.to_owned()),
                "{value}"
            )
        };
        check_err("api=7", "CANTILA_HANDOFF: no control socket");
        check_err(
            "api=2,control=9",
            "CANTILA_HANDOFF: \"2\" is not a descriptor above stderr",
        );
        check_err(
            "api=7,http=7,control=9",
            "CANTILA_HANDOFF: descriptor 7 given twice",
        );
        check_err(
            "api=7,api=8,control=9",
            "CANTILA_HANDOFF: two sockets named api",
        );
        check_err(
            "ftp=7,control=9",
            "CANTILA_HANDOFF: unknown socket \"ftp\" (or given twice)",
        );
        check_err("api", "CANTILA_HANDOFF: \"api\" is not name=fd");
    }
}
