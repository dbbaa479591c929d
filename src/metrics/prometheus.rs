//! The Prometheus text exposition format (version 0.0.4) of the live figures: the edge's
//! cumulative counters and latency histogram per project, and each instance's latest
//! sample. Every family has its HELP and TYPE lines once, before its samples; label
//! values are escaped, so a project's name can never break the format.

use std::fmt::Write;

use crate::edge::{metrics::LATENCY_BUCKET_BOUNDS_US, EdgeMetrics, ProjectMetrics};

use super::InstanceNow;

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A project as labelled in the output.
#[derive(Debug, Clone)]
pub struct ProjectLabels {
    pub id: String,
    pub handle: String,
    pub name: String,
}

/// Renders every family for `projects`: their production edge counters and the samples in
/// `instances` of their production instances (previews are left out: their figures are
/// in `GET /v1/projects/:id/metrics?preview=`).
pub fn render(projects: &[ProjectLabels], edge: &EdgeMetrics, instances: &[InstanceNow]) -> String {
    let mut out = String::with_capacity(4096 + projects.len() * 3000);
    let edges: Vec<_> = projects.iter().map(|p| (p, edge.snapshot(&p.id))).collect();
    let instances: Vec<&InstanceNow> = instances
        .iter()
        .filter(|i| i.preview_id.is_none() && projects.iter().any(|p| p.id == i.project_id))
        .collect();
    project_info(&mut out, projects);
    edge_counters(&mut out, &edges);
    latency_histogram(&mut out, &edges);
    instance_samples(&mut out, &instances);
    out
}

/// A project's production edge counters, as the families below read them.
type ProjectEdge<'a> = (&'a ProjectLabels, ProjectMetrics);

fn project_info(out: &mut String, projects: &[ProjectLabels]) {
    family(
        out,
        "cantila_project_info",
        "gauge",
        "A project of Cantila, with its handle and name; always 1.",
    );
    for project in projects {
        sample(
            out,
            "cantila_project_info",
            &[
                ("project", &project.id),
                ("handle", &project.handle),
                ("name", &project.name),
            ],
            1.0,
        );
    }
}

/// Requests by status class, and body bytes each way.
fn edge_counters(out: &mut String, edges: &[ProjectEdge<'_>]) {
    family(
        out,
        "cantila_http_requests_total",
        "counter",
        "Requests the edge answered for the project, by status class.",
    );
    for (project, metrics) in edges {
        for (class, count) in [
            ("1xx", metrics.status_1xx),
            ("2xx", metrics.status_2xx),
            ("3xx", metrics.status_3xx),
            ("4xx", metrics.status_4xx),
            ("5xx", metrics.status_5xx),
        ] {
            sample(
                out,
                "cantila_http_requests_total",
                &[("project", &project.id), ("class", class)],
                count as f64,
            );
        }
    }
    type Bytes = fn(&ProjectMetrics) -> u64;
    let byte_families: [(&str, &str, Bytes); 2] = [
        (
            "cantila_http_request_bytes_total",
            "Request body bytes the edge received for the project.",
            |m| m.bytes_in,
        ),
        (
            "cantila_http_response_bytes_total",
            "Response body bytes the edge sent for the project.",
            |m| m.bytes_out,
        ),
    ];
    for (name, help, bytes) in byte_families {
        family(out, name, "counter", help);
        for (project, metrics) in edges {
            sample(
                out,
                name,
                &[("project", &project.id)],
                bytes(metrics) as f64,
            );
        }
    }
}

/// The latency histogram: cumulative buckets, the sum and the count.
fn latency_histogram(out: &mut String, edges: &[ProjectEdge<'_>]) {
    let histogram = "cantila_http_request_duration_seconds";
    family(
        out,
        histogram,
        "histogram",
        "Time from a request's arrival at the edge to its response head.",
    );
    for (project, metrics) in edges {
        let mut cumulative = 0u64;
        for (i, count) in metrics.latency_counts.iter().enumerate() {
            cumulative += count;
            let le = match LATENCY_BUCKET_BOUNDS_US.get(i) {
                Some(&micros) => format_value(micros as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            sample(
                out,
                &format!("{histogram}_bucket"),
                &[("project", &project.id), ("le", &le)],
                cumulative as f64,
            );
        }
        sample(
            out,
            &format!("{histogram}_sum"),
            &[("project", &project.id)],
            metrics.latency_total_us as f64 / 1e6,
        );
        sample(
            out,
            &format!("{histogram}_count"),
            &[("project", &project.id)],
            cumulative as f64,
        );
    }
}

/// One instance family: its name, type, help and the figure it reads (`None` leaves the
/// instance out, so an absent gauge is not reported as zero).
type InstanceFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&InstanceNow) -> Option<f64>,
);

const INSTANCE_FAMILIES: [InstanceFamily; 11] = [
    (
        "cantila_instance_cpu_seconds_total",
        "counter",
        "CPU time the instance has used since it started.",
        |i| Some(i.cpu_seconds_total),
    ),
    (
        "cantila_instance_cpu_percent",
        "gauge",
        "CPU used over the last sampling interval, in percent of one core.",
        |i| i.cpu_percent,
    ),
    (
        "cantila_instance_cpu_limit_percent",
        "gauge",
        "CPU used over the last sampling interval, in percent of the instance's CPU limit.",
        |i| i.cpu_limit_percent,
    ),
    (
        "cantila_instance_cpu_limit_cores",
        "gauge",
        "The instance's CPU limit, in cores.",
        |i| i.cpu_limit_cores,
    ),
    (
        "cantila_instance_memory_working_set_bytes",
        "gauge",
        "Memory in use without the page cache, as docker stats shows it.",
        |i| Some(i.memory_bytes as f64),
    ),
    (
        "cantila_instance_memory_limit_bytes",
        "gauge",
        "The instance's memory limit.",
        |i| Some(i.memory_limit_bytes as f64),
    ),
    (
        "cantila_instance_network_receive_bytes_total",
        "counter",
        "Bytes the instance received over the network since it started.",
        |i| Some(i.net_rx_bytes_total as f64),
    ),
    (
        "cantila_instance_network_transmit_bytes_total",
        "counter",
        "Bytes the instance sent over the network since it started.",
        |i| Some(i.net_tx_bytes_total as f64),
    ),
    (
        "cantila_instance_block_read_bytes_total",
        "counter",
        "Bytes the instance read from block devices since it started.",
        |i| Some(i.block_read_bytes_total as f64),
    ),
    (
        "cantila_instance_block_write_bytes_total",
        "counter",
        "Bytes the instance wrote to block devices since it started.",
        |i| Some(i.block_write_bytes_total as f64),
    ),
    (
        "cantila_instance_restarts_total",
        "counter",
        "Times the engine restarted the instance after it exited.",
        |i| Some(i.restart_count as f64),
    ),
];

/// Every instance family, each with one sample per instance that has the figure.
fn instance_samples(out: &mut String, instances: &[&InstanceNow]) {
    for (name, kind, help, field) in INSTANCE_FAMILIES {
        family(out, name, kind, help);
        for instance in instances {
            if let Some(value) = field(instance) {
                let mut labels = vec![
                    ("project", instance.project_id.as_str()),
                    ("instance", instance.instance_id.as_str()),
                ];
                if let Some(service) = &instance.service {
                    labels.push(("service", service.as_str()));
                }
                sample(out, name, &labels, value);
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(value));
}

/// Label values escape backslash, double quote and newline, as the format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Numbers as Go's `strconv.FormatFloat(v, 'g', -1, 64)` would accept them: integers
/// without a fraction, everything else in Rust's shortest round-trip form.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn families_are_declared_once_and_labels_escaped() {
        let edge = EdgeMetrics::new();
        let counters = edge.project("prj_1");
        counters.record_response(200, Duration::from_micros(150));
        counters.record_response(404, Duration::from_secs(20));
        let projects = [ProjectLabels {
            id: "prj_1".into(),
            handle: "acme".into(),
            name: "we\"b\\\n".into(),
        }];
        let instance = InstanceNow {
            project_id: "prj_1".into(),
            instance_id: "abc".into(),
            cpu_percent: Some(12.5),
            memory_bytes: 2048,
            ..InstanceNow::default()
        };
        let stranger = InstanceNow {
            project_id: "prj_other".into(),
            ..instance.clone()
        };
        let text = render(&projects, &edge, &[instance, stranger]);
        assert!(text.contains(r#"name="we\"b\\\n""#), "{text}");
        assert!(text.contains(r#"cantila_http_requests_total{project="prj_1",class="4xx"} 1"#));
        assert!(
            text.contains(
                r#"cantila_http_request_duration_seconds_bucket{project="prj_1",le="0.00025"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"cantila_http_request_duration_seconds_bucket{project="prj_1",le="+Inf"} 2"#
        ));
        assert!(text.contains(r#"cantila_http_request_duration_seconds_count{project="prj_1"} 2"#));
        assert!(
            text.contains(r#"cantila_instance_cpu_percent{project="prj_1",instance="abc"} 12.5"#)
        );
        assert!(!text.contains("prj_other"), "only the projects asked for");
        assert!(
            !text.contains("cantila_instance_cpu_limit_percent{"),
            "absent gauges are left out"
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }

    #[test]
    fn values_format_as_prometheus_reads_them() {
        for (value, text) in [
            (1.0, "1"),
            (0.25, "0.25"),
            (1e-4, "0.0001"),
            (f64::INFINITY, "+Inf"),
            (3e20, "300000000000000000000"),
        ] {
            assert_eq!(format_value(value), text);
        }
    }
}
