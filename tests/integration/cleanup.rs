//! The suite's own hygiene: a test that panics still leaves nothing of its installation on
//! the shared engine (containers, images, the intermediate images of a failed build,
//! volumes), because `TestDaemon`'s drop stops the daemon and removes them by label.
//! The classic builder makes the intermediate images (BuildKit keeps a failed build's
//! finished steps in its build cache, which is no image and no leftover), so this test
//! configures it.

use serde_json::json;

use crate::{
    deploys::Repo,
    support::{images_built_with, installation_leftovers, TestDaemon},
};

#[tokio::test]
async fn a_panicking_test_leaves_nothing_of_its_installation_on_the_engine() {
    let marker = format!("cleanup-marker-{}", cantila::ids::random_base62(10));
    let (tell, told) = tokio::sync::oneshot::channel::<String>();
    let step_marker = marker.clone();
    let test = tokio::spawn(async move {
        let daemon =
            TestDaemon::start_with(|c| c.build.builder = cantila::config::BuilderKind::Classic)
                .await;
        let installation = daemon.dir.as_ref().unwrap().installation().to_owned();
        let repo = Repo::busybox("left behind?\n");
        let (project_id, _) = daemon.connected_project("leaky", &repo).await;
        daemon
            .post(
                &format!("/v1/projects/{project_id}/volumes"),
                &daemon.admin_token,
                json!({ "name": "files", "mountPath": "/files" }),
            )
            .await
            .expect(201);
        let deploy = daemon.deploy(&project_id, None).await;
        assert_eq!(deploy["status"], "running", "{deploy}");
        // A build that fails after a step of its own: that step's image carries no label.
        repo.commit(
            &[(
                "Dockerfile",
                &format!(
                    "FROM busybox:latest\nCOPY www /www\nRUN echo {step_marker} > /marker\nRUN exit 3\n"
                ),
            )],
            "a failing build",
        );
        let failed = daemon.deploy(&project_id, None).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert!(
            !images_built_with(&step_marker).is_empty(),
            "the failed build left its intermediate image"
        );
        assert!(!installation_leftovers(&installation).is_empty());
        tell.send(installation).unwrap();
        panic!("a test failing with everything still running");
    });
    let outcome = test.await;
    assert!(outcome.is_err_and(|err| err.is_panic()));
    let installation = told.await.expect("the test got as far as its panic");
    assert_eq!(
        installation_leftovers(&installation),
        Vec::<String>::new(),
        "the panicking test left these on the engine"
    );
    assert_eq!(
        images_built_with(&marker),
        Vec::<String>::new(),
        "the failed build's intermediate image is left"
    );
}
