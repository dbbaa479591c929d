//! Bridge networks: creating one with a subnet of its own taken from the configured pool
//! (`config::AddressPool`, which does the subnet arithmetic), listing and removing them.
//! Invariant: a network is created with an explicit subnet that overlaps no network the
//! engine has and no route the host has, so Docker's small default pools are never used
//! up and two networks never share addresses.

use std::{collections::HashMap, net::Ipv4Addr};

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use ipnet::Ipv4Net;

use super::Engine;
use crate::{
    config::AddressPool,
    labels::Filter,
    runtime::{NetworkRemoval, NetworkSpec, NetworkSummary, RuntimeError},
};

/// The gateway (the host's address) on a network of `subnet`: its first address, as Docker
/// would choose.
fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The IPv4 destinations the host routes somewhere (`/proc/net/route`), the default route
/// left out. A subnet that overlaps one would shadow or be shadowed by that route.
fn parse_routes(table: &str) -> Vec<Ipv4Net> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = address_of_route_field(fields.get(1)?)?;
            let mask = address_of_route_field(fields.get(7)?)?;
            let prefix_len = u32::from(mask).leading_ones();
            if prefix_len == 0 || u32::from(mask).count_ones() != prefix_len {
                return None;
            }
            Ipv4Net::new(destination, prefix_len as u8)
                .ok()
                .map(|net| net.trunc())
        })
        .collect()
}

/// The kernel prints each address as the hex of its network-order bytes read as a native
/// integer, so the native bytes of the parsed number are the address.
fn address_of_route_field(field: &str) -> Option<Ipv4Addr> {
    let value = u32::from_str_radix(field, 16).ok()?;
    Some(Ipv4Addr::from(value.to_ne_bytes()))
}

/// The host's routes; none when the table cannot be read (not Linux, or a sandbox), since
/// the engine's own networks are still checked.
async fn host_routes() -> Vec<Ipv4Net> {
    match tokio::fs::read_to_string("/proc/net/route").await {
        Ok(table) => parse_routes(&table),
        Err(err) => {
            tracing::debug!(error = %err, "reading the host's routes");
            Vec::new()
        }
    }
}

/// Bounds the attempts when other creators keep taking the chosen subnet first.
const MAX_CREATE_ATTEMPTS: usize = 64;

impl Engine {
    /// Creates the bridge network `spec` names, with the first free subnet of `pool`,
    /// unless a network of that name exists. A subnet another creator took meanwhile (a
    /// second daemon on the same engine) is skipped and the next one tried.
    pub async fn ensure_network(
        &self,
        spec: &NetworkSpec,
        pool: &AddressPool,
    ) -> Result<(), RuntimeError> {
        // API 1.41 creates a second network of an existing name unless asked to check (a
        // field the typed request lacks), so this handle creates one network at a time.
        let _one_at_a_time = self.network_creation.lock().await;
        if self.network_exists(&spec.name).await? {
            return Ok(());
        }
        let mut taken = self.network_subnets().await?;
        taken.extend(host_routes().await);
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let subnet = pool.next_free(&taken).ok_or_else(|| {
                RuntimeError::Engine(format!(
                    "the network pool ({pool}) has no free subnet left; widen [deploy] network_pool"
                ))
            })?;
            let result = self
                .client
                .create_network(NetworkCreateRequest {
                    name: spec.name.clone(),
                    driver: Some("bridge".to_owned()),
                    labels: Some(spec.labels.clone()),
                    ipam: Some(Ipam {
                        driver: Some("default".to_owned()),
                        // Named explicitly: given only a subnet, the engine picks the
                        // first address but does not report it as the gateway.
                        config: Some(vec![IpamConfig {
                            subnet: Some(subnet.to_string()),
                            gateway: Some(gateway_of(subnet).to_string()),
                            ..Default::default()
                        }]),
                        options: None,
                    }),
                    ..Default::default()
                })
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(network = %spec.name, %subnet, "created a network");
                    return Ok(());
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    if message.contains("overlaps") =>
                {
                    tracing::debug!(network = %spec.name, %subnet, "subnet taken meanwhile; trying the next");
                    taken.push(subnet);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(RuntimeError::Engine(format!(
            "could not create network `{}`: every subnet tried was taken meanwhile",
            spec.name
        )))
    }

    async fn network_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// The IPv4 subnets of every network the engine has, Cantila's or not.
    async fn network_subnets(&self) -> Result<Vec<Ipv4Net>, RuntimeError> {
        let networks = self
            .client
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await?;
        Ok(networks
            .into_iter()
            .filter_map(|network| network.ipam?.config)
            .flatten()
            .filter_map(|config| config.subnet?.parse::<Ipv4Net>().ok())
            .map(|net| net.trunc())
            .collect())
    }

    /// Networks the label filter selects: listed by its pairs, then checked for the labels
    /// it wants absent.
    pub async fn networks_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<NetworkSummary>, RuntimeError> {
        let mut found = self.networks(&filter.pairs()).await?;
        found.retain(|network| filter.matches(&network.labels));
        Ok(found)
    }

    /// Networks whose labels match every `key=value` given.
    pub async fn networks(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<NetworkSummary>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        )]);
        let networks = self
            .client
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(filters),
            }))
            .await?;
        Ok(networks
            .into_iter()
            .map(|network| NetworkSummary {
                name: network.name.unwrap_or_default(),
                labels: network.labels.unwrap_or_default(),
            })
            .collect())
    }

    /// Removes a network unless a container is attached to it.
    pub async fn remove_network(&self, name: &str) -> Result<NetworkRemoval, RuntimeError> {
        match self.client.remove_network(name).await {
            Ok(()) => Ok(NetworkRemoval::Removed),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(NetworkRemoval::Absent),
                RuntimeError::Engine(message) if message.contains("active endpoints") => {
                    Ok(NetworkRemoval::InUse)
                }
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn the_gateway_is_the_first_address() {
        assert_eq!(gateway_of(net("172.16.3.0/24")).to_string(), "172.16.3.1");
        assert_eq!(gateway_of(net("10.99.0.16/28")).to_string(), "10.99.0.17");
    }

    /// A route table line as the kernel prints it, from addresses.
    fn route_line(iface: &str, destination: [u8; 4], mask: [u8; 4]) -> String {
        let hex = |octets: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(octets));
        format!(
            "{iface}\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0",
            hex(destination),
            hex(mask)
        )
    }

    #[test]
    fn host_routes_are_read_without_the_default_route() {
        let table = [
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
                .to_owned(),
            route_line("eth0", [0, 0, 0, 0], [0, 0, 0, 0]),
            route_line("docker0", [172, 17, 0, 0], [255, 255, 0, 0]),
            route_line("eth0", [192, 0, 2, 0], [255, 255, 255, 0]),
            route_line("wg0", [10, 8, 0, 1], [255, 255, 255, 255]),
            "garbage line".to_owned(),
        ]
        .join("\n");
        let routes: Vec<String> = parse_routes(&table)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(routes, ["172.17.0.0/16", "192.0.2.0/24", "10.8.0.1/32"]);
    }
}
