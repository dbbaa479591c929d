//! Integration tests: each starts the real daemon in-process on 127.0.0.1:0 against a temp
//! data dir (see `support`) and talks HTTP to it, or runs the real `cantila` binary.

mod registry_support;
mod support;

mod api_auth;
mod api_contract;
mod api_projects;
mod api_tokens;
mod architecture;
mod backup_s3;
mod backup_schedule;
mod build_settings;
mod buildkit;
mod cleanup;
mod cli;
mod console;
mod console_terminal;
mod data;
mod deploys;
mod disk_full;
mod docker;
mod edge;
mod edge_containers;
mod engine_restart;
mod git_providers;
mod git_sources;
mod health_checks;
mod hostile;
mod images;
mod jobs;
mod lifecycle;
mod logs;
mod metrics;
mod networks;
mod openapi;
mod previews;
mod private_network;
mod private_repos;
mod runs;
mod secrets_at_rest;
mod services;
mod serving;
mod tenancy;
mod terminal;
mod tls_acme;
mod tls_edge;
