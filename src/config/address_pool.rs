//! `[deploy] network_pool` and `network_prefix_len`: the IPv4 range the subnets of
//! Cantila's networks come from, and the pure subnet arithmetic of choosing the next one.

use ipnet::Ipv4Net;

/// Where network subnets come from: a range of IPv4 addresses cut into subnets of one
/// size. Invariant: `prefix_len` is at least the range's own prefix and at most 28, so the
/// range holds at least one subnet and each subnet has room for a gateway and instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    range: Ipv4Net,
    prefix_len: u8,
}

/// The longest prefix a network may have: a /28 holds 13 containers besides its gateway.
const MAX_PREFIX_LEN: u8 = 28;

impl AddressPool {
    /// The pool `range` (`172.16.0.0/12`) cut into subnets of `prefix_len` bits.
    pub fn new(range: &str, prefix_len: u8) -> Result<Self, String> {
        let range: Ipv4Net = range.trim().parse().map_err(|_| {
            format!("`{range}` is not an IPv4 range in CIDR form; use e.g. 172.16.0.0/12")
        })?;
        if range.addr() != range.network() {
            return Err(format!(
                "`{range}` has bits set past its prefix; use {}",
                range.trunc()
            ));
        }
        if prefix_len < range.prefix_len() || prefix_len > MAX_PREFIX_LEN {
            return Err(format!(
                "the subnet prefix length must be between the range's own ({}) and {MAX_PREFIX_LEN}, got {prefix_len}",
                range.prefix_len()
            ));
        }
        Ok(Self { range, prefix_len })
    }

    /// The first subnet of the pool that overlaps none of `taken`, or `None` when the pool
    /// is used up. First fit keeps Cantila's networks at the start of the range, leaving
    /// the rest to whatever else the host runs.
    pub fn next_free(&self, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
        let mut candidates = self.range.subnets(self.prefix_len).ok()?;
        candidates.find(|candidate| !taken.iter().any(|other| overlaps(candidate, other)))
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in /{}s", self.range, self.prefix_len)
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn the_first_subnet_overlapping_nothing_taken_is_chosen() {
        let pool = AddressPool::new("172.16.0.0/12", 24).unwrap();
        let check = |taken: &[&str], expected: Option<&str>| {
            let taken: Vec<Ipv4Net> = taken.iter().map(|t| net(t)).collect();
            assert_eq!(
                pool.next_free(&taken),
                expected.map(net),
                "taken: {taken:?}"
            );
        };
        check(&[], Some("172.16.0.0/24"));
        check(&["172.16.0.0/24"], Some("172.16.1.0/24"));
        // Docker's default bridge takes a whole /16.
        check(&["172.16.0.0/16"], Some("172.17.0.0/24"));
        check(&["172.16.0.0/16", "172.17.0.0/16"], Some("172.18.0.0/24"));
        // A smaller network inside a candidate takes the whole candidate.
        check(&["172.16.0.128/25"], Some("172.16.1.0/24"));
        check(&["172.16.0.5/32", "172.16.1.0/24"], Some("172.16.2.0/24"));
        // A range that covers the whole pool leaves nothing.
        check(&["172.0.0.0/8"], None);
        // Networks outside the pool change nothing.
        check(&["10.0.0.0/8", "192.168.0.0/16"], Some("172.16.0.0/24"));
    }

    #[test]
    fn a_used_up_pool_has_no_next_subnet() {
        let pool = AddressPool::new("10.99.0.0/26", 28).unwrap();
        let mut taken = Vec::new();
        while let Some(subnet) = pool.next_free(&taken) {
            taken.push(subnet);
        }
        let names: Vec<String> = taken.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "10.99.0.0/28",
                "10.99.0.16/28",
                "10.99.0.32/28",
                "10.99.0.48/28"
            ]
        );
    }

    #[test]
    fn pools_are_validated() {
        assert!(AddressPool::new("172.16.0.0/12", 24).is_ok());
        assert!(AddressPool::new("10.0.0.0/8", 8).is_ok());
        for (range, prefix_len, message) in [
            ("172.16.0.0", 24, "CIDR"),
            ("nonsense/12", 24, "CIDR"),
            ("fd00::/8", 24, "CIDR"),
            ("172.16.0.1/12", 24, "use 172.16.0.0/12"),
            ("172.16.0.0/12", 8, "between the range's own (12) and 28"),
            ("172.16.0.0/12", 29, "between the range's own (12) and 28"),
        ] {
            let err = AddressPool::new(range, prefix_len).unwrap_err();
            assert!(err.contains(message), "{range} /{prefix_len}: {err}");
        }
    }
}
