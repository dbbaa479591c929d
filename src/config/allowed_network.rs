//! `[git] allowed_networks`: the internal networks the operator lets git fetches reach.

use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;

/// A network the operator allows git fetches to reach although it is loopback, private or
/// otherwise internal, written in CIDR notation (`10.1.2.0/24`, `fd00::/8`, `127.0.0.1/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedNetwork(IpNet);

impl AllowedNetwork {
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address)
    }
}

impl FromStr for AllowedNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<IpNet>()
            .map(|net| AllowedNetwork(net.trunc()))
            .map_err(|_| {
                format!("{text:?} is not a network in CIDR notation, like 10.1.2.0/24 or fd00::/8")
            })
    }
}

impl std::fmt::Display for AllowedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for AllowedNetwork {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
