//! The docker module against the real engine: build from a tar context with streamed
//! output, networks with subnets from a pool, run on one, reach the container by its
//! address, stop and remove.

use std::{collections::HashMap, time::Duration};

use cantila::{
    config::AddressPool,
    runtime::{
        docker::Engine, BuildRequest, ContainerSpec, NetworkRemoval, NetworkSpec, RuntimeError,
    },
};

/// A build context tar holding the given files.
pub fn context(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        builder
            .append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

async fn http_get(ip: std::net::IpAddr, port: u16) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let res = client
        .get(format!("http://{ip}:{port}/"))
        .send()
        .await
        .ok()?;
    res.text().await.ok()
}

#[tokio::test]
async fn builds_runs_reaches_and_removes_a_container() {
    let engine = Engine::connect()
        .await
        .expect("a Docker engine (scripts/test.sh starts one)");
    // What it builds and runs carries a test installation's label, so a failure midway
    // leaves nothing behind.
    let installation = crate::support::TestDir::new();
    let (version, api) = engine.version().await.unwrap();
    assert!(!version.is_empty() && !api.is_empty());

    let tag = format!("cantila-test/docker-module:{}", std::process::id());
    let mut lines = Vec::new();
    let image = engine
        .build(
            BuildRequest {
                context_tar: context(&[
                    ("Dockerfile", "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n", 0o644),
                    ("www/index.html", "hello from busybox\n", 0o644),
                ]),
                dockerfile: "Dockerfile".to_owned(),
                tag: tag.clone(),
                labels: HashMap::from([
                    ("cantila.kind".to_owned(), "test".to_owned()),
                    (
                        "cantila.installation".to_owned(),
                        installation.installation().to_owned(),
                    ),
                ]),
                memory_bytes: Some(256 * 1024 * 1024),
                cpus: Some(1.0),
                network: None,
                target: None,
                build_args: HashMap::new(),
                secrets: Vec::new(),
            registry_credentials: Vec::new(),
                builder: cantila::config::BuilderKind::Auto,
            },
            |line| lines.push(line.to_owned()),
        )
        .await
        .expect("build");
    assert!(image.starts_with("sha256:"), "{image}");
    assert!(
        lines.iter().any(|l| l.contains("COPY www /www")),
        "build output streamed: {lines:?}"
    );
    assert_eq!(
        engine.image_id(&tag).await.unwrap().as_deref(),
        Some(image.as_str())
    );

    // Two networks from one pool: created once each, on subnets of their own inside it.
    let pool = AddressPool::new("10.203.0.0/16", 24).unwrap();
    let network_spec = |suffix: &str| NetworkSpec {
        name: format!("cantila-test-net-{}-{suffix}", std::process::id()),
        labels: HashMap::from([("cantila.kind".to_owned(), "test".to_owned())]),
    };
    let (first, second) = (network_spec("a"), network_spec("b"));
    for spec in [&first, &first, &second] {
        engine.ensure_network(spec, &pool).await.unwrap();
    }
    let first_gateway = engine.network_gateway(&first.name).await.unwrap().unwrap();
    let second_gateway = engine.network_gateway(&second.name).await.unwrap().unwrap();
    for gateway in [first_gateway, second_gateway] {
        assert!(
            gateway.to_string().starts_with("10.203."),
            "{gateway} is in the pool"
        );
    }
    assert_ne!(first_gateway, second_gateway);
    let listed = engine.networks(&[("cantila.kind", "test")]).await.unwrap();
    assert_eq!(listed.iter().filter(|n| n.name == first.name).count(), 1);
    let network = first.name.as_str();
    let name = format!("cantila-test-docker-{}", std::process::id());
    let spec = ContainerSpec {
        name: name.clone(),
        image: tag.clone(),
        command: None,
        entrypoint: None,
        env: vec![("GREETING".to_owned(), "hi".to_owned())],
        labels: HashMap::from([
            ("cantila.kind".to_owned(), "test".to_owned()),
            ("cantila.test".to_owned(), name.clone()),
            (
                "cantila.installation".to_owned(),
                installation.installation().to_owned(),
            ),
        ]),
        network: network.to_owned(),
        aliases: Vec::new(),
        memory_bytes: Some(64 * 1024 * 1024),
        cpus: Some(0.5),
        restart: cantila::runtime::RestartPolicy::Always,
        health: None,
        mounts: Vec::new(),
        tty: false,
        stdin: false,
    };
    let status = engine.start(&spec).await.expect("start");
    assert!(status.running);
    let ip = *status
        .addresses
        .get(network)
        .expect("an address on the network");
    let mut body = None;
    for _ in 0..50 {
        body = http_get(ip, 8080).await;
        if body.is_some() {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body.as_deref(), Some("hello from busybox\n"));

    let listed = engine.containers(&[("cantila.test", &name)]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "running");
    assert_eq!(listed[0].addresses.get(network), Some(&ip));
    assert_eq!(
        engine.remove_network(network).await.unwrap(),
        NetworkRemoval::InUse
    );

    engine
        .stop_and_remove(&status.id, Duration::from_secs(2))
        .await
        .unwrap();
    engine
        .stop_and_remove(&status.id, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(engine
        .containers(&[("cantila.test", &name)])
        .await
        .unwrap()
        .is_empty());
    engine.remove_image(&tag).await.unwrap();
    assert_eq!(engine.image_id(&tag).await.unwrap(), None);
    for spec in [&first, &second] {
        assert_eq!(
            engine.remove_network(&spec.name).await.unwrap(),
            NetworkRemoval::Removed
        );
    }
    assert_eq!(
        engine.remove_network(network).await.unwrap(),
        NetworkRemoval::Absent
    );
}

#[tokio::test]
async fn a_broken_dockerfile_fails_with_the_builders_error() {
    let engine = Engine::connect().await.expect("a Docker engine");
    let err = engine
        .build(
            BuildRequest {
                context_tar: context(&[("Dockerfile", "FROM busybox:latest\nRUN exit 3\n", 0o644)]),
                dockerfile: "Dockerfile".to_owned(),
                tag: format!("cantila-test/broken:{}", std::process::id()),
                labels: HashMap::new(),
                memory_bytes: None,
                cpus: None,
                network: None,
                target: None,
                build_args: HashMap::new(),
                secrets: Vec::new(),
                registry_credentials: Vec::new(),
                builder: cantila::config::BuilderKind::Auto,
            },
            |_| {},
        )
        .await
        .expect_err("the build must fail");
    match err {
        RuntimeError::BuildFailed(message) => assert!(
            message.contains("exit") || message.contains("non-zero"),
            "{message}"
        ),
        other => panic!("expected BuildFailed, got {other:?}"),
    }
}

/// A container sampled from its cgroup files (the engine's own host, cgroup v1 or v2)
/// reads what the engine's stats API reports: the same memory within 10%, CPU time of the
/// same order, the same limits; and no stats call is made for it.
#[tokio::test]
async fn a_sample_from_the_cgroup_files_matches_the_engines_stats() {
    let engine = Engine::connect().await.expect("a Docker engine");
    let installation = crate::support::TestDir::new();
    let name = format!("cantila-test-sample-{}", std::process::id());
    // Some CPU time, then 16 MiB held in a tmpfs (charged to the container's memory).
    let script = "dd if=/dev/zero of=/dev/null bs=64k count=20000 2>/dev/null; \
                  head -c 16777216 /dev/zero > /dev/shm/held; echo held; exec sleep 3600";
    let spec = ContainerSpec {
        name: name.clone(),
        image: "busybox:latest".to_owned(),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        entrypoint: None,
        env: Vec::new(),
        labels: HashMap::from([
            ("cantila.kind".to_owned(), "test".to_owned()),
            ("cantila.test".to_owned(), name.clone()),
            (
                "cantila.installation".to_owned(),
                installation.installation().to_owned(),
            ),
        ]),
        network: "bridge".to_owned(),
        aliases: Vec::new(),
        memory_bytes: Some(64 * 1024 * 1024),
        cpus: Some(0.5),
        restart: cantila::runtime::RestartPolicy::No,
        health: None,
        mounts: Vec::new(),
        tty: false,
        stdin: false,
    };
    let status = engine.start(&spec).await.expect("start");
    let id = status.id.clone();
    // The script says when its memory is held.
    let mut held = false;
    for _ in 0..300 {
        if engine
            .tail_logs(&id, 5)
            .await
            .unwrap_or_default()
            .iter()
            .any(|line| line.contains("held"))
        {
            held = true;
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from_files = engine.sample(&id).await.expect("a sample");
    let from_engine = engine
        .sample_from_engine(&id)
        .await
        .expect("the engine's stats");
    engine
        .stop_and_remove(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(held, "the container's script ran");
    assert!(
        engine.sampled_from_kernel(&id),
        "the engine runs on this host, so its cgroup files are read"
    );

    let memory = (
        from_files.memory_working_set_bytes as f64,
        from_engine.memory_working_set_bytes as f64,
    );
    assert!(memory.1 >= 16.0 * 1024.0 * 1024.0, "{from_engine:?}");
    assert!(
        (memory.0 - memory.1).abs() <= memory.1 * 0.1,
        "memory within 10%: {from_files:?} vs {from_engine:?}"
    );
    let cpu = (
        from_files.cpu_total_ns as f64,
        from_engine.cpu_total_ns as f64,
    );
    assert!(
        cpu.1 > 0.0 && cpu.0 > 0.0,
        "{from_files:?} vs {from_engine:?}"
    );
    assert!(
        cpu.0 <= cpu.1 && cpu.0 * 2.0 >= cpu.1,
        "CPU time of the same order, read before the engine's: {from_files:?} vs {from_engine:?}"
    );
    let system = (
        from_files.system_cpu_ns as f64,
        from_engine.system_cpu_ns as f64,
    );
    assert!(
        (system.0 - system.1).abs() <= system.1 * 0.01,
        "the host's CPU time as the engine counts it: {from_files:?} vs {from_engine:?}"
    );
    assert_eq!(
        (
            from_files.memory_limit_bytes,
            from_files.online_cpus,
            from_files.cpu_limit_cores,
            from_files.restart_count
        ),
        (
            from_engine.memory_limit_bytes,
            from_engine.online_cpus,
            from_engine.cpu_limit_cores,
            from_engine.restart_count
        )
    );
    assert!(
        from_files.net_rx_bytes <= from_engine.net_rx_bytes
            && from_files.net_tx_bytes <= from_engine.net_tx_bytes,
        "network counters only grow: {from_files:?} vs {from_engine:?}"
    );
}
