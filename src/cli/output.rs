//! Human output for the CLI: aligned tables from the API's JSON.

use serde_json::Value;

/// Prints rows under headers, each column as wide as its widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A JSON field as table text: strings bare, null as `-`.
pub fn cell(value: &Value, field: &str) -> String {
    match value.get(field) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn print_projects(projects: &[Value]) {
    let rows: Vec<Vec<String>> = projects
        .iter()
        .map(|p| {
            ["id", "name", "status", "runtime", "hostname"]
                .iter()
                .map(|f| cell(p, f))
                .collect()
        })
        .collect();
    print_table(&["ID", "NAME", "STATUS", "RUNTIME", "HOSTNAME"], &rows);
}

pub fn print_tokens(tokens: &Value) {
    let rows: Vec<Vec<String>> = tokens
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            [
                "id",
                "prefix",
                "scope",
                "name",
                "createdAt",
                "lastUsedAt",
                "revokedAt",
            ]
            .iter()
            .map(|f| cell(t, f))
            .collect()
        })
        .collect();
    print_table(
        &[
            "ID",
            "PREFIX",
            "SCOPE",
            "NAME",
            "CREATED",
            "LAST USED",
            "REVOKED",
        ],
        &rows,
    );
}

/// A one-line chart of `values` with the eight block characters, scaled from zero to the
/// largest value (a flat line of zeros stays at the bottom); a missing value is a space.
pub fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|value| match value {
            Some(v) if v.is_finite() => {
                let level = if max > 0.0 {
                    ((v.max(0.0) / max) * (BARS.len() - 1) as f64).round() as usize
                } else {
                    0
                };
                BARS[level.min(BARS.len() - 1)]
            }
            _ => ' ',
        })
        .collect()
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn bytes(value: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scaled = value;
    let mut unit = 0;
    while scaled >= 1024.0 && unit < units.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{scaled:.0} {}", units[0])
    } else {
        format!("{scaled:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest_value_and_show_gaps() {
        assert_eq!(
            sparkline(&[Some(0.0), Some(1.0), None, Some(7.0), Some(3.5)]),
            "▁▂ █▅"
        );
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)]), "▁▁");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn bytes_use_binary_units() {
        for (value, text) in [
            (0.0, "0 B"),
            (1023.0, "1023 B"),
            (1536.0, "1.5 KiB"),
            (20.0 * 1048576.0, "20.0 MiB"),
        ] {
            assert_eq!(bytes(value), text);
        }
    }
}
