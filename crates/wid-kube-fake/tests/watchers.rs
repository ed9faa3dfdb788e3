//! The fake against kube-rs's own watcher, the client the agent uses: service accounts listed and
//! watched, and bookmarks that let a dropped watch resume without a re-list.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use wid_kube_fake::{FakeApi, PodFixture};

async fn client(fake: &FakeApi) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// The next event that is not an `InitApply`, within 10 s.
async fn next<K, S>(events: &mut S) -> Event<K>
where
    S: futures_util::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("no watch error")
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> futures_util::stream::BoxStream<'static, T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

fn name<K: kube::Resource>(event: &Event<K>) -> String {
    match event {
        Event::Apply(k) | Event::Delete(k) | Event::InitApply(k) => {
            k.meta().name.clone().unwrap_or_default()
        }
        Event::Init => "<init>".into(),
        Event::InitDone => "<init done>".into(),
    }
}

#[tokio::test]
async fn service_accounts_are_listed_and_watched_per_namespace() {
    let fake = FakeApi::new();
    fake.serve().await.expect("serve");
    fake.put_service_account("team", "first", &[]);
    fake.put_service_account("other", "elsewhere", &[]);
    let api = Api::<ServiceAccount>::namespaced(client(&fake).await, "team");
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    assert_eq!(name(&next(&mut events).await), "<init>");
    assert_eq!(name(&next(&mut events).await), "first");
    assert_eq!(name(&next(&mut events).await), "<init done>");
    fake.put_service_account("other", "not-this-namespace", &[]);
    fake.put_service_account(
        "team",
        "second",
        &[(
            "iam.gke.io/gcp-service-account",
            "a@p.iam.gserviceaccount.com",
        )],
    );
    match next(&mut events).await {
        Event::Apply(sa) => {
            assert_eq!(sa.metadata.name.as_deref(), Some("second"));
            assert_eq!(
                sa.metadata
                    .annotations
                    .and_then(|a| a.get("iam.gke.io/gcp-service-account").cloned())
                    .as_deref(),
                Some("a@p.iam.gserviceaccount.com")
            );
        }
        other => panic!("expected second: {}", name(&other)),
    }
}

#[tokio::test]
async fn a_bookmark_lets_a_dropped_watch_resume_without_a_relist() {
    let fake = FakeApi::new();
    fake.serve().await.expect("serve");
    fake.put_pod(PodFixture::new("team", "p1", "n").ip("10.0.0.1"));
    let api = Api::<Pod>::all(client(&fake).await);
    let config = watcher::Config::default().fields("spec.nodeName=n");
    // Driven all the time, as the agent drives it: the watch is open between the test's reads.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watch = watcher::watcher(api, config).boxed();
    tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut events = tokio_stream_from(rx);
    assert_eq!(name(&next(&mut events).await), "<init>");
    assert_eq!(name(&next(&mut events).await), "p1");
    assert_eq!(name(&next(&mut events).await), "<init done>");
    // Changes the pod watch does not see move the resourceVersion on; a bookmark tells the
    // watcher, and history before it is then forgotten. Without the bookmark the watcher's
    // version would be p1's, now expired: a 410 and a re-list.
    fake.put_pod(PodFixture::new("team", "elsewhere", "other-node").ip("10.0.0.2"));
    fake.put_service_account("team", "sa", &[]);
    let watches_before = fake
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count();
    // Sent again until the open watch has written one (it opens just after the list): written
    // before the watch drops, the watcher reads it before the end of the stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.bookmarks_sent() == 0 {
        assert!(Instant::now() < deadline, "no bookmark reached the watch");
        fake.bookmark();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fake.compact();
    fake.drop_watches();
    // The watcher comes back from its bookmark: no 410, no re-list.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count()
        == watches_before
    {
        assert!(
            Instant::now() < deadline,
            "no new watch: {:?}",
            fake.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.put_pod(PodFixture::new("team", "p3", "n").ip("10.0.0.4"));
    assert_eq!(
        name(&next(&mut events).await),
        "p3",
        "resumed, not re-listed"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .skip(1)
            .any(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=true")),
        "a second list: {:?}",
        fake.requests()
    );
}
