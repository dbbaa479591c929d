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
